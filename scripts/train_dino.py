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

from common import checkpoints
from common import reference_models as ref
from common.course import outputs_dir
from common.dino_eval import knn_eval
from common.dino_train import DINOTrainer, init_distributed, train_dino
from common.runtime import seed_everything

SIZES = ("n_train", "n_test", "epochs", "batch_size", "n_local", "out_dim")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--profile", choices=ref.DINO_SIZES, default="quick", help="sizes; the options below override them"
    )
    for name in SIZES:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate for a global batch of 256")
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
    for key, value in ref.dino_sizes(args.profile).items():
        if key in SIZES and getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = init_distributed()
    seed_everything(args.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    sizes = {k: getattr(args, k) for k in SIZES}
    data = ref.dino_data(
        args.profile, seed=args.seed, workers=args.num_workers, rank=rank, world=world, **sizes
    )
    dino = ref.new_dino(args.profile, epochs=args.epochs, out_dim=args.out_dim, lr=args.lr)
    torch.manual_seed(args.seed + 1000 * rank)  # different augmentations on each process
    trainer = DINOTrainer(dino, len(data.crops), batch_size=args.batch_size, device=device)
    if rank == 0:
        print(
            f"DINO on {world} process(es), device {device}, {len(data.crops)} steps/epoch x {args.epochs} epochs, "
            f"global batch {args.batch_size * world}",
            flush=True,
        )
    start = time.perf_counter()
    history = train_dino(trainer, data.crops, max_steps=args.max_steps, desc=f"DINO rank {rank}")
    seconds = time.perf_counter() - start

    if args.dump_teacher is not None:
        checkpoints.save(
            args.dump_teacher / f"teacher_rank{rank}.pt",
            teacher=dino.teacher.state_dict(),
            center=dino.loss.center,
            step=trainer.step,
        )
    if rank == 0:
        path = args.checkpoint or outputs_dir("checkpoints") / f"dino_{args.profile}.pt"
        # the course's one DINO format: ref.dino_from_checkpoint rebuilds it
        checkpoints.save(path, **ref.dino_checkpoint_state(dino, args.profile, data), step=trainer.step)
        print(
            f"{trainer.step} steps in {seconds:.0f} s; last loss {history.steps['loss'][-1]:.3f}, "
            f"teacher entropy {history.steps['teacher_entropy'][-1]:.2f}; saved {path}",
            flush=True,
        )
        if not args.no_eval:
            acc = knn_eval(dino.teacher_backbone, data.bank, data.queries, device)
            print(f"teacher k-NN accuracy (k=20) on {args.n_test} test images: {acc:.3f}", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
