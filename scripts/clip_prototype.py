"""Lab 4.4's sizing runs (table: scripts/clip_sizing.md): a small CLIP and a supervised ViT on the same budget.

python -m scripts.clip_prototype --n-train 4000 --epochs 3 [--width 64 --depth 3 ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from common.captions import (
    COLOURS,
    SHAPES,
    TEMPLATES,
    caption_vocabulary,
    captioned_shapes,
    context_length,
    prompts,
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
from common.training import Recipe, train_classifier
from common.vit import VisionTransformer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--text-width", type=int, default=64)
    ap.add_argument("--text-depth", type=int, default=1)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pooling", default="eos")
    ap.add_argument("--bidirectional", action="store_true")
    ap.add_argument("--fixed-scale", type=float, default=None)
    ap.add_argument("--supervised", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    train = captioned_shapes(a.n_train, "train", seed=a.seed)
    test = captioned_shapes(a.n_test, "test", seed=a.seed)
    print(f"data {time.perf_counter() - t0:.1f} s")
    vocab = caption_vocabulary()
    L = context_length()
    norm = standardizer(train.images)
    xtr, xte = norm(train.images), norm(test.images)
    ttr = vocab.encode(train.captions, L)
    torch.manual_seed(a.seed)
    vit = dict(img_size=32, patch_size=8, embed_dim=a.width, depth=a.depth, num_heads=a.heads, mlp_ratio=2.0)
    model = CLIP(
        VisionTransformer(num_classes=0, **vit),
        TextEncoder(
            len(vocab),
            L,
            width=a.text_width,
            depth=a.text_depth,
            num_heads=4,
            causal=not a.bidirectional,
            pooling=a.pooling,
        ),
        embed_dim=a.embed,
        init_temperature=0.07 if a.fixed_scale is None else 1 / a.fixed_scale,
        learn_temperature=a.fixed_scale is None,
    )
    h = train_clip(model, xtr, ttr, epochs=a.epochs, batch_size=a.batch, lr=a.lr, seed=a.seed)
    print(f"clip {h.seconds:.1f} s, {len(h.step)} steps, loss {h.mean_loss():.3f}, scale {h.scale[-1]:.1f}")
    img = encode_images(model, xte)
    for tpl in ("a {colour} {shape}", "ensemble"):
        tpls = TEMPLATES[:1] if tpl != "ensemble" else [t for t in TEMPLATES if "{where}" not in t]
        shape_w = class_embeddings(model, vocab, [[p for t in tpls for p in prompts(t, [s])] for s in SHAPES])
        col_w = class_embeddings(
            model, vocab, [[p for t in tpls for p in prompts(t, SHAPES, [c])] for c in COLOURS]
        )
        sa = (img @ shape_w.T).argmax(1) == test.shapes
        ca = (img @ col_w.T).argmax(1) == test.colours
        seen = test.seen
        print(
            f"{tpl}: shape {sa.float().mean():.3f} (seen {sa[seen].float().mean():.3f}, unseen "
            f"{sa[~seen].float().mean():.3f}) colour {ca.float().mean():.3f} (unseen {ca[~seen].float().mean():.3f})"
        )
    # joint 36-way
    joint = encode_texts(model, vocab, prompts("a {colour} {shape}"))
    pred = (img @ joint.T).argmax(1)
    js, jc = pred // len(COLOURS), pred % len(COLOURS)
    both = (js == test.shapes) & (jc == test.colours)
    print(
        f"joint: both {both.float().mean():.3f} seen {both[test.seen].float().mean():.3f} unseen {both[~test.seen].float().mean():.3f}"
    )
    n = 500
    sim = img[:n] @ encode_texts(model, vocab, test.captions[:n]).T
    print(
        f"R@1 i2t {recall_at_k(sim, 1):.3f} t2i {recall_at_k(sim.T, 1):.3f}  R@5 {recall_at_k(sim, 5):.3f} {recall_at_k(sim.T, 5):.3f} chance5 {5 / n:.3f}"
    )
    if a.supervised:
        torch.manual_seed(a.seed)
        sup = VisionTransformer(num_classes=6, **vit)
        t1 = time.perf_counter()
        hist = train_classifier(
            sup,
            torch.utils.data.TensorDataset(xtr, train.shapes),
            torch.utils.data.TensorDataset(xte, test.shapes),
            Recipe(epochs=a.epochs, batch_size=a.batch, lr=a.lr),
            seed=a.seed,
        )
        print(
            f"supervised {time.perf_counter() - t1:.1f} s acc {hist.last('val_metric'):.3f} {hist['val_metric']}"
        )


if __name__ == "__main__":
    main()
