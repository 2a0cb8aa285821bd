"""Lab 4.4's sizing runs (table: scripts/clip_sizing.md): a small CLIP and a supervised ViT on the same budget,
trained on the training split and measured on the **validation** split (the test split is the notebook's, once).

python -m scripts.clip_prototype --epochs 16 --lr 3e-3 --loss info_nce multi_positive --seeds 0 1 2 [--supervised]

One line per run (loss, seed): zero-shot shape and colour with the 36 joint prompts ensembled over the training
templates and over the held-out templates (phrasings the generator never writes), shape on held-out colour-shape
pairs, image->text recall@5 (own caption / any fitting caption), the final loss beside its content-aware floor.
With several seeds and two losses, the paired per-seed differences (``common.statistics.paired_difference``).
"""

from __future__ import annotations

import argparse
import time

import torch

from common.captions import (
    COLOURS,
    HELD_OUT_TEMPLATES,
    TEMPLATES,
    caption_vocabulary,
    captioned_shapes,
    context_length,
    pair_prompts,
)
from common.clip import (
    CLIP,
    TextEncoder,
    class_embeddings,
    encode_images,
    encode_texts,
    recall_at_k,
    train_clip,
)
from common.reference_models import standardizer
from common.statistics import paired_difference
from common.training import Recipe, train_classifier
from common.vit import VisionTransformer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--text-width", type=int, default=64)
    ap.add_argument("--text-depth", type=int, default=1)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--loss", nargs="+", default=["info_nce"], choices=["info_nce", "multi_positive"])
    ap.add_argument("--bidirectional", action="store_true", help="no causal mask, mean pooling (BERT-like)")
    ap.add_argument("--supervised", action="store_true")
    ap.add_argument("--no-clip", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    vocab, L = caption_vocabulary(), context_length()
    vit = dict(img_size=32, patch_size=8, embed_dim=a.width, depth=a.depth, num_heads=a.heads, mlp_ratio=2.0)
    results: dict[str, list[dict]] = {}
    for seed in a.seeds:
        train = captioned_shapes(a.n_train, "train", seed=seed)
        val = captioned_shapes(a.n_val, "val", seed=seed)
        norm = standardizer(train.images)
        xtr, xva = norm(train.images), norm(val.images)
        ttr = vocab.encode(train.captions, L)
        for loss in [] if a.no_clip else a.loss:
            torch.manual_seed(seed)
            model = CLIP(
                VisionTransformer(num_classes=0, **vit),
                TextEncoder(
                    len(vocab),
                    L,
                    width=a.text_width,
                    depth=a.text_depth,
                    num_heads=4,
                    causal=not a.bidirectional,
                    pooling="mean" if a.bidirectional else "eos",
                ),
                embed_dim=a.embed,
            )
            h = train_clip(
                model,
                xtr,
                ttr,
                epochs=a.epochs,
                batch_size=a.batch,
                lr=a.lr,
                seed=seed,
                loss=loss,
                positives=train.fit,
            )
            img = encode_images(model, xva)
            r = {"seconds": h.seconds, "loss": h.mean_loss(), "floor": h.mean_floor(), "scale": h.scale[-1]}
            for name, tpls in (("train", TEMPLATES), ("heldout", HELD_OUT_TEMPLATES)):
                pred = (img @ class_embeddings(model, vocab, pair_prompts(tpls)).T).argmax(1)
                shape = pred // len(COLOURS) == val.shapes
                r[f"shape_{name}"] = float(shape.float().mean())
                r[f"shape_unseen_{name}"] = float(shape[~val.seen].float().mean())
                r[f"colour_{name}"] = float((pred % len(COLOURS) == val.colours).float().mean())
            n = min(500, len(val))
            sim = img[:n] @ encode_texts(model, vocab, val.captions[:n]).T
            r["r5_own"] = recall_at_k(sim, 5)
            r["r5_fit"] = recall_at_k(sim, 5, val.fit(torch.arange(n)))
            results.setdefault(loss, []).append(r)
            print(f"seed {seed} {loss}: " + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        if a.supervised:
            torch.manual_seed(seed)
            sup = VisionTransformer(num_classes=6, **vit)
            t1 = time.perf_counter()
            hist = train_classifier(
                sup,
                torch.utils.data.TensorDataset(xtr, train.shapes),
                torch.utils.data.TensorDataset(xva, val.shapes),
                Recipe(epochs=a.epochs, batch_size=a.batch, lr=a.lr),
                seed=seed,
            )
            per_epoch = " ".join(f"{v:.2f}" for v in hist["val_metric"])
            print(
                f"seed {seed} supervised: {time.perf_counter() - t1:.1f} s, val acc {hist.last('val_metric'):.3f} "
                f"({per_epoch})",
                flush=True,
            )
    if len(results) == 2 and len(a.seeds) > 1:
        plain, multi = results["info_nce"], results["multi_positive"]
        for key in plain[0]:
            diff = paired_difference([m[key] for m in multi], [p[key] for p in plain])
            print(f"multi_positive - info_nce, {key}: {diff}")


if __name__ == "__main__":
    main()
