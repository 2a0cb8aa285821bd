"""DINO, the pieces of the method (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Multi-crop augmentation, the projection head, the multi-crop wrapper, the loss with centering and sharpening,
the EMA teacher and the teacher-temperature schedule (the cosine schedules of the learning rate, weight decay
and momentum are :func:`common.training.cosine_schedule`). Names and defaults follow the reference code
(facebookresearch/dino) so a reader can put the two side by side; sizes are smaller because our images are
small, and the default is 6 local crops, not 8.
Training lives in :mod:`common.dino_train`, evaluation (k-NN, attention masks) in :mod:`common.dino_eval`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from torchvision.transforms import v2

# ---------------------------------------------------------------------------------------------------------
# Multi-crop augmentation
# ---------------------------------------------------------------------------------------------------------


def _blur(size: int, p: float) -> v2.Transform:
    # DINO blurs 224-pixel crops with sigma in [0.1, 2]; scale sigma with the crop so small crops keep detail.
    sigma_max = max(0.2, 2.0 * size / 224)
    kernel = max(3, int(size * 0.1) // 2 * 2 + 1)
    return v2.RandomApply([v2.GaussianBlur(kernel_size=kernel, sigma=(0.1, sigma_max))], p=p)


class MultiCropAugmentation:
    """``image -> [global_1, global_2, local_1, ..., local_n]`` (DINO's ``DataAugmentationDINO``).

    Two global crops cover ``global_scale`` of the image and are resized to ``global_size``; ``n_local``
    local crops cover ``local_scale`` and are resized to ``local_size``. Every crop is randomly flipped,
    colour-jittered, greyed and blurred (the first global crop is always blurred); the second global crop is
    sometimes solarised. Works on float tensors in [0, 1] of shape (C, H, W) (our datasets' format);
    ``mean``/``std`` normalise at the end if given.
    """

    def __init__(
        self,
        global_size: int = 32,
        local_size: int = 16,
        *,
        n_local: int = 6,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale: float = 0.2,
    ):
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}.")
        if local_size > global_size:
            raise ValueError(f"local_size ({local_size}) must not exceed global_size ({global_size}).")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}.")
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        flip_and_colour = [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(*jitter)], p=0.8),  # brightness, contrast, saturation, hue
            v2.RandomGrayscale(p=grayscale),
        ]
        finish = [v2.Normalize(mean, std)] if mean is not None and std is not None else []

        def crop(size, scale):  # bicubic resizing overshoots [0, 1]: clamp before the colour operations
            resize = v2.RandomResizedCrop(
                size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            )
            return v2.Compose([resize, v2.Lambda(_clamp01)])

        self.global_1 = v2.Compose(
            [
                crop(global_size, global_scale),
                *flip_and_colour,
                _blur(global_size, 1.0),
                *finish,
            ]
        )
        self.global_2 = v2.Compose(
            [
                crop(global_size, global_scale),
                *flip_and_colour,
                _blur(global_size, 0.1),
                v2.RandomSolarize(threshold=0.5, p=0.2),
                *finish,
            ]
        )
        self.local = v2.Compose(
            [
                crop(local_size, local_scale),
                *flip_and_colour,
                _blur(local_size, 0.5),
                *finish,
            ]
        )

    @property
    def n_crops(self) -> int:
        return 2 + self.n_local

    def __call__(self, image: Tensor) -> list[Tensor]:
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError("MultiCropAugmentation expects one (C, H, W) float tensor in [0, 1].")
        return [self.global_1(image), self.global_2(image)] + [self.local(image) for _ in range(self.n_local)]


def _clamp01(x: Tensor) -> Tensor:
    # adjust_hue turns a pixel whose largest channel is 0 and others negative into NaN (a NaN loss, seen
    # after a few hundred DINO steps); solarize and the colour operations also assume [0, 1]
    return x.clamp(0.0, 1.0)


class MultiCropDataset(torch.utils.data.Dataset):
    """Wraps a dataset of ``(image, label, ...)`` into ``(crops, label)``; the label is never used for training,
    only carried along for evaluation and plots."""

    def __init__(self, dataset, augmentation: MultiCropAugmentation):
        self.dataset, self.augmentation = dataset, augmentation

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label, *_ = self.dataset[index]
        return self.augmentation(image), label


# ---------------------------------------------------------------------------------------------------------
# Head and multi-crop wrapper
# ---------------------------------------------------------------------------------------------------------


class DINOHead(nn.Module):
    """MLP (``n_layers`` linear layers, GELU between, the last to ``bottleneck_dim``) -> L2 normalise ->
    weight-normalised linear layer to ``out_dim``.

    The last layer's weight is ``g * v / ||v||`` (torch's weight-norm parametrisation); with
    ``norm_last_layer=True`` the gain ``g`` is fixed at 1, so every output unit is a unit vector: the
    reference code's choice for stability.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
        if n_layers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(n_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad = not norm_last_layer

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops: crops of the same size run through the backbone in one batch.

    ``backbone(x)`` must return one feature vector per image, shape (B, D) (the ViT's CLS token).
    The output stacks the crops in order: rows ``[i*B, (i+1)*B)`` belong to crop ``i``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[Tensor] | Tensor) -> Tensor:
        if isinstance(crops, Tensor):
            crops = [crops]
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        features, start = [], 0
        for end in ends:
            features.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(features))


# ---------------------------------------------------------------------------------------------------------
# The loss: centering, sharpening, cross-view pairing
# ---------------------------------------------------------------------------------------------------------


class DINOLoss(nn.Module):
    r"""Cross-entropy between the centred, sharpened teacher and the student, over pairs of different views.

    .. math::
        P_t = \mathrm{softmax}((g_t - c)/\tau_t), \quad \log P_s = \mathrm{log\_softmax}(g_s/\tau_s), \quad
        L = \frac{1}{|\mathcal{P}|}\sum_{(i, j) \in \mathcal{P}} \frac{1}{B}\sum_b -P_t^{(i)} \cdot \log P_s^{(j)}

    where ``i`` runs over the teacher's global views, ``j`` over all student views with ``j != i``.
    After each call the center is updated with the teacher's batch mean (all processes averaged):
    :math:`c \leftarrow m\,c + (1-m)\,\frac{1}{B}\sum_b g_t^{(b)}`.

    ``centering=False`` turns the center off (ablation); ``centering="sinkhorn"`` replaces the EMA center by
    DINOv2's Sinkhorn–Knopp normalisation of the teacher's batch (:func:`sinkhorn_knopp`). ``last_stats`` holds the collapse diagnostics of the
    last call (:func:`collapse_stats`): the teacher's mean entropy :math:`H(P_t)`, the entropy of its batch
    mean :math:`H(\bar P_t)`, and the mean :math:`KL(P_t \| P_s)` over the pairs.
    """

    def __init__(
        self,
        out_dim: int,
        *,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: bool | str = True,
    ):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}.")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}.")
        if not 0 <= center_momentum < 1:
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum}.")
        self.student_temp, self.center_momentum, self.centering = student_temp, center_momentum, centering
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_stats: dict[str, float] = {}

    def teacher_probs(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_out, teacher_temp)
        centred = teacher_out - self.center if self.centering else teacher_out
        return F.softmax(centred / teacher_temp, dim=-1)

    def forward(
        self, student_out: Tensor, teacher_out: Tensor, teacher_temp: float, n_global: int = 2
    ) -> Tensor:
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}.")
        if teacher_out.shape[0] % n_global or student_out.shape[0] % (teacher_out.shape[0] // n_global):
            raise ValueError(
                f"teacher rows ({teacher_out.shape[0]}) must be n_global ({n_global}) x batch, "
                f"student rows ({student_out.shape[0]}) n_crops x batch."
            )
        batch = teacher_out.shape[0] // n_global
        n_crops = student_out.shape[0] // batch
        student_log = F.log_softmax(student_out / self.student_temp, dim=-1).chunk(n_crops)
        teacher = self.teacher_probs(teacher_out, teacher_temp).detach().chunk(n_global)
        total, kl, n_terms = 0.0, 0.0, 0
        for i, p_t in enumerate(teacher):
            log_p_t = torch.log(p_t.clamp_min(1e-12))
            for j, log_p_s in enumerate(student_log):
                if j == i:  # the same view seen by both networks: no loss (nothing to predict)
                    continue
                total = total + torch.sum(-p_t * log_p_s, dim=-1).mean()
                kl = kl + torch.sum(p_t * (log_p_t - log_p_s.detach()), dim=-1).mean()
                n_terms += 1
        if n_terms == 0:
            raise ValueError(
                "no pair of different views: give the student at least one crop besides the teacher's."
            )
        with torch.no_grad():  # the diagnostics, read from the device once per call (one host sync)
            stats = collapse_stats(torch.cat(teacher))
            self.last_stats = dict(
                zip(
                    ("teacher_entropy", "marginal_entropy", "kl"),
                    torch.stack([stats["entropy"], stats["marginal_entropy"], kl / n_terms]).tolist(),
                )
            )
        self.update_center(teacher_out)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        batch_center = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)  # every process ends with the same center
            dist.all_reduce(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


CENTERINGS = (
    True,
    False,
    "sinkhorn",
)  # True: DINO's EMA center; False: none (ablation); DINOv2's Sinkhorn-Knopp


@torch.no_grad()
def sinkhorn_knopp(teacher_out: Tensor, teacher_temp: float, n_iterations: int = 3) -> Tensor:
    r"""DINOv2's teacher targets (Oquab et al., 2023; ``sinkhorn_knopp_teacher`` in facebookresearch/dinov2).

    :math:`Q = \exp(g_t/\tau_t)` over the batch (B, K) is alternately rescaled so that every prototype gets
    the same total weight 1/K and every image 1/B (``n_iterations`` rounds, 3 as in DINOv2), then each row is
    returned as a distribution. Instead of a running center, the *current* batch is spread evenly over the
    prototypes: no dimension can dominate. Several processes normalise over the global batch.
    """
    if teacher_temp <= 0 or n_iterations < 1:
        raise ValueError(f"need teacher_temp > 0 and n_iterations >= 1, got {teacher_temp}, {n_iterations}.")
    logits = teacher_out.float() / teacher_temp
    q = torch.exp(logits - logits.max()).t()  # (K, B); one global shift cancels in the normalisations
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    k, b = q.shape[0], q.shape[1] * world
    total = q.sum()
    if distributed:
        dist.all_reduce(total)
    q = q / total
    for _ in range(n_iterations):
        rows = q.sum(dim=1, keepdim=True)  # per prototype
        if distributed:
            dist.all_reduce(rows)
        q = q / rows / k
        q = q / q.sum(dim=0, keepdim=True) / b  # per image (all of its mass is local)
    return (q * b).t()


def center_update(center: Tensor, teacher_out: Tensor, momentum: float = 0.9) -> Tensor:
    """The new center :math:`m\\,c + (1-m)\\,\\frac1B\\sum_b g_t^{(b)}` from one process's teacher outputs (B, K),
    as a new tensor (:meth:`DINOLoss.update_center` does the same in place, averaged over all processes)."""
    return momentum * center + (1 - momentum) * teacher_out.mean(dim=0, keepdim=True)


def collapse_stats(probs: Tensor) -> dict[str, Tensor]:
    r"""What tells DINO's two collapses apart, from the teacher's probabilities ``probs`` (B, K).

    - ``entropy``: the mean per-image entropy :math:`\frac1B\sum_b H(P_t^{(b)})`;
    - ``marginal_entropy``: the entropy of the batch mean, :math:`H(\frac1B\sum_b P_t^{(b)})`.

    Healthy: each image is sharp (low ``entropy``) but images use different dimensions (high
    ``marginal_entropy``). **One-dimension collapse**: every image puts its mass on the same dimension, both are
    near 0. **Uniform collapse**: every image is spread evenly, both are near :math:`\log K`.
    """
    log_p = torch.log(probs.clamp_min(1e-12))
    mean = probs.mean(0)
    return {
        "entropy": -(probs * log_p).sum(-1).mean(),
        "marginal_entropy": -(mean * torch.log(mean.clamp_min(1e-12))).sum(),
    }


# ---------------------------------------------------------------------------------------------------------
# EMA teacher and schedules
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """EMA step, every parameter: :math:`\\theta_t \\leftarrow m\\,\\theta_t + (1-m)\\,\\theta_s`."""
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
    s_params, t_params = list(student.parameters()), list(teacher.parameters())
    if len(s_params) != len(t_params):
        raise ValueError("student and teacher must have the same architecture.")
    for t, s in zip(t_params, s_params):
        t.lerp_(s.detach(), 1 - momentum)  # t + (1 - m)(s - t) = m t + (1 - m) s


def teacher_temperature_schedule(
    warmup_temp: float, temp: float, warmup_steps: int, total_steps: int
) -> np.ndarray:
    """Teacher temperature per step: linear ``warmup_temp -> temp`` over ``warmup_steps`` (both ends included,
    as in DINO), then constant (DINO warms it up from 0.04 because a too-sharp teacher early on makes training
    unstable)."""
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}.")
    if warmup_temp <= 0 or temp <= 0:
        raise ValueError("temperatures must be > 0.")
    return np.concatenate(
        [np.linspace(warmup_temp, temp, warmup_steps), np.full(total_steps - warmup_steps, temp)]
    )
