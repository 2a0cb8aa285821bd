"""CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision"), small.

Two encoders map an image and a caption to one shared space: the course's ViT (``common.vit``, ``num_classes=0``:
its CLS feature) and a small Transformer text encoder built from ``common.blocks.TransformerBlock``; a linear
projection each, then L2 normalisation. For a batch of B matched pairs the logits are
``s * I @ T.T`` (cosine similarities times a learnable scale ``s = exp(t) = 1 / temperature``) and the loss is
the symmetric InfoNCE: cross-entropy of each image against the B captions (the right one is the diagonal)
averaged with the same for each caption against the B images.

As in CLIP, ``t`` is stored as a log (``logit_scale``, initialised to ``log(1 / 0.07)``) and the scale is clamped
to at most 100 (``clamp_logit_scale_`` after every optimiser step; the forward pass clamps too).

Public API
----------
- ``TextEncoder(vocab_size, context_length, *, width=64, depth=2, num_heads=4, mlp_ratio=2.0, causal=True,
  pooling="eos", pad_id=0)``: (B, L) token ids -> (B, width).
- ``CLIP(image_encoder, text_encoder, *, embed_dim=64, init_temperature=0.07, max_logit_scale=100,
  learn_temperature=True)`` with ``encode_image``, ``encode_text``, ``forward -> (logits_per_image,
  logits_per_text)``, ``logit_scale_value``, ``clamp_logit_scale_``.
- :func:`clip_loss` (the symmetric InfoNCE), :func:`clip_loss_floor` (the lowest loss a fixed scale allows),
  :func:`multi_positive_clip_loss` (every caption that fits an image counts as its target) and
  :func:`content_loss_floor` (the lowest loss when several captions fit one image), :func:`ensemble_prompts`,
  :func:`class_embeddings`, :func:`encode_images`, :func:`encode_texts`, :func:`recall_at_k`,
  :func:`recall_chance`, :func:`train_clip` -> :class:`CLIPHistory`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from common.attention import causal_mask
from common.blocks import TransformerBlock
from common.positional import LearnedPositionalEmbedding
from common.training import progress, warmup_cosine
from common.vit import VisionTransformer

POOLINGS = ("eos", "mean")
LOSSES = ("info_nce", "multi_positive")
INIT_TEMPERATURE = 0.07  # CLIP's initial temperature: logit scale 1 / 0.07 = 14.3
MAX_LOGIT_SCALE = 100.0  # CLIP clamps the scale here: a temperature below 0.01 made training unstable


# ------------------------------------------------------------------------------------------ text encoder
class TextEncoder(nn.Module):
    """Token embedding + learned positions -> pre-norm Transformer blocks -> LayerNorm -> pooled feature.

    ``causal=True, pooling="eos"`` is CLIP's choice: each token attends only to the tokens before it, and the
    ``<eos>`` token, last in every caption, is the one whose state sees the whole caption, so it is the
    caption's feature. ``causal=False, pooling="mean"`` is the BERT-like alternative (every token sees every
    token; the feature is the mean over real tokens). Padding tokens are masked as keys either way, so a
    caption's feature does not depend on how much padding the batch needed.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        *,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        causal: bool = True,
        pooling: str = "eos",
        pad_id: int = 0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}.")
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}.")
        self.width, self.context_length = width, context_length
        self.causal, self.pooling, self.pad_id = causal, pooling, pad_id
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = LearnedPositionalEmbedding(width, context_length)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, norm="pre") for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) int64 ids (real tokens first, then ``pad_id``) -> (B, width)."""
        B, L = tokens.shape
        real = tokens != self.pad_id  # (B, L)
        if not bool(real[:, 0].all()):
            raise ValueError("every caption needs at least one token before its padding (pad on the right).")
        x = self.pos_embed(self.token_embed(tokens))
        mask = real[:, None, None, :]  # (B, 1, 1, L): any query may attend to real keys only
        if self.causal:
            mask = mask & causal_mask(L, device=tokens.device)[None, None]  # ... and only to earlier ones
        for block in self.blocks:
            x = block(x, mask=mask)
        x = self.norm(x)
        if self.pooling == "eos":  # the last real token: <eos>
            last = real.sum(1) - 1
            return x[torch.arange(B, device=x.device), last]
        weights = real.float()[..., None]
        return (x * weights).sum(1) / weights.sum(1)


# ------------------------------------------------------------------------------------------ CLIP
class CLIP(nn.Module):
    """An image encoder and a text encoder, each projected (no bias) to ``embed_dim`` and L2-normalised."""

    def __init__(
        self,
        image_encoder: VisionTransformer,
        text_encoder: TextEncoder,
        *,
        embed_dim: int = 64,
        init_temperature: float = INIT_TEMPERATURE,
        max_logit_scale: float = MAX_LOGIT_SCALE,
        learn_temperature: bool = True,
    ):
        super().__init__()
        if getattr(image_encoder, "num_classes", 0) != 0:
            raise ValueError(
                "build the image encoder with num_classes=0: CLIP uses its CLS feature, not logits."
            )
        if not (init_temperature > 0 and 1 / init_temperature <= max_logit_scale):
            raise ValueError(f"need 1 / init_temperature <= max_logit_scale = {max_logit_scale}.")
        self.visual, self.text = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.embed_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=image_encoder.embed_dim**-0.5)
        nn.init.normal_(self.text_proj.weight, std=text_encoder.width**-0.5)
        self.max_log_scale = math.log(max_logit_scale)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / init_temperature)), requires_grad=learn_temperature
        )

    @property
    def logit_scale_value(self) -> float:
        """The scale s = 1 / temperature the logits are multiplied by (at most ``max_logit_scale``)."""
        return float(self.logit_scale.detach().clamp(max=self.max_log_scale).exp())

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        self.logit_scale.clamp_(0, self.max_log_scale)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        z = self.image_proj(self.visual(images))
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        z = self.text_proj(self.text(tokens))
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(logits_per_image (B, B), logits_per_text = its transpose): s times the cosine similarities."""
        image, text = self.encode_image(images), self.encode_text(tokens)
        logits = self.logit_scale.clamp(max=self.max_log_scale).exp() * image @ text.T
        return logits, logits.T


