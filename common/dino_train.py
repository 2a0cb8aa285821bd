"""Training DINO: the student/teacher pair, one optimisation step, the loop, several processes.

- :class:`DINOConfig`: every hyper-parameter of the method in one place (defaults follow the reference code
  for ViT-S/16, except the sizes, which suit 32-pixel images, the lengths: epochs, warm-up epochs, and the
  gradient clipping: one global norm, not one per parameter).
- :class:`DINO`: student and teacher (:class:`common.dino.MultiCropWrapper`) and the loss.
- :class:`DINOTrainer`: the optimiser and the schedules; :meth:`DINOTrainer.train_step` is one step.
- :func:`train_dino`: the loop (progress bar, per-step history, optional evaluation callback per epoch).
- :func:`init_distributed`: reads torchrun's environment; NCCL on GPUs, gloo on CPU. With several processes
  the student is wrapped in ``DistributedDataParallel`` (gradients averaged), the center is all-reduced in
  :meth:`common.dino.DINOLoss.update_center`, so every process holds the same student, teacher and center.

DINO's checkpoints are :func:`common.reference_models.dino_checkpoint_state` and
:func:`common.reference_models.dino_from_checkpoint`.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common.dino import DINOHead, DINOLoss, MultiCropWrapper, teacher_temperature_schedule, update_teacher
from common.training import cosine_schedule, param_groups, progress


@dataclass
class DINOConfig:
    """DINO's hyper-parameters. ``lr`` is the base rate for a batch of 256 (scaled linearly, as in DINO).

    One departure from the reference code besides the sizes: ``clip_grad`` bounds the *global* norm of all the
    student's gradients (``torch.nn.utils.clip_grad_norm_``); DINO's ``utils.clip_gradients`` clips each
    parameter's gradient to that norm separately."""

    out_dim: int = 1024  # K, the number of "prototypes" (65536 in the paper)
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    centering: bool | str = True  # "sinkhorn": DINOv2's Sinkhorn-Knopp targets instead of the EMA center
    momentum_teacher: float = 0.996  # cosine-scheduled to 1.0
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 1
    weight_decay: float = 0.04  # cosine-scheduled to weight_decay_end
    weight_decay_end: float = 0.4
    clip_grad: float | None = 3.0
    freeze_last_layer_epochs: int = 1
    epochs: int = 10
    n_global: int = 2

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs}).")
        if self.warmup_teacher_temp_epochs > self.epochs:
            raise ValueError("warmup_teacher_temp_epochs must not exceed epochs.")


@dataclass
class DINOHistory:
    """Per step: loss, teacher_entropy, marginal_entropy, kl, lr, wd, momentum, teacher_temp.
    Per evaluation: epoch, knn."""

    steps: dict[str, list[float]] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "loss",
                "teacher_entropy",
                "marginal_entropy",
                "kl",
                "lr",
                "wd",
                "momentum",
                "teacher_temp",
            )
        }
    )
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


