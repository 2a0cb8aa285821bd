"""Train the course's reference models and commit-ready checkpoints: ``make checkpoints``.

    python -m scripts.train_checkpoints            # all: the ViT (lab 4.1), DINO and its supervised opponent
                                                   # (4.2), lab 6.6's Transformer at 4x the lab's budget
    python -m scripts.train_checkpoints vit --threads 1

Each model is trained from scratch with the ``course`` sizes of ``common.reference_models`` (the same recipe
the notebooks use) and written to ``checkpoints/<name>.pt`` (fp16 weights), with an entry in
``checkpoints/manifest.json``: sha256, the exact command, seed, the final metrics of the training log,
the training time, date and machine. The notebooks verify the hash and evaluate the weights themselves.
DINO and its supervised opponent are followed on the "val" split while they train; the test split is
evaluated once, on the stored weights, for the manifest.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime

import torch

from common import checkpoints, seq2seq
from common import reference_models as ref
from common.dates import SOURCE_VOCAB, TARGET_VOCAB, date_splits
from common.dino_eval import knn_eval
from common.dino_train import DINOTrainer, train_dino
from common.runtime import seed_everything
from common.training import Recipe, train_classifier

MODELS = ("vit", "dino", "dino_supervised", "date_transformer")


def machine() -> str:
    return (
        f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"
    )


def provenance(seed: int, seconds: float) -> dict:
    return {
        "command": "python -m scripts.train_checkpoints " + shlex.join(sys.argv[1:]),
        "seed": seed,
        "train_seconds": round(seconds),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }


def train_vit(seed: int) -> dict:
    seed_everything(seed)
    sizes = ref.VIT_SIZES["course"]
    train, test, normalize = ref.classification_data(sizes["n_train"], sizes["n_test"], seed)
    model = ref.new_vit()
    start = time.perf_counter()
    history = ref.train_vit(model, train, test, "course", seed=seed, desc="ViT (course)")
    seconds = time.perf_counter() - start
    for r in history.records:
        print(
            f"epoch {r['epoch']:>3}: train acc {r['train_metric']:.3f}, test acc {r['val_metric']:.3f}",
            flush=True,
        )
    path = checkpoints.course_dir() / "vit_shapes.pt"
    checkpoints.save(
        path,
        **checkpoints.vit_state(model, ref.VIT_MODEL),
        mean=normalize.mean,
        std=normalize.std,
        data={"background": ref.VIT_BACKGROUND, **sizes},
    )
    # the metric the notebooks and tests reproduce: the fp16 weights as stored, on the test set
    stored = checkpoints.build_vit(checkpoints.load(path))
    metrics = {
        "test_accuracy": round(ref.accuracy(stored, test), 4),
        "test_accuracy_fp32_last_epoch": round(history.last("val_metric"), 4),
        "train_accuracy_last_epoch": round(history.last("train_metric"), 4),
        "n_test": len(test),
    }
    return checkpoints.record("vit_shapes", path, metrics=metrics, **provenance(seed, seconds))


def train_dino_checkpoint(seed: int, workers: int = 1) -> dict:
    seed_everything(seed)
    data = ref.dino_data("course", seed=seed, workers=workers, eval_split="val")  # followed on val
    dino = ref.new_dino("course")
    random_backbone = ref.new_dino_backbone("course")
    trainer = DINOTrainer(dino, len(data.crops), batch_size=ref.dino_sizes("course")["batch_size"])

    def knn(backbone):
        return knn_eval(backbone, data.bank, data.queries)

    start = time.perf_counter()
    history = train_dino(trainer, data.crops, eval_fn=knn, eval_every=5, desc="DINO (course)")
    seconds = time.perf_counter() - start
    for e in history.evals:
        print(f"epoch {e['epoch']:>3}: teacher k-NN {e['knn']:.3f}", flush=True)
    path = checkpoints.course_dir() / "dino_shapes.pt"
    checkpoints.save(path, **ref.dino_checkpoint_state(dino, "course", data))
    restored = ref.dino_from_checkpoint(checkpoints.load(path))
    metrics = {}
    for split in ("val", "test"):  # the test split once, on the stored weights
        held = (
            data
            if split == "val"
            else ref.dino_data("course", seed=seed, stats=(data.normalize.mean, data.normalize.std))
        )
        tag = "" if split == "test" else "val_"
        for role, backbone in (
            ("teacher", restored.teacher.backbone),
            ("student", restored.student.backbone),
            ("random_init", random_backbone),
        ):
            m = ref.dino_metrics(backbone, held)
            metrics.update({f"{tag}{role}_{k}": round(v, 4) for k, v in m.items()})
        metrics[f"{tag}raw_pixel_knn"] = round(ref.raw_pixel_knn(held), 4)
        metrics.update({f"{tag}{k}": round(v, 4) for k, v in ref.mask_baselines(held).items()})
    metrics["val_knn_per_5_epochs"] = [round(e["knn"], 4) for e in history.evals]
    steps = history.steps
    metrics["final_teacher_entropy"] = round(float(sum(steps["teacher_entropy"][-20:]) / 20), 3)
    metrics["teacher_initial_share"] = ref.momentum_share(steps["momentum"])
    metrics["steps"] = len(steps["loss"])
    return checkpoints.record("dino_shapes", path, metrics=metrics, **provenance(seed, seconds))


def train_dino_supervised(seed: int) -> dict:
    """DINO's backbone with a linear head, trained with labels on DINO's training images (lab 4.2's opponent)."""
    seed_everything(seed)
    train, val, normalize = ref.dino_supervised_data(seed, split="val")
    model = ref.new_dino_supervised()
    recipe = Recipe(**ref.DINO_SUPERVISED)
    start = time.perf_counter()
    history = train_classifier(model, train, val, recipe, seed=seed, desc="supervised (DINO's data)")
    seconds = time.perf_counter() - start
    for r in history.records:
        print(
            f"epoch {r['epoch']:>3}: train acc {r['train_metric']:.3f}, val acc {r['val_metric']:.3f}",
            flush=True,
        )
    path = checkpoints.course_dir() / "dino_supervised.pt"
    checkpoints.save(
        path,
        **checkpoints.vit_state(model, {**ref.DINO_BACKBONE, "num_classes": model.num_classes}),
        mean=normalize.mean,
        std=normalize.std,
        data={**ref.DINO_DATA, "n_train": len(train)},
    )
    stored = checkpoints.build_vit(checkpoints.load(path))
    _, test, _ = ref.dino_supervised_data(
        seed, split="test", stats=(normalize.mean, normalize.std), n_train=64
    )
    metrics = {
        "val_accuracy_per_epoch": [round(r["val_metric"], 4) for r in history.records],
        "val_accuracy": round(ref.accuracy(stored, val), 4),
        "test_accuracy": round(ref.accuracy(stored, test), 4),
        "train_accuracy_last_epoch": round(history.last("train_metric"), 4),
        "epochs": recipe.epochs,
    }
    return checkpoints.record("dino_supervised", path, metrics=metrics, **provenance(seed, seconds))


def train_date_transformer(seed: int) -> dict:
    """Lab 6.6's Transformer, one model per seed of ``CHECKPOINT_RECIPE``, on the lab's split; validation exact
    match per seed (the schedule's length was chosen on it, ``scripts/sweep_seq2seq.md``), the test split once."""
    recipe, data = seq2seq.CHECKPOINT_RECIPE, seq2seq.CHECKPOINT_DATA
    splits = date_splits(data["n_train"], data["n_val"], data["n_test"], seed=data["seed"])
    train, val, test = splits.train.tensors(), splits.val.tensors(), splits.test.tensors()
    weights, losses, start = [], [], time.perf_counter()
    for s in recipe["seeds"]:
        seed_everything(seed + s)
        model = seq2seq.build_model(recipe["kind"], len(SOURCE_VOCAB), len(TARGET_VOCAB))
        run = seq2seq.train_seq2seq(
            model,
            *train,
            lr=recipe["lr"],
            steps=recipe["steps"],
            batch_size=recipe["batch_size"],
            seed=seed + s,
        )
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        losses.append(round(run.losses[-1], 4))
        print(f"seed {seed + s}: final loss {run.losses[-1]:.3f} ({run.seconds:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    path = checkpoints.course_dir() / "date_transformer.pt"
    checkpoints.save(
        path,
        weights=weights,
        recipe={**recipe, "seeds": [seed + s for s in recipe["seeds"]]},
        data=data,
        src_vocab=len(SOURCE_VOCAB),
        tgt_vocab=len(TARGET_VOCAB),
    )
    stored = seq2seq.models_from_checkpoint(checkpoints.load(path))
    metrics = {
        "val_exact_match": [round(float(seq2seq.exact_match(m, *val).float().mean()), 4) for m in stored],
        "test_exact_match": [round(float(seq2seq.exact_match(m, *test).float().mean()), 4) for m in stored],
        "final_loss": losses,
        "steps": recipe["steps"],
    }
    return checkpoints.record("date_transformer", path, metrics=metrics, **provenance(seed, seconds))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", choices=MODELS, default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that make DINO's multi-crop views (default 1: the augmentation runs beside the training)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        if name == "vit":
            entry = train_vit(args.seed)
        elif name == "dino":
            entry = train_dino_checkpoint(args.seed, args.workers)
        elif name == "dino_supervised":
            entry = train_dino_supervised(args.seed)
        else:
            entry = train_date_transformer(args.seed)
        print(
            f"{name}: {entry['metrics']} in {entry['train_seconds']} s -> checkpoints/{entry['file']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
