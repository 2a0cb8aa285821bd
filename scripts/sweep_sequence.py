"""The learning-rate sweep behind lab 6.5: each model's learning rate, chosen on the validation split.

For each task of the lab (the sine waves of §3 and the marked-value recall of §4), each model (Transformer, RNN,
LSTM) and each learning rate of ``LRS``, train with the lab's recipe and quick-profile budget (Adam, warm-up +
cosine, ``common.sequence_models``) for the sweep seeds, and record the *validation* score (sine: MSE, lower is
better; recall: accuracy, higher is better, ties broken by the lower validation loss). The test split is never
read. The sweep seeds (100, 101) differ from the lab's seeds (0, 1, 2), so the lab's test numbers are not from
the runs that chose the rate.

    python -m scripts.sweep_sequence                 # both tasks, about 2 min on an idle 2-core CPU
    python -m scripts.sweep_sequence --task recall --threads 1

The table (and the rates lab 6.5 uses) is ``scripts/sweep_sequence.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common.recall import recall_splits
from common.runtime import seed_everything
from common.sequence_models import SEQUENCE_MODELS, build_sequence_model, train_recall, train_regressor
from common.sine_waves import sine_wave_splits

LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SEEDS = (100, 101)
# lab 6.5's quick profile (keep in step with the notebook's cfg)
SINE = dict(n_train=1024, n_val=256, n_test=1024, seq_len=20, epochs=20, batch_size=64)
RECALL = dict(n_train=1024, n_val=512, n_test=2048, seq_len=32, n_symbols=8, epochs=10, batch_size=64)


def sweep(task: str, models=SEQUENCE_MODELS) -> dict:
    """{(model, lr): [validation score per seed]}, printed as it goes."""
    if task == "sine":
        splits = sine_wave_splits(
            SINE["n_train"], SINE["n_val"], SINE["n_test"], seq_len=SINE["seq_len"], seed=0
        )
    else:
        splits = recall_splits(
            RECALL["n_train"],
            RECALL["n_val"],
            RECALL["n_test"],
            seq_len=RECALL["seq_len"],
            n_symbols=RECALL["n_symbols"],
            seed=0,
        )
    scores = {}
    for name in models:
        for lr in LRS:
            vals = []
            for seed in SEEDS:
                seed_everything(seed)
                start = time.perf_counter()
                if task == "sine":
                    run = train_regressor(
                        build_sequence_model(name),
                        splits,
                        epochs=SINE["epochs"],
                        batch_size=SINE["batch_size"],
                        lr=lr,
                        seed=seed,
                    )
                    vals.append((run.history.last("val_loss"), 0.0))
                else:
                    model = build_sequence_model(name, in_features=2, out_features=RECALL["n_symbols"])
                    run = train_recall(
                        model,
                        splits,
                        epochs=RECALL["epochs"],
                        batch_size=RECALL["batch_size"],
                        lr=lr,
                        seed=seed,
                    )
                    vals.append((run.history.last("val_metric"), run.history.last("val_loss")))
                print(
                    f"{task} {name:<11} lr {lr:.0e} seed {seed}: val {vals[-1][0]:.5f} "
                    f"({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
            scores[name, lr] = vals
    return scores


def best_lr(scores: dict, name: str, task: str) -> float:
    def key(lr):
        score = np.mean([v for v, _ in scores[name, lr]])
        loss = np.mean([v for _, v in scores[name, lr]])
        return (score,) if task == "sine" else (-score, loss)

    return min(LRS, key=key)


def table(scores: dict, task: str, models=SEQUENCE_MODELS) -> str:
    unit = "validation MSE (mean of 2 seeds)" if task == "sine" else "validation accuracy (mean of 2 seeds)"
    lines = [
        f"| {task}: {unit} | " + " | ".join(f"{lr:.0e}" for lr in LRS) + " | chosen |",
        "|---" * (len(LRS) + 2) + "|",
    ]
    for name in models:
        best = best_lr(scores, name, task)
        cells = [
            (
                f"**{np.mean([v for v, _ in scores[name, lr]]):.5f}**"
                if lr == best
                else f"{np.mean([v for v, _ in scores[name, lr]]):.5f}"
            )
            for lr in LRS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best:.0e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["sine", "recall", "both"], default="both")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", choices=SEQUENCE_MODELS, default=list(SEQUENCE_MODELS))
    parser.add_argument("--lrs", nargs="+", type=float, default=None, help="replace the grid LRS")
    args = parser.parse_args()
    global LRS
    LRS = tuple(args.lrs) if args.lrs else LRS
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for task in ["sine", "recall"] if args.task == "both" else [args.task]:
        scores = sweep(task, args.models)
        print("\n" + table(scores, task, args.models) + "\n", flush=True)
    print(f"sweep took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
