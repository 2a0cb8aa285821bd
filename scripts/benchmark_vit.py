"""Training-step throughput of our VisionTransformer against timm's, same config, same run.

    .venv/bin/python -m scripts.benchmark_vit                  # CPU, lab 4.1's ViT (common.reference_models.VIT_MODEL)
    .venv/bin/python -m scripts.benchmark_vit --device cuda --img-size 224 --patch-size 16 \\
        --embed-dim 384 --depth 12 --heads 6 --batch 64       # ViT-S/16 on a GPU

Both models get the same weights; a step is forward + cross-entropy + backward + AdamW step.
Measurements alternate between the two models (several rounds) so that a busy machine slows both
alike; the ratio printed is ours / timm (images per second), the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
import torch.utils.benchmark as torch_benchmark
from timm.models.vision_transformer import VisionTransformer as TimmViT

from common.reference_models import VIT_MODEL, VIT_SIZES
from common.runtime import get_device, seed_everything
from common.timm_interop import load_timm_weights
from common.vit import VisionTransformer


def train_step_timer(model, images, labels, device) -> torch_benchmark.Timer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, optimizer state, kernel selection
    return torch_benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    # defaults: the course's ViT and the quick profile's batch
    parser.add_argument("--img-size", type=int, default=VIT_MODEL["img_size"])
    parser.add_argument("--patch-size", type=int, default=VIT_MODEL["patch_size"])
    parser.add_argument("--embed-dim", type=int, default=VIT_MODEL["embed_dim"])
    parser.add_argument("--depth", type=int, default=VIT_MODEL["depth"])
    parser.add_argument("--heads", type=int, default=VIT_MODEL["num_heads"])
    parser.add_argument("--mlp-ratio", type=float, default=VIT_MODEL["mlp_ratio"])
    parser.add_argument("--batch", type=int, default=VIT_SIZES["quick"]["batch_size"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args(argv)

    seed_everything(0)
    device = get_device(args.device)
    config = dict(
        img_size=args.img_size,
        patch_size=args.patch_size,
        num_classes=VIT_MODEL["num_classes"],
        embed_dim=args.embed_dim,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
    )
    timm_model = TimmViT(**config).to(device).train()
    ours = load_timm_weights(VisionTransformer(**config), timm_model.state_dict()).to(device).train()
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    labels = torch.randint(0, config["num_classes"], (args.batch,), device=device)
    timers = {
        "ours": train_step_timer(ours, images, labels, device),
        "timm": train_step_timer(timm_model, images, labels, device),
    }

    rates = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            rates[name].append(args.batch / timer.blocked_autorange(min_run_time=args.min_run_time).median)
    ratios = [o / t for o, t in zip(rates["ours"], rates["timm"])]
    ratio = statistics.median(ratios)
    print(f"config: {config}, batch {args.batch}, device {device}, threads {torch.get_num_threads()}")
    for name, r in rates.items():
        print(
            f"{name:>5}: {statistics.median(r):8.1f} images/s (training steps; median of {args.rounds} rounds)"
        )
    print(f"ratio ours/timm: {ratio:.3f} (per round: {', '.join(f'{x:.3f}' for x in ratios)})")
    return ratio


if __name__ == "__main__":
    main()
