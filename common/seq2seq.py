"""Sequence-to-sequence models (lab 6.6): the encoder-decoder Transformer and two RNN baselines.

- :class:`CrossAttention` (queries from the decoder, keys and values from the encoder's memory) and
  :class:`DecoderBlock` (causal self-attention, cross-attention, FFN; pre- or post-norm, the same layout as
  ``nn.TransformerDecoderLayer``). The encoder is a stack of :class:`common.blocks.TransformerBlock`.
- :class:`TransformerSeq2Seq`; :class:`RNNSeq2Seq` with ``attention=False`` (every step sees one fixed vector,
  the fixed-size bottleneck) or ``attention=True`` (:class:`AdditiveAttention`, Bahdanau et al. 2015).
- :func:`build_model` (``MODEL_KINDS``): the three models at the lab's sizes.
- Decoding: :func:`greedy_decode`, :func:`beam_search` (any model with ``start`` / ``step``).
- Training: :func:`smoothed_cross_entropy` (label smoothing), :func:`train_seq2seq` (teacher forcing),
  :func:`exact_match`.
- The course checkpoint (``make checkpoints``): :data:`CHECKPOINT_RECIPE` and :func:`models_from_checkpoint`.

Masks follow ``common.attention``: boolean, True where a query MAY attend to a key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from common.blocks import FeedForward, TransformerBlock
from common.dates import CharVocab
from common.positional import SinusoidalPositionalEncoding
from common.training import warmup_cosine

PAD, BOS, EOS = CharVocab.PAD, CharVocab.BOS, CharVocab.EOS


# ------------------------------------------------------------------------------------------ the Transformer
class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` (B, T, dim) over ``memory`` (B, S, dim): Q = x W_q, [K; V] = memory W_kv.

    ``[q.weight; kv.weight]`` is ``nn.MultiheadAttention.in_proj_weight``'s layout, so weights copy over.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}; pick a divisor.")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor | None = None, return_attention: bool = False):
        """``mask`` broadcasts to (B, heads, T, S), e.g. (B, 1, 1, S) from the source lengths."""
        B, T, C = x.shape
        S = memory.shape[1]
        q = self.q(x).reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(memory).reshape(B, S, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if return_attention:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
        out = self.drop(self.proj(out.transpose(1, 2).reshape(B, T, C)))
        return (out, weights) if return_attention else out


class DecoderBlock(nn.Module):
    """One decoder block.

    ``norm="pre"``:  x += SelfAttn(LN1(x), causal);  x += CrossAttn(LN2(x), memory);  x += FFN(LN3(x))
    ``norm="post"`` (2017):  x = LN1(x + SelfAttn(x));  x = LN2(x + CrossAttn(x, memory));  x = LN3(x + FFN(x))
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0, norm="pre"):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"unknown norm position {norm!r}; use 'pre' or 'post'.")
        self.norm_position = norm
        self.self_attn = MultiHeadAttention(dim, num_heads, proj_drop=dropout)
        self.cross_attn = CrossAttention(dim, num_heads, dropout=dropout)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor | None = None, return_attention=False):
        """``x`` (B, T, dim) the shifted target, ``memory`` (B, S, dim); returns x, plus the cross-attention
        weights (B, heads, T, S) if ``return_attention``."""
        causal = causal_mask(x.shape[1], device=x.device)
        if self.norm_position == "pre":
            x = x + self.self_attn(self.norm1(x), mask=causal)
            a = self.cross_attn(self.norm2(x), memory, memory_mask, return_attention=return_attention)
            a, weights = a if return_attention else (a, None)
            x = x + a
            x = x + self.mlp(self.norm3(x))
        else:
            x = self.norm1(x + self.self_attn(x, mask=causal))
            a = self.cross_attn(x, memory, memory_mask, return_attention=return_attention)
            a, weights = a if return_attention else (a, None)
            x = self.norm2(x + a)
            x = self.norm3(x + self.mlp(x))
        return (x, weights) if return_attention else x


