"""The transformer encoder block: multi-head self-attention + residual + LayerNorm + feed-forward.

Module names follow timm's ``Block``/``Mlp`` (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
so that a ViT built from these blocks loads timm weights unchanged.

Public API
----------
- :class:`FeedForward`, :class:`TransformerBlock` (``norm="pre" | "post"``, ``residual``, ``activation``).
- Small functions that are also reference solutions of lab 6.4's exercises: :func:`layer_norm`,
  :func:`post_norm_forward`, :func:`rms_norm`, :func:`pre_norm_block_forward`; and :func:`ffn_as_one_linear` (an FFN without its activation is
  one linear map).
- The exercises' self-checks (each raises AssertionError with a hint): :func:`check_layer_norm`,
  :func:`check_post_norm_forward`, :func:`check_rms_norm`, :func:`check_pre_norm_block_forward`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.attention import MultiHeadAttention, multi_head_attention

# "identity" removes the non-linearity: only to measure what it is for (lab 6.4)
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "identity": nn.Identity}
NORM_POSITIONS = ("pre", "post")


class FeedForward(nn.Module):
    """Position-wise FFN: Linear(dim -> hidden) -> activation -> dropout -> Linear(hidden -> dim) -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, *, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}.")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACTIVATIONS[activation]()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """One encoder block.

    ``norm="pre"`` (ViT, GPT-2):  x = x + Attn(LN(x));  x = x + FFN(LN(x))
    ``norm="post"`` (original 2017 Transformer):  x = LN(x + Attn(x));  x = LN(x + FFN(x))
    ``residual=False`` drops the skip connections (only to measure what they are for).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        norm: str = "pre",
        residual: bool = True,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if norm not in NORM_POSITIONS:
            raise ValueError(f"unknown norm position {norm!r}; use 'pre' or 'post'.")
        self.norm_position = norm
        self.residual = residual
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_dropout, proj_drop=dropout
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), activation=activation, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False):
        r = 1.0 if self.residual else 0.0  # r * x is the skip path
        if self.norm_position == "pre":
            a = self.attn(self.norm1(x), mask=mask, return_attention=return_attention)
            a, weights = a if return_attention else (a, None)
            x = r * x + a
            x = r * x + self.mlp(self.norm2(x))
        else:
            a = self.attn(x, mask=mask, return_attention=return_attention)
            a, weights = a if return_attention else (a, None)
            x = self.norm1(r * x + a)
            x = self.norm2(r * x + self.mlp(x))
        return (x, weights) if return_attention else x


# ------------------------------------------------------------------------------ small reference functions
def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dimension written out: (x - mean) / sqrt(biased variance + eps) * gamma + beta."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / (var + eps).sqrt() * gamma + beta