class DINO(nn.Module):
    """Student and teacher (same backbone + head architecture, the teacher gets no gradients) and the loss.

    ``backbone`` must return one feature per image from ``forward``, shape (B, ``embed_dim``), e.g. the CLS
    feature of ``VisionTransformer(num_classes=0, ...)``. The teacher starts as a copy of the student.
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, *, config: DINOConfig):
        super().__init__()
        self.config = config
        c = config
        head = DINOHead(
            embed_dim,
            c.out_dim,
            hidden_dim=c.hidden_dim,
            bottleneck_dim=c.bottleneck_dim,
            n_layers=c.head_layers,
            norm_last_layer=c.norm_last_layer,
        )
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.loss = DINOLoss(
            c.out_dim, student_temp=c.student_temp, center_momentum=c.center_momentum, centering=c.centering
        )

    @property
    def teacher_backbone(self) -> nn.Module:
        return self.teacher.backbone


class DINOTrainer:
    """Owns the optimiser and schedules and runs DINO steps. ``batch_size`` is per process."""

    def __init__(self, dino: DINO, steps_per_epoch: int, *, batch_size: int, device="cpu"):
        self.dino, self.device = dino.to(device), torch.device(device)
        c = dino.config
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        student = dino.student
        if self.world_size > 1:  # the teacher stays local: it is updated identically everywhere by EMA
            ids = [self.device.index] if self.device.type == "cuda" else None
            student = DistributedDataParallel(student, device_ids=ids)
            # DDP broadcast rank 0's student at construction: start every teacher from that same student.
            dino.teacher.load_state_dict(dino.student.state_dict())
        self.student = student
        total = c.epochs * steps_per_epoch
        self.steps_per_epoch, self.total_steps, self.step = steps_per_epoch, total, 0
        lr = c.lr * batch_size * self.world_size / 256
        self.lr = cosine_schedule(lr, c.min_lr, total, c.warmup_epochs * steps_per_epoch)
        self.wd = cosine_schedule(c.weight_decay, c.weight_decay_end, total)
        self.momentum = cosine_schedule(c.momentum_teacher, 1.0, total)
        self.teacher_temp = teacher_temperature_schedule(
            c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs * steps_per_epoch, total
        )
        # weight decay on weight matrices only (DINO's choice); group 0's decay follows the schedule
        self.optimizer = torch.optim.AdamW(param_groups(dino.student, c.weight_decay))

    def train_step(self, crops: list[torch.Tensor]) -> dict[str, float]:
        """One DINO step on a list of crop batches ``[global_1, global_2, local_1, ...]``."""
        if self.step >= self.total_steps:
            raise ValueError(
                f"all {self.total_steps} scheduled steps are done; build a new trainer to go on."
            )
        c, dino, it = self.dino.config, self.dino, self.step
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = float(self.lr[it])  # plain floats: the optimiser state must load weights_only
            if i == 0:  # only the weight matrices are decayed
                group["weight_decay"] = float(self.wd[it])
        crops = [x.to(self.device, non_blocking=True) for x in crops]
        dino.student.train()
        dino.teacher.train()
        with torch.no_grad():
            teacher_out = dino.teacher(crops[: c.n_global])  # the teacher sees the global views only
        student_out = self.student(crops)
        loss = dino.loss(student_out, teacher_out, float(self.teacher_temp[it]), n_global=c.n_global)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DINO loss is {loss.item()} at step {it}; lower the learning rate.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.clip_grad is not None:
            nn.utils.clip_grad_norm_(dino.student.parameters(), c.clip_grad)
        if it < c.freeze_last_layer_epochs * self.steps_per_epoch:  # DINO: keep the last layer fixed early on
            for p in dino.student.head.last_layer.parameters():
                p.grad = None
        self.optimizer.step()
        update_teacher(dino.student, dino.teacher, float(self.momentum[it]))
        self.step += 1
        return {
            "loss": loss.item(),
            **dino.loss.last_stats,
            "lr": float(self.lr[it]),
            "wd": float(self.wd[it]),
            "momentum": float(self.momentum[it]),
            "teacher_temp": float(self.teacher_temp[it]),
        }


def train_dino(
    trainer: DINOTrainer,
    loader: Iterable,
    epochs: int | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_every: int = 1,
    desc: str = "DINO",
    max_steps: int | None = None,
) -> DINOHistory:
    """Run ``epochs`` (default: the config's) over ``loader`` of ``(crops, labels)``; labels are ignored.

    ``eval_fn(teacher_backbone) -> float`` (e.g. k-NN accuracy) runs before training, every ``eval_every``
    epochs and after the last epoch; ``max_steps`` stops early (smoke tests).
    """
    epochs = trainer.dino.config.epochs if epochs is None else epochs
    history = DINOHistory()
    if eval_fn is not None:
        history.evals.append({"epoch": 0, "knn": eval_fn(trainer.dino.teacher_backbone)})
    start = time.perf_counter()
    bar = progress(range(1, epochs + 1), desc=desc, leave=True)
    for epoch in bar:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # DistributedSampler: a new shuffle per epoch
        for crops, *_ in loader:
            stats = trainer.train_step(crops)
            for key, value in stats.items():
                history.steps[key].append(value)
            if max_steps is not None and trainer.step >= max_steps:
                break
        if eval_fn is not None and (epoch % eval_every == 0 or epoch == epochs):
            history.evals.append({"epoch": epoch, "knn": eval_fn(trainer.dino.teacher_backbone)})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                loss=f"{history.steps['loss'][-1]:.3f}", H=f"{history.steps['teacher_entropy'][-1]:.2f}"
            )
        if max_steps is not None and trainer.step >= max_steps:
            break
    history.seconds = time.perf_counter() - start
    return history


# ---------------------------------------------------------------------------------------------------------
# Several processes
# ---------------------------------------------------------------------------------------------------------


def init_distributed() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)`` from torchrun's environment; a single process without it.

    One process per GPU with NCCL when CUDA is present, otherwise gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device
