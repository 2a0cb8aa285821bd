"""Learning rates of lab 6.6's three models, chosen on the validation split (never on test).

    python -m scripts.sweep_seq2seq                     # the quick profile's budget, 2 seeds, 1 thread
    python -m scripts.sweep_seq2seq --steps 600 --lrs transformer=2e-2 --seeds 0   # one longer run

Every (model, learning rate, seed) is trained with the notebook's data (``date_splits(SEED=0)``), budget and
recipe (``common.seq2seq.train_seq2seq``); the table gives validation exact match (greedy decoding) and the
process CPU seconds. The results are recorded in scripts/sweep_seq2seq.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from common.dates import SOURCE_VOCAB, TARGET_VOCAB, date_splits
from common.runtime import seed_everything
from common.seq2seq import MODEL_KINDS, build_model, exact_match, train_seq2seq

GRID = {
    "transformer": [5e-3, 1e-2, 2e-2, 4e-2],
    "gru_attention": [5e-3, 1e-2, 2e-2, 4e-2],
    "gru": [5e-3, 1e-2, 2e-2, 4e-2],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODEL_KINDS), choices=MODEL_KINDS)
    p.add_argument("--lrs", nargs="*", default=[], help="model=lr1,lr2 overrides the grid for that model")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    grid = dict(GRID)
    for item in args.lrs:
        name, _, values = item.partition("=")
        if name not in MODEL_KINDS or not values:
            raise SystemExit(f"--lrs takes model=lr1,lr2 with a model among {MODEL_KINDS}, got {item!r}")
        grid[name] = [float(v) for v in values.split(",")]
    splits = date_splits(args.n_train, args.n_val, 1000, seed=0)  # the notebook's split; test is not read
    train, val = splits.train.tensors(), splits.val.tensors()
    print(f"| model | lr | val exact match per seed {args.seeds} | mean | CPU s per run |")
    print("|---|---|---|---|---|")
    for kind in args.models:
        best = None
        for lr in grid[kind]:
            accs, secs = [], []
            for seed in args.seeds:
                seed_everything(seed)
                model = build_model(kind, len(SOURCE_VOCAB), len(TARGET_VOCAB))
                t0 = time.process_time()
                train_seq2seq(model, *train, lr=lr, steps=args.steps, batch_size=args.batch_size, seed=seed)
                secs.append(time.process_time() - t0)
                accs.append(float(exact_match(model, *val).float().mean()))
            mean = sum(accs) / len(accs)
            best = max(best or (mean, lr), (mean, lr))
            print(
                f"| {kind} | {lr:g} | {', '.join(f'{a:.3f}' for a in accs)} | {mean:.3f} | {sum(secs) / len(secs):.1f} |",
                flush=True,
            )
        print(f"| **{kind}: chosen** | **{best[1]:g}** | | {best[0]:.3f} | |", flush=True)


if __name__ == "__main__":
    main()