def clip_loss(logits_per_image: Tensor) -> Tensor:
    """Symmetric InfoNCE over a (B, B) logit matrix whose diagonal holds the matched pairs:
    ``(CE(rows, diagonal) + CE(columns, diagonal)) / 2`` -- images classify captions and captions images."""
    if logits_per_image.ndim != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(f"need a square (B, B) logit matrix, got {tuple(logits_per_image.shape)}.")
    target = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_image.T, target)) / 2


def _check_positives(logits: Tensor, positives: Tensor) -> None:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1] or positives.shape != logits.shape:
        raise ValueError(
            f"need square (B, B) logits and a (B, B) bool positives matrix, got {tuple(logits.shape)} and "
            f"{tuple(positives.shape)}."
        )
    if positives.dtype != torch.bool or not bool(positives.diagonal().all()):
        raise ValueError("positives must be bool with a True diagonal: caption i always fits image i.")


def multi_positive_clip_loss(logits_per_image: Tensor, positives: Tensor) -> Tensor:
    """Symmetric InfoNCE whose targets know duplicates: ``positives[i, j]`` is True when caption j fits image i
    (the diagonal always). Image i's target is spread evenly over its positives (row i), caption j's over the
    images it fits (column j); each direction is the cross-entropy with that soft target, and the two are
    averaged. With ``positives = eye(B)`` it is :func:`clip_loss`. Its minimum is :func:`content_loss_floor`."""
    _check_positives(logits_per_image, positives)
    pos = positives.to(logits_per_image.dtype)
    rows = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits_per_image, 1)).sum(1).mean()
    cols = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits_per_image, 0)).sum(0).mean()
    return (rows + cols) / 2


def content_loss_floor(positives: Tensor) -> float:
    """The lowest symmetric InfoNCE (plain or multi-positive) for a batch whose ``positives[i, j]`` says caption
    j fits image i, for a model that tells perfectly which captions fit which images but cannot tell apart
    captions that fit the same image: ``(mean_i log(row count) + mean_j log(column count)) / 2``. Logits
    ``s * positives`` reach it as s grows. Exact duplicates alone (``positives`` = same string) give a lower one."""
    if positives.ndim != 2 or positives.shape[0] != positives.shape[1] or positives.dtype != torch.bool:
        raise ValueError(f"need a square (B, B) bool positives matrix, got {tuple(positives.shape)}.")
    if not bool(positives.diagonal().all()):
        raise ValueError("positives must have a True diagonal: caption i always fits image i.")
    counts = positives.double()
    return float((counts.sum(1).log().mean() + counts.sum(0).log().mean()) / 2)