def key_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, 1, 1, max_len) boolean: True on real source tokens (broadcasts over heads and queries)."""
    return padding_mask(lengths, max_len).unsqueeze(1)


class TransformerSeq2Seq(nn.Module):
    """Encoder-decoder Transformer (pre-norm): character embeddings + sinusoidal positions, ``enc_layers``
    :class:`~common.blocks.TransformerBlock` with a source padding mask, ``dec_layers`` :class:`DecoderBlock`,
    a final LayerNorm on each side and a linear read-out to the target vocabulary."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        *,
        dim: int = 64,
        num_heads: int = 4,
        enc_layers: int = 2,
        dec_layers: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        max_len: int = 64,
    ):
        super().__init__()
        self.src_embed = nn.Embedding(src_vocab, dim, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, dim, padding_idx=PAD)
        self.pos = SinusoidalPositionalEncoding(dim, max_len=max_len)
        self.encoder = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(dec_layers)
        )
        self.enc_norm, self.dec_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.head = nn.Linear(dim, tgt_vocab)

    def encode(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = key_mask(lengths, src.shape[1])
        h = self.pos(self.src_embed(src))
        for block in self.encoder:
            h = block(h, mask=mask)
        return self.enc_norm(h), mask

    def decode(self, tgt_in: Tensor, memory: Tensor, mask: Tensor, return_attention: bool = False):
        """Logits (B, T, V) for every position of ``tgt_in`` at once (teacher forcing), plus the list of
        cross-attention weights per layer if ``return_attention``."""
        h = self.pos(self.tgt_embed(tgt_in))
        weights = []
        for block in self.decoder:
            if return_attention:
                h, w = block(h, memory, mask, return_attention=True)
                weights.append(w)
            else:
                h = block(h, memory, mask)
        logits = self.head(self.dec_norm(h))
        return (logits, weights) if return_attention else logits

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor, return_attention: bool = False):
        memory, mask = self.encode(src, lengths)
        return self.decode(tgt_in, memory, mask, return_attention=return_attention)

    # the decoding interface (greedy_decode, beam_search): a state of batch-first tensors, one step at a time
    def start(self, src: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        memory, mask = self.encode(src, lengths)
        return {"memory": memory, "mask": mask}

    def step(self, state: dict[str, Tensor], prefix: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Log-probabilities (N, V) of the token after ``prefix`` (N, t). No key-value cache: the prefix is
        re-read each step (outputs are 11 tokens, so this costs little)."""
        logits = self.decode(prefix, state["memory"], state["mask"])[:, -1]
        return logits.log_softmax(-1), state


# ------------------------------------------------------------------------------------------ the RNN baselines
class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): score(s, h_j) = vᵀ tanh(W_s s + W_h h_j), softmax over the source positions."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor, projected_keys: Tensor | None = None):
        """``query`` (B, q), ``keys`` (B, S, k), ``mask`` (B, S) True on real tokens ->
        (context (B, k), weights (B, S)). ``projected_keys`` = ``w_key(keys)``, computed once per sentence."""
        pk = self.w_key(keys) if projected_keys is None else projected_keys
        scores = self.v(torch.tanh(pk + self.w_query(query)[:, None])).squeeze(-1)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return (weights[:, :, None] * keys).sum(1), weights


class RNNSeq2Seq(nn.Module):
    """GRU encoder-decoder. The encoder is a bidirectional GRU over the characters (annotations h_j, 2·hidden).
    At every step the decoder GRU reads [embedding of the previous token; context] and predicts from
    [state; context]. ``attention=False``: the context is one fixed vector, the encoder's two final states,
    for every step (the bottleneck of Cho et al. / Sutskever et al., 2014). ``attention=True``: the context
    is re-read from all annotations at every step with :class:`AdditiveAttention`. Nothing else differs."""

    def __init__(
        self, src_vocab: int, tgt_vocab: int, *, emb: int = 32, hidden: int = 64, attention: bool = True
    ):
        super().__init__()
        self.attention = attention
        self.src_embed = nn.Embedding(src_vocab, emb, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, emb, padding_idx=PAD)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.init = nn.Linear(2 * hidden, hidden)
        self.attn = AdditiveAttention(hidden, 2 * hidden, hidden) if attention else None
        self.cell = nn.GRUCell(emb + 2 * hidden, hidden)
        self.head = nn.Linear(hidden + 2 * hidden, tgt_vocab)

    def start(self, src: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, h_n = self.encoder(packed)  # h_n (2, B, hidden): the forward and backward final states
        keys, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        final = torch.cat([h_n[0], h_n[1]], dim=-1)
        state = {"h": torch.tanh(self.init(final)), "final": final}
        if self.attention:
            mask = torch.arange(src.shape[1], device=src.device) < lengths[:, None].to(src.device)
            state.update(keys=keys, mask=mask, projected=self.attn.w_key(keys))
        return state

    def _advance(
        self, state: dict[str, Tensor], token: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        h = state["h"]
        if self.attention:
            context, weights = self.attn(h, state["keys"], state["mask"], state["projected"])
        else:
            context, weights = state["final"], None
        h = self.cell(torch.cat([self.tgt_embed(token), context], -1), h)
        return self.head(torch.cat([h, context], -1)), {**state, "h": h}, weights

    def forward(self, src: Tensor, lengths: Tensor, tgt_in: Tensor, return_attention: bool = False):
        state = self.start(src, lengths)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):  # teacher forcing: the true previous token at every step
            out, state, w = self._advance(state, tgt_in[:, t])
            logits.append(out)
            weights.append(w)
        logits = torch.stack(logits, 1)
        if return_attention:
            return logits, (torch.stack(weights, 1) if self.attention else None)
        return logits

    def step(self, state: dict[str, Tensor], prefix: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out, state, _ = self._advance(state, prefix[:, -1])
        return out.log_softmax(-1), state


# the three models of lab 6.6, at the sizes the lab and scripts/sweep_seq2seq.py use
MODEL_KINDS = ("transformer", "gru_attention", "gru")


def build_model(kind: str, src_vocab: int, tgt_vocab: int) -> nn.Module:
    """``transformer``: dim 32, 4 heads, 2 + 2 layers, FFN 64. ``gru_attention`` / ``gru``: embeddings 16,
    hidden 32 (bidirectional encoder), with / without additive attention."""
    if kind == "transformer":
        return TransformerSeq2Seq(
            src_vocab, tgt_vocab, dim=32, num_heads=4, enc_layers=2, dec_layers=2, mlp_ratio=2
        )
    if kind in ("gru_attention", "gru"):
        return RNNSeq2Seq(src_vocab, tgt_vocab, emb=16, hidden=32, attention=kind == "gru_attention")
    raise ValueError(f"unknown model kind {kind!r}; use one of {MODEL_KINDS}.")


# ------------------------------------------------------------------------------------------------ decoding
def greedy_decode(model: nn.Module, src: Tensor, lengths: Tensor, *, max_len: int = 11) -> Tensor:
    """The most likely next token at each step: (B, max_len) ids (after EOS: EOS)."""
    state = model.start(src, lengths)
    tokens = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logp, state = model.step(state, tokens)
        nxt = logp.argmax(-1).masked_fill(done, EOS)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return tokens[:, 1:]


def beam_search(
    model: nn.Module, src: Tensor, lengths: Tensor, *, beam_size: int = 4, max_len: int = 11
) -> Tensor:
    """The ``beam_size`` most probable prefixes are kept at every step; returns the most probable finished
    sequence per example, (B, <= max_len) ids. No length penalty (the course's targets all have one length).
    A finished beam is carried on with EOS at no cost, so it competes with the unfinished ones."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    B, K = src.shape[0], beam_size
    state = model.start(src, lengths)
    state = {k: v.repeat_interleave(K, dim=0) for k, v in state.items()}  # (B*K, ...)
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=src.device)
    scores = torch.full((B, K), float("-inf"), device=src.device)
    scores[:, 0] = 0.0  # all beams start identical: keep one, or the top-K would hold K copies
    done = torch.zeros(B * K, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logp, state = model.step(state, tokens)
        V = logp.shape[-1]
        stay = torch.full_like(logp, float("-inf"))
        stay[:, EOS] = 0.0
        logp = torch.where(done[:, None], stay, logp)
        total = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V)
        scores, flat = total.topk(K, dim=-1)
        beam = flat // V + torch.arange(B, device=src.device)[:, None] * K
        beam = beam.view(-1)
        state = {k: v.index_select(0, beam) for k, v in state.items()}
        tokens = torch.cat([tokens.index_select(0, beam), (flat % V).view(-1, 1)], 1)
        done = done.index_select(0, beam) | (tokens[:, -1] == EOS)
        if bool(done.all()):
            break
    best = scores.argmax(-1) + torch.arange(B, device=src.device) * K
    return tokens[best, 1:]


# ------------------------------------------------------------------------------------------------ training
def smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, ignore_index: int = PAD
) -> Tensor:
    """Label smoothing (Szegedy et al. 2016; the 2017 Transformer used 0.1): the target distribution puts
    1 - smoothing on the true token and smoothing / V on every token (the true one included), i.e.
    (1 - ε)·NLL + ε·mean over the vocabulary of -log p. Mean over the tokens that are not ``ignore_index``."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
    logp = logits.reshape(-1, logits.shape[-1]).log_softmax(-1)
    target = target.reshape(-1)
    keep = target != ignore_index
    logp, target = logp[keep], target[keep]
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    return ((1 - smoothing) * nll - smoothing * logp.mean(-1)).mean()


@dataclass
class Seq2SeqRun:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_seq2seq(
    model: nn.Module,
    src: Tensor,
    lengths: Tensor,
    tgt: Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    smoothing: float = 0.1,
    warmup_steps: int | None = None,
    weight_decay: float = 0.01,
    clip: float = 1.0,
) -> Seq2SeqRun:
    """Teacher forcing: the decoder reads BOS + target[:-1] and predicts target[1:]. AdamW, warm-up (10 % of
    the steps unless given) + cosine decay, gradient clipping; batches drawn by a generator seeded with
    ``seed``, each trimmed to its longest source."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}.")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10) if warmup_steps is None else warmup_steps
    sched = warmup_cosine(opt, warmup, steps)
    g = torch.Generator().manual_seed(seed)
    run, t0, order = Seq2SeqRun(), time.perf_counter(), torch.empty(0, dtype=torch.long)
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(src), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        n = int(lengths[idx].max())
        s, ln, y = src[idx, :n].to(device), lengths[idx].to(device), tgt[idx].to(device)
        loss = smoothed_cross_entropy(model(s, ln, y[:, :-1]), y[:, 1:], smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        run.losses.append(loss.item())
    model.eval()
    run.seconds = time.perf_counter() - t0
    return run


@torch.no_grad()
def exact_match(
    model: nn.Module, src: Tensor, lengths: Tensor, tgt: Tensor, *, beam_size: int = 1, batch_size: int = 1024
) -> Tensor:
    """(n,) booleans: the decoded sequence (greedy if ``beam_size == 1``) equals the target up to its EOS."""
    model.eval()
    device = next(model.parameters()).device
    want = tgt[:, 1:]
    hits = []
    for i in range(0, len(src), batch_size):
        s, ln = src[i : i + batch_size], lengths[i : i + batch_size]
        s = s[:, : int(ln.max())].to(device)
        if beam_size == 1:
            pred = greedy_decode(model, s, ln.to(device), max_len=want.shape[1])
        else:
            pred = beam_search(model, s, ln.to(device), beam_size=beam_size, max_len=want.shape[1])
        pred = pred.cpu()
        w = want[i : i + batch_size]
        if pred.shape[1] < w.shape[1]:
            pred = F.pad(pred, (0, w.shape[1] - pred.shape[1]), value=EOS)
        hits.append((pred[:, : w.shape[1]] == w).all(1))
    return torch.cat(hits)


# --------------------------------------------------------------------------------- the course checkpoint
# Lab 6.6's Transformer at 4x the lab's budget (scripts/sweep_seq2seq.md: 600 steps reached 0.998 on
# validation), trained by `make checkpoints` on the lab's own split, one model per seed.
CHECKPOINT_RECIPE = dict(kind="transformer", lr=2e-2, steps=600, batch_size=64, seeds=(0, 1, 2))
CHECKPOINT_DATA = dict(n_train=4000, n_val=500, n_test=1000, seed=0)  # = lab 6.6's date_splits


def models_from_checkpoint(state: dict) -> list[nn.Module]:
    """The models of ``checkpoints/date_transformer.pt`` (one per seed), float32, in eval mode."""
    models = []
    for weights in state["weights"]:
        model = build_model(state["recipe"]["kind"], state["src_vocab"], state["tgt_vocab"])
        model.load_state_dict({k: v.float() for k, v in weights.items()})
        models.append(model.eval())
    return models
