"""The transformer encoder block: multi-head self-attention + residual + LayerNorm + feed-forward.

Module names follow timm's ``Block``/``Mlp`` (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
so that a ViT built from these blocks loads timm weights unchanged.

Public API
----------
- :class:`FeedForward`, :class:`TransformerBlock` (``norm="pre" | "post"``, ``residual``, ``activation``).
- :func:`ffn_as_one_linear`: an FFN without its activation is one linear map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.attention import MultiHeadAttention

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


def ffn_as_one_linear(ffn: FeedForward) -> nn.Linear:
    """The one linear layer that equals ``ffn`` when its activation is the identity (and dropout is off):
    fc2(fc1(x)) = x W1ᵀ W2ᵀ + (W2 b1 + b2), a (dim -> dim) map however wide the hidden layer is."""
    one = nn.Linear(ffn.fc1.in_features, ffn.fc2.out_features)
    with torch.no_grad():
        one.weight.copy_(ffn.fc2.weight @ ffn.fc1.weight)
        one.bias.copy_(ffn.fc2.weight @ ffn.fc1.bias + ffn.fc2.bias)
    return one
