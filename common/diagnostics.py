"""Looking inside a network: activations of named submodules (forward hooks), per-layer gradient norms,
switching attention heads off, and which input positions a sequence model relies on (occlusion, saliency)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def capture_outputs(
    model: nn.Module, names: Sequence[str], inputs: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record the output (or, with ``inputs=True``, the first input) of each named submodule.

    Names are those of ``model.named_modules()`` (e.g. ``"norm1"``, ``"mlp.fc1"``). The dict fills in
    when the model runs inside the ``with`` block; the hooks are removed on exit.

        with capture_outputs(block, ["attn", "mlp"]) as acts:
            block(x)
        acts["attn"].std()
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no submodule named {missing}; choose from {[n for n in modules if n]}.")
    captured: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(module, args, output):
            value = args[0] if inputs else output
            value = value[0] if isinstance(value, tuple) else value  # attention may return (out, weights)
            captured[name] = value.detach()

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def grad_norm(module: nn.Module) -> float:
    """L2 norm of all the gradients of ``module``'s parameters taken together (0 if none yet)."""
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return torch.cat(grads).norm().item() if grads else 0.0


def stack_gradient_norms(
    layers: Sequence[nn.Module], x: Tensor, loss_fn: Callable[[Tensor], Tensor] | None = None
) -> list[float]:
    """Run ``x`` through ``layers`` in order, back-propagate ``loss_fn(output)`` (default: mean of
    squares) and return each layer's parameter-gradient norm, first layer first.

    Existing gradients are cleared first, so the numbers belong to this one backward pass.
    """
    if not layers:
        raise ValueError("layers is empty; pass the blocks of the stack in order.")
    loss_fn = loss_fn or (lambda out: out.pow(2).mean())
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    h = x
    for layer in layers:
        h = layer(h)
    loss_fn(h).backward()
    return [grad_norm(layer) for layer in layers]


@contextmanager
def ablate_heads(attn: nn.Module, heads: Sequence[int]) -> Iterator[None]:
    """Silence some heads of a :class:`common.attention.MultiHeadAttention` inside the ``with`` block.

    The heads' outputs are concatenated before the output projection ``attn.proj``; zeroing a head's
    slice there removes exactly that head's contribution (the "what if this head were gone" test).
    """
    num_heads, head_dim = attn.num_heads, attn.head_dim
    bad = [h for h in heads if not 0 <= h < num_heads]
    if bad:
        raise ValueError(f"head indices {bad} out of range; this layer has heads 0..{num_heads - 1}.")
    keep = torch.ones(num_heads * head_dim)
    for h in heads:
        keep[h * head_dim : (h + 1) * head_dim] = 0.0

    def zero_heads(module, args):
        return (args[0] * keep.to(args[0].device, args[0].dtype),)

    handle = attn.proj.register_forward_pre_hook(zero_heads)
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------ attribution
def _check_sequence(x: Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(
            f"expected a (batch, seq_len, features) tensor, got shape {tuple(x.shape)}; "
            "add a feature axis with x.unsqueeze(-1)."
        )


@torch.no_grad()
def occlusion_importance(model: nn.Module, x: Tensor, baseline: float | None = 0.0) -> Tensor:
    """Mean |change of the prediction| when position i is replaced by ``baseline``, for every i.

    ``baseline=None`` replaces a step by its sequence's mean instead of a constant.
    Returns (seq_len,). Model-agnostic: it only calls ``model(x)``.
    """
    _check_sequence(x)
    model.eval()
    reference = model(x)
    fill = x.mean(dim=1) if baseline is None else torch.full_like(x[:, 0], baseline)  # (B, features)
    scores = []
    for i in range(x.shape[1]):
        occluded = x.clone()
        occluded[:, i] = fill
        scores.append((model(occluded) - reference).abs().mean())
    return torch.stack(scores)


def gradient_saliency(model: nn.Module, x: Tensor, times_input: bool = False) -> Tensor:
    """Mean |d prediction / d x_i| over the batch, for every position i (``times_input``: |grad · x_i|),
    summed over the features. Returns (seq_len,). The gradient says how much a small change at step i
    moves the prediction.
    """
    _check_sequence(x)
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    # cuDNN's RNN backward refuses eval mode; the native kernels give the same gradient.
    with torch.backends.cudnn.flags(enabled=False):
        (grad,) = torch.autograd.grad(model(x).sum(), x)  # rows independent: d(sum)/dx_b = d(pred_b)/dx_b
    grad = grad * x if times_input else grad
    return grad.detach().abs().mean(dim=0).sum(-1)
