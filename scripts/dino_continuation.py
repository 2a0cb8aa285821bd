"""Lab 4.2's section-7 continuation of the course DINO checkpoint, with paired seeds, on the validation split.

    python -m scripts.dino_continuation --centering ema sinkhorn --seeds 0 1 2      # about 8 minutes, 1 thread

Each run continues ``checkpoints/dino_shapes.pt`` for ``--steps`` steps (``reference_models.continue_dino``, as
the lab's ablations do) with the EMA center or DINOv2's Sinkhorn-Knopp targets, then measures the teacher's k-NN
on the quick profile's validation images (never the test split). Seed s gives both settings the same crops and
data order, so the per-seed differences are compared (``common.statistics.paired_difference``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import checkpoints
from common import reference_models as ref
from common.dino_eval import knn_eval
from common.statistics import paired_difference

CENTERING = {"ema": True, "sinkhorn": "sinkhorn"}


def continue_checkpoint(state: dict, data: ref.DINOData, centering, seed: int, steps: int) -> dict:
    run, hist = ref.continue_dino(
        state, data.crops, steps, seed=seed, centering=centering, desc=f"{centering} seed {seed}"
    )
    return {
        "knn": knn_eval(run.teacher.backbone, data.bank, data.queries),
        "marginal": float(np.mean(hist.steps["marginal_entropy"][-5:])),
        "seconds": hist.seconds,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--centering", nargs="+", choices=sorted(CENTERING), default=["ema", "sinkhorn"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    state, entry = checkpoints.load_course_checkpoint("dino_shapes")
    print(f"checkpoint {entry['file']} ({entry['sha256'][:12]}), data {state['data']}; split: val")
    # the checkpoint's own images (data seed 0) for every run: a seed changes the crops and their order only
    data = ref.dino_data("quick", seed=entry["seed"], eval_split="val", stats=(state["mean"], state["std"]))
    results = {}
    for name in a.centering:
        for seed in a.seeds:
            r = continue_checkpoint(state, data, CENTERING[name], seed, a.steps)
            results.setdefault(name, []).append(r)
            print(
                f"{name:<9} seed {seed}: val k-NN {r['knn']:.3f}, batch-mean entropy {r['marginal']:.2f} "
                f"({r['seconds']:.0f} s)",
                flush=True,
            )
    if len(results) == 2 and len(a.seeds) > 1:
        first, second = a.centering
        diff = paired_difference([r["knn"] for r in results[second]], [r["knn"] for r in results[first]])
        print(f"paired_difference({second}, {first}) on val k-NN: {diff}")


if __name__ == "__main__":
    main()