def clip_loss_floor(batch_size: int, scale: float) -> float:
    """The lowest symmetric InfoNCE that logits ``scale * cosine`` allow for ``batch_size`` pairs (embedding
    dimension >= batch_size - 1): matched pairs at cosine 1, the B embeddings at the corners of a regular
    simplex, so every other pair at cosine -1/(B-1) (B unit vectors cannot all be opposite each other).
    Each row's loss is then log(1 + (B-1) exp(-scale * B / (B-1)))."""
    if batch_size < 2 or scale < 0:
        raise ValueError(f"need batch_size >= 2 and scale >= 0, got {batch_size} and {scale}.")
    gap = scale * batch_size / (batch_size - 1)  # s * (1 - (-1/(B-1)))
    return math.log1p((batch_size - 1) * math.exp(-gap))


# ------------------------------------------------------------------------------------------ zero-shot
def ensemble_prompts(text_embeddings: Tensor) -> Tensor:
    """(C, T, D) embeddings of T prompts per class -> (C, D): normalise each prompt's embedding, average over
    the prompts, normalise again (CLIP's prompt ensembling: averaging in the embedding space)."""
    if text_embeddings.ndim != 3:
        raise ValueError(f"need (classes, prompts, dim) embeddings, got {tuple(text_embeddings.shape)}.")
    return F.normalize(F.normalize(text_embeddings, dim=-1).mean(1), dim=-1)


