"""Train a small ViT with DINO on the generated shapes, on one process or several (torchrun + DDP).

One process (CPU or one GPU):
    python -m scripts.train_dino --profile quick
Several processes on one machine (one per GPU, NCCL; or CPU processes with gloo):
    torchrun --standalone --nproc_per_node=4 -m scripts.train_dino --profile full

``--batch-size`` is per process: the global batch is ``batch_size x processes`` and the learning rate is
scaled with it (DINO's linear rule). Every process ends with the same student, teacher and center: the
student's gradients are averaged by DistributedDataParallel, the center is all-reduced, and the teacher is an
EMA of identical students. Rank 0 writes the checkpoint (atomically) and reports the k-NN accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.transforms import v2

from common.datasets import ShapesDataset
from common.dino import MultiCropAugmentation, MultiCropDataset
from common.dino_eval import knn_eval
from common.dino_train import (
    DINO,
    DINOConfig,
    DINOTrainer,
    dino_state,
    init_distributed,
    save_checkpoint,
    train_dino,
)
from common.env import outputs_dir, seed_everything
from common.vit import VisionTransformer

PROFILES = {
    # a smoke run for tests: a few steps of a tiny model
    "tiny": dict(
        n_train=64, n_test=32, epochs=2, batch_size=8, embed_dim=32, depth=2, heads=2, n_local=2, out_dim=128
    ),
    "quick": dict(
        n_train=2000,
        n_test=500,
        epochs=16,
        batch_size=64,
        embed_dim=64,
        depth=4,
        heads=4,
        n_local=4,
        out_dim=1024,
    ),
    "full": dict(
        n_train=20000,
        n_test=2000,
        epochs=100,
        batch_size=256,
        embed_dim=192,
        depth=6,
        heads=3,
        n_local=8,
        out_dim=4096,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--profile", choices=PROFILES, default="quick", help="sizes; the options below override them"
    )
    for name in (
        "n_train",
        "n_test",
        "epochs",
        "batch_size",
        "embed_dim",
        "depth",
        "heads",
        "n_local",
        "out_dim",
    ):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--local-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate for a global batch of 256")
    p.add_argument("--momentum-teacher", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="where rank 0 saves the result (default outputs/checkpoints/dino_<profile>.pt)",
    )
    p.add_argument(
        "--dump-teacher",
        type=Path,
        default=None,
        help="every process also writes its teacher and center to DIR/teacher_rank<r>.pt",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the final k-NN evaluation")
    args = p.parse_args(argv)
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = init_distributed()
    seed_everything(args.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    train = ShapesDataset(args.n_train, args.image_size, seed=args.seed, split="train")
    # crops are standardised per channel (DINO uses ImageNet's statistics; we use the training set's)
    mean, std = train.images.mean((0, 2, 3)).tolist(), train.images.std((0, 2, 3)).tolist()
    aug = MultiCropAugmentation(args.image_size, args.local_size, args.n_local, mean=mean, std=std)
    crops = MultiCropDataset(train, aug)
    sampler = (
        DistributedSampler(crops, world, rank, shuffle=True, seed=args.seed, drop_last=True)
        if world > 1
        else None
    )
    loader = DataLoader(
        crops,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    if len(loader) == 0:
        raise ValueError(f"--n-train {args.n_train} gives no full batch of {args.batch_size} per process.")

    def backbone():
        return VisionTransformer(
            args.image_size, args.patch_size, 3, 0, args.embed_dim, args.depth, args.heads
        )

    config = DINOConfig(
        epochs=args.epochs,
        out_dim=args.out_dim,
        hidden_dim=max(256, 4 * args.embed_dim),
        bottleneck_dim=64 if args.embed_dim < 128 else 256,
        lr=args.lr,
        momentum_teacher=args.momentum_teacher,
        warmup_epochs=min(10, args.epochs // 10),
    )
    dino = DINO(backbone(), args.embed_dim, config)
    torch.manual_seed(args.seed + 1000 * rank)  # different augmentations on each process
    trainer = DINOTrainer(dino, len(loader), args.batch_size, device)
    if rank == 0:
        print(
            f"DINO on {world} process(es), device {device}, {len(loader)} steps/epoch x {args.epochs} epochs, "
            f"global batch {args.batch_size * world}",
            flush=True,
        )
    start = time.perf_counter()
    history = train_dino(trainer, loader, max_steps=args.max_steps, desc=f"DINO rank {rank}")
    seconds = time.perf_counter() - start

    if args.dump_teacher is not None:
        save_checkpoint(
            args.dump_teacher / f"teacher_rank{rank}.pt",
            teacher=dino.teacher.state_dict(),
            center=dino.loss.center,
            step=trainer.step,
        )
    if rank == 0:
        path = args.checkpoint or outputs_dir("checkpoints") / f"dino_{args.profile}.pt"
        state = dino_state(trainer)
        state["backbone"] = {
            "img_size": args.image_size,
            "patch_size": args.patch_size,
            "embed_dim": args.embed_dim,
            "depth": args.depth,
            "num_heads": args.heads,
            "mean": mean,
            "std": std,
        }
        save_checkpoint(path, **state)
        print(
            f"{trainer.step} steps in {seconds:.0f} s; last loss {history.steps['loss'][-1]:.3f}, "
            f"teacher entropy {history.steps['teacher_entropy'][-1]:.2f}; saved {path}",
            flush=True,
        )
        if not args.no_eval:
            test = ShapesDataset(args.n_test, args.image_size, seed=args.seed, split="test")
            normalize = v2.Normalize(mean, std)
            acc = knn_eval(
                dino.teacher_backbone,
                DataLoader(TensorDataset(normalize(train.images), train.labels), batch_size=256),
                DataLoader(TensorDataset(normalize(test.images), test.labels), batch_size=256),
                device,
            )
            print(f"teacher k-NN accuracy (k=20) on {args.n_test} test images: {acc:.3f}", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