def rms_norm(x: Tensor, gamma: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm (Zhang & Sennrich, 2019) over the last dimension: gamma * x / sqrt(mean(x²) + eps); no mean
    subtraction, no shift."""
    return x / (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt() * gamma


def post_norm_forward(block: TransformerBlock, x: Tensor) -> Tensor:
    """The post-norm forward pass from a block's parts, whatever the block's own ``norm``:
    x = LN1(x + Attn(x)); x = LN2(x + FFN(x))."""
    x = block.norm1(x + block.attn(x))
    return block.norm2(x + block.mlp(x))


def pre_norm_block_forward(block: TransformerBlock, x: Tensor) -> Tensor:
    """Lab 6.4, exercise 4: a pre-norm block's forward pass from its *parameters* only, with
    :func:`common.attention.multi_head_attention` for the attention (``qkv`` is already in its layout):
    h = x + Attn(LN1(x)); out = h + W2 GELU(W1 LN2(h) + b1) + b2."""
    ln1 = F.layer_norm(x, x.shape[-1:], block.norm1.weight, block.norm1.bias, block.norm1.eps)
    a = multi_head_attention(
        ln1,
        block.attn.qkv.weight,
        block.attn.qkv.bias,
        block.attn.proj.weight,
        block.attn.proj.bias,
        block.attn.num_heads,
    )
    h = x + a
    ln2 = F.layer_norm(h, h.shape[-1:], block.norm2.weight, block.norm2.bias, block.norm2.eps)
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    return h + F.linear(F.gelu(F.linear(ln2, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)


def ffn_as_one_linear(ffn: FeedForward) -> nn.Linear:
    """The one linear layer that equals ``ffn`` when its activation is the identity (and dropout is off):
    fc2(fc1(x)) = x W1ᵀ W2ᵀ + (W2 b1 + b2), a (dim -> dim) map however wide the hidden layer is."""
    one = nn.Linear(ffn.fc1.in_features, ffn.fc2.out_features)
    with torch.no_grad():
        one.weight.copy_(ffn.fc2.weight @ ffn.fc1.weight)
        one.bias.copy_(ffn.fc2.weight @ ffn.fc1.bias + ffn.fc2.bias)
    return one


# ------------------------------------------------------------------------------------------ exercise checks
def _tensor_like(got: object, shape: tuple[int, ...]) -> Tensor:
    assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, (
        f"the output should have the input's shape {shape}, got {tuple(got.shape)}"
    )
    return got.detach()


def check_layer_norm(fn: Callable[..., Tensor]) -> None:
    """Lab 6.4, exercise 1: ``fn(x, gamma, beta, eps)`` must equal ``torch.nn.functional.layer_norm`` over the
    last dimension. The input includes a nearly constant token, where eps decides the result."""
    g = torch.Generator().manual_seed(0)
    x = 2 + 5 * torch.randn(3, 7, 16, generator=g)
    x[0, 0] = 1.0 + 1e-3 * torch.randn(16, generator=g)  # variance 1e-6 < eps: eps must sit inside the sqrt
    gamma, beta = torch.randn(16, generator=g), torch.randn(16, generator=g)
    got = _tensor_like(fn(x.clone(), gamma, beta, eps=1e-5), (3, 7, 16))
    want = F.layer_norm(x, (16,), gamma, beta, eps=1e-5)
    if torch.allclose(got, want, atol=1e-4):
        return
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    slips = {
        "use the biased variance (divide by d, unbiased=False), as LayerNorm does": (x - mean)
        / (x.var(-1, keepdim=True) + 1e-5).sqrt()
        * gamma
        + beta,
        "eps belongs inside the square root: sqrt(var + eps), not std + eps": (x - mean)
        / (var.sqrt() + 1e-5)
        * gamma
        + beta,
        "gamma and beta are missing: scale by gamma and shift by beta after normalising": (x - mean)
        / (var + 1e-5).sqrt(),
    }
    for message, wrong in slips.items():
        if torch.allclose(got, wrong, atol=1e-4):
            raise AssertionError(message)
    mean_last = (got - beta) / gamma
    if not torch.allclose(mean_last.mean(-1), torch.zeros(3, 7), atol=1e-3):
        raise AssertionError(
            "normalise over the last dimension (the features of one token), not over the batch or the positions"
        )
    raise AssertionError(
        "differs from F.layer_norm: (x - mean) / sqrt(var + eps) * gamma + beta over the last dim"
    )


def check_post_norm_forward(fn: Callable[[TransformerBlock, Tensor], Tensor]) -> None:
    """Lab 6.4, exercise 2: ``fn(block, x)`` must be the post-norm forward pass built from the block's parts.
    The block handed over is a *pre-norm* block; the answer is compared with a post-norm block of the same
    weights, so calling ``block(x)`` itself does not pass."""
    torch.manual_seed(1)
    block = TransformerBlock(16, 2, norm="pre").eval()
    with torch.no_grad():  # two different LayerNorms, so that swapping them shows
        for norm in (block.norm1, block.norm2):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    post = TransformerBlock(16, 2, norm="post").eval()
    post.load_state_dict(block.state_dict())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        got = _tensor_like(fn(block, x.clone()), (2, 5, 16))
        if torch.allclose(got, post(x), atol=1e-5):
            return
        if torch.allclose(got, block(x), atol=1e-5):
            raise AssertionError(
                "that is the pre-norm pass (the block's own forward, or LayerNorm before each sublayer); post-norm "
                "normalises after each residual sum: x = LN1(x + Attn(x)); x = LN2(x + FFN(x))"
            )
        h = block.norm1(block.attn(x))
        if torch.allclose(got, block.norm2(block.mlp(h)), atol=1e-5):
            raise AssertionError(
                "the residual connections are missing: add each sublayer's input to its output"
            )
        h = block.norm2(x + block.attn(x))
        if torch.allclose(got, block.norm1(h + block.mlp(h)), atol=1e-5):
            raise AssertionError("norm1 and norm2 are swapped: norm1 follows the attention, norm2 the FFN")
    raise AssertionError(
        "differs from TransformerBlock(norm='post'): x = LN1(x + Attn(x)); x = LN2(x + FFN(x))"
    )


def check_pre_norm_block_forward(fn: Callable[[TransformerBlock, Tensor], Tensor]) -> None:
    """Lab 6.4, exercise 4: ``fn(block, x)`` must equal ``TransformerBlock(norm="pre")``'s forward on random
    weights (LayerNorm gains and shifts not 1 and 0, so that each mistake shows). The usual mistakes are named."""
    torch.manual_seed(2)
    block = TransformerBlock(16, 4, norm="pre").eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        got = _tensor_like(fn(block, x.clone()), (2, 5, 16))
        if torch.allclose(got, block(x), atol=1e-5):
            return
        attn, mlp, n1, n2 = block.attn, block.mlp, block.norm1, block.norm2
        h = x + attn(n1(x))
        relu = h + mlp.fc2(F.relu(mlp.fc1(n2(h))))
        slips = (
            (
                post_norm_forward(block, x),
                "that is the post-norm block; pre-norm normalises each sublayer's input: "
                "h = x + Attn(LN1(x)), then h + FFN(LN2(h))",
            ),
            (
                attn(n1(x)) + mlp(n2(attn(n1(x)))),
                "the residual connections are missing: add each sublayer's input to its output",
            ),
            (mlp(n2(h)), "the second residual is missing: return h + FFN(LN2(h)), not FFN(LN2(h))"),
            (
                x + attn(n1(x)) + mlp(n2(x)),
                "the FFN read LN2(x); it must read the attention sublayer's output: "
                "LN2(h) with h = x + Attn(LN1(x))",
            ),
            (relu, "the FFN's activation is GELU (F.gelu), not ReLU"),
            (h + mlp(n1(h)), "both sublayers used norm1; the FFN has its own LayerNorm, norm2"),
            (x + attn(x) + mlp(x + attn(x)), "the LayerNorms are missing: normalise each sublayer's input"),
        )
        for wrong, message in slips:
            if torch.allclose(got, wrong, atol=1e-5):
                raise AssertionError(message)
    raise AssertionError(
        f"differs from TransformerBlock(norm='pre') by up to {(got - block(x)).abs().max():.3g}: "
        "h = x + Attn(LN1(x)); out = h + FFN(LN2(h))"
    )


def check_rms_norm(fn: Callable[..., Tensor]) -> None:
    """Lab 6.4, exercise 3: ``fn(x, gamma, eps)`` must equal ``torch.nn.RMSNorm`` over the last dimension."""
    g = torch.Generator().manual_seed(0)
    x = 1 + 3 * torch.randn(4, 9, 8, generator=g)
    x[0, 0] = 1e-3 * torch.randn(8, generator=g)  # mean square 1e-6 < eps: eps must sit inside the sqrt
    ref = nn.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(8, generator=g))
        gamma, want = ref.weight.clone(), ref(x)
    got = _tensor_like(fn(x.clone(), gamma, eps=1e-6), (4, 9, 8))
    if torch.allclose(got, want, atol=1e-4):
        return
    ms = x.pow(2).mean(-1, keepdim=True)
    centred = x - x.mean(-1, keepdim=True)
    slips = {
        "RMSNorm does not subtract the mean: divide x itself by its root mean square": centred
        / (centred.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
        * gamma,
        "eps belongs inside the square root: sqrt(mean(x²) + eps)": x / (ms.sqrt() + 1e-6) * gamma,
        "gamma is missing: multiply the normalised x by gamma": x / (ms + 1e-6).sqrt(),
        "divide by the root mean square over the features, sqrt(mean(x²) + eps), not by the standard deviation": x
        / (x.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
        * gamma,
    }
    for message, wrong in slips.items():
        if torch.allclose(got, wrong, atol=1e-4):
            raise AssertionError(message)
    raise AssertionError("differs from nn.RMSNorm: gamma * x / sqrt(mean(x²) + eps) over the last dim")