@torch.no_grad()
def encode_texts(model: CLIP, vocab, texts: Sequence[str], device="cpu", batch_size: int = 1000) -> Tensor:
    """(N, D) normalised text embeddings of ``texts`` (``vocab``: a :class:`common.captions.Vocabulary`)."""
    model.eval()
    tokens = vocab.encode(list(texts), model.text.context_length)
    return torch.cat(
        [
            model.encode_text(tokens[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(tokens), batch_size)
        ]
    )


@torch.no_grad()
def encode_images(model: CLIP, images: Tensor, device="cpu", batch_size: int = 500) -> Tensor:
    """(N, D) normalised image embeddings of (standardised) ``images``."""
    model.eval()
    return torch.cat(
        [
            model.encode_image(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def class_embeddings(model: CLIP, vocab, prompts_per_class: Sequence[Sequence[str]], device="cpu") -> Tensor:
    """(C, D): each class's prompts encoded and ensembled (one prompt per class: just its embedding)."""
    counts = {len(p) for p in prompts_per_class}
    if len(counts) != 1:
        raise ValueError("give every class the same number of prompts.")
    flat = [p for prompts in prompts_per_class for p in prompts]
    emb = encode_texts(model, vocab, flat, device)
    return ensemble_prompts(emb.reshape(len(prompts_per_class), counts.pop(), -1))


def recall_at_k(similarity: Tensor, k: int, positives: Tensor | None = None) -> float:
    """Fraction of rows i with a correct column among the row's k most similar columns. Correct: column i (the
    partner; chance k / N), or any column j with ``positives[i, j]`` (every caption that fits the image, say;
    chance :func:`recall_chance`). For image -> text pass image x text similarities; for text -> image, their
    transpose (and the transposed positives)."""
    if similarity.ndim != 2:
        raise ValueError(f"need a (N, M) similarity matrix, got {tuple(similarity.shape)}.")
    if positives is None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError(
                f"without positives the similarity must be square, got {tuple(similarity.shape)}."
            )
        positives = torch.eye(len(similarity), dtype=torch.bool)
    if positives.shape != similarity.shape or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be bool of shape {tuple(similarity.shape)}, got {tuple(positives.shape)}."
        )
    topk = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return float(positives.gather(1, topk.to(positives.device)).any(1).float().mean())


def recall_chance(positives: Tensor, k: int) -> float:
    """Expected recall@k of a random ranking: row i with p_i correct of M columns has a correct one in a random
    top k with probability 1 - C(M - p_i, k) / C(M, k)."""
    if positives.ndim != 2 or positives.dtype != torch.bool:
        raise ValueError(f"need a (N, M) bool positives matrix, got {tuple(positives.shape)}.")
    M = positives.shape[1]
    k = min(k, M)
    miss = [math.comb(M - p, k) / math.comb(M, k) for p in positives.sum(1).tolist()]
    return float(1 - sum(miss) / len(miss))


# ------------------------------------------------------------------------------------------ training
@dataclass
class CLIPHistory:
    """Per-step records (``step``, ``loss``, ``scale``: the logit scale after the step), the wall time, and
    ``evals``: ``(step, metrics)`` from the optional ``evaluate`` callback (its time not counted in ``seconds``)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    seconds: float = 0.0
    evals: list[tuple[int, dict]] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)  # content_loss_floor of each batch (with ``positives``)

    def mean_loss(self, last: int = 20) -> float:
        return float(sum(self.loss[-last:]) / len(self.loss[-last:]))

    def mean_floor(self, last: int = 20) -> float:
        """The content-aware floor over the same last batches as :meth:`mean_loss`."""
        if not self.floor:
            raise ValueError("no floor recorded: pass positives= to train_clip.")
        return float(sum(self.floor[-last:]) / len(self.floor[-last:]))


def train_clip(
    model: CLIP,
    images: Tensor,
    tokens: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.1,
    grad_clip: float | None = 1.0,
    device="cpu",
    seed: int = 0,
    desc: str = "CLIP",
    evaluate: Callable[[CLIP], dict] | None = None,
    eval_every: int = 0,
    loss: str = "info_nce",
    positives: Callable[[Tensor], Tensor] | None = None,
) -> CLIPHistory:
    """Train on matched (image, caption) pairs: shuffled batches, symmetric InfoNCE, the week-4 recipe
    (AdamW, weight decay on weight matrices only, warm-up + cosine, gradient clipping), the logit scale
    clamped after every step. ``seed`` fixes the batch order. ``evaluate(model) -> metrics`` runs every
    ``eval_every`` steps and after the last one (zero-shot accuracy over training, say).

    ``positives(indices) -> (B, B) bool`` (which captions of the batch fit which images; ``indices`` are the
    pairs' positions in ``images``) records each batch's :func:`content_loss_floor` in ``history.floor`` and is
    what ``loss="multi_positive"`` (:func:`multi_positive_clip_loss`) needs; ``loss="info_nce"`` is
    :func:`clip_loss`, which counts only the diagonal as right."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}.")
    if loss == "multi_positive" and positives is None:
        raise ValueError("loss='multi_positive' needs positives=: which captions fit which images.")
    torch.manual_seed(seed)
    loader = DataLoader(
        TensorDataset(images, tokens, torch.arange(len(images))),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    if len(loader) == 0:
        raise ValueError(f"{len(images)} pairs give no full batch of {batch_size}.")
    tables = _embedding_tables(model)  # like biases, norms and the logit scale: no weight decay
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2 and id(p) not in tables]
    rest = [p for p in trained if not (p.ndim >= 2 and id(p) not in tables)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    total = epochs * len(loader)
    scheduler = warmup_cosine(optimizer, max(1, int(warmup_fraction * total)), total)
    history, step, eval_seconds = CLIPHistory(), 0, 0.0
    model.to(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, t, index in progress(loader, desc=desc):
            logits, _ = model(x.to(device), t.to(device))
            fit = positives(index) if positives is not None else None
            if loss == "multi_positive":
                value = multi_positive_clip_loss(logits, fit.to(logits.device))
            else:
                value = clip_loss(logits)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            model.clamp_logit_scale_()
            step += 1
            history.step.append(step)
            history.loss.append(value.item())
            history.scale.append(model.logit_scale_value)
            if fit is not None:
                history.floor.append(content_loss_floor(fit.cpu()))
            if evaluate is not None and ((eval_every and step % eval_every == 0) or step == total):
                t0 = time.perf_counter()
                history.evals.append((step, evaluate(model)))
                model.train()
                eval_seconds += time.perf_counter() - t0
    history.seconds = time.perf_counter() - start - eval_seconds
    return history


def _embedding_tables(model: nn.Module) -> set[int]:
    """Token and position tables and the CLS token are embeddings, not weights (as in ``param_groups``)."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for m in model.modules():
        if isinstance(m, VisionTransformer):
            tables |= {id(m.pos_embed), id(m.cls_token)}
    return tables
