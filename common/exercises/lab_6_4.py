"""Lab 6.4's exercises (the transformer block): LayerNorm by hand, the post-norm forward pass, RMSNorm, a pre-norm
block from its parameters.

Self-checks: :func:`check_layer_norm`, :func:`check_post_norm_forward`, :func:`check_rms_norm`,
:func:`check_pre_norm_block_forward`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.attention import multi_head_attention
from common.blocks import TransformerBlock
from common.exercises import Exercise


def _tensor_like(got: object, shape: tuple[int, ...]) -> Tensor:
    assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, (
        f"the output should have the input's shape {shape}, got {tuple(got.shape)}"
    )
    return got.detach()


def check_layer_norm(fn: Callable[..., Tensor]) -> None:
    """Exercise 1: ``fn(x, gamma, beta, eps)`` must equal ``torch.nn.functional.layer_norm`` over the
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
    """Exercise 2: ``fn(block, x)`` must be the post-norm forward pass built from the block's parts.
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


def check_rms_norm(fn: Callable[..., Tensor]) -> None:
    """Exercise 3: ``fn(x, gamma, eps)`` must equal ``torch.nn.RMSNorm`` over the last dimension."""
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


def check_pre_norm_block_forward(fn: Callable[[TransformerBlock, Tensor], Tensor]) -> None:
    """Exercise 4: ``fn(block, x)`` must equal ``TransformerBlock(norm="pre")``'s forward on random
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
        post = n1(x + attn(x))
        post = n2(post + mlp(post))
        slips = (
            (
                post,
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


### BEGIN SOLUTION
def reference_layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dimension written out: (x - mean) / sqrt(biased variance + eps) * gamma + beta."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / (var + eps).sqrt() * gamma + beta


def reference_post_norm_forward(block: TransformerBlock, x: Tensor) -> Tensor:
    """The post-norm forward pass from a block's parts, whatever the block's own ``norm``:
    x = LN1(x + Attn(x)); x = LN2(x + FFN(x))."""
    x = block.norm1(x + block.attn(x))
    return block.norm2(x + block.mlp(x))


def reference_rms_norm(x: Tensor, gamma: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm (Zhang & Sennrich, 2019) over the last dimension: gamma * x / sqrt(mean(x²) + eps); no mean
    subtraction, no shift."""
    return x / (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt() * gamma


def reference_pre_norm_block_forward(block: TransformerBlock, x: Tensor) -> Tensor:
    """A pre-norm block's forward pass from its *parameters* only, with
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


### END SOLUTION


### BEGIN HIDDEN TESTS
def _layer_norm_other_shapes_and_eps(ns: dict) -> None:
    # 2-D and 4-D inputs, and an eps other than the default: the answer must use the eps it is given
    g = torch.Generator().manual_seed(41)
    for shape, eps in (((5, 6), 0.1), ((2, 3, 4, 6), 1e-3)):
        x = 0.5 + 0.3 * torch.randn(*shape, generator=g)
        gamma, beta = torch.randn(6, generator=g), torch.randn(6, generator=g)
        got = _tensor_like(ns["my_layer_norm"](x, gamma, beta, eps=eps), shape)
        assert torch.allclose(got, F.layer_norm(x, (6,), gamma, beta, eps=eps), atol=1e-5), (
            f"shape {shape}, eps={eps}: differs from F.layer_norm; use the eps argument (not a fixed 1e-5) and "
            "normalise over the last dimension whatever the number of dimensions"
        )


def _torch_encoder_layer(block: TransformerBlock, norm_first: bool) -> nn.TransformerEncoderLayer:
    # torch's own encoder layer with the block's weights: an independent reference
    d = block.norm1.normalized_shape[0]
    ref = nn.TransformerEncoderLayer(
        d,
        block.attn.num_heads,
        block.mlp.fc1.out_features,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        layer_norm_eps=block.norm1.eps,
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.fc1.state_dict())
        ref.linear2.load_state_dict(block.mlp.fc2.state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())
    return ref.eval()


def _random_block(seed: int, dim: int, heads: int, **kwargs) -> TransformerBlock:
    torch.manual_seed(seed)
    block = TransformerBlock(dim, heads, **kwargs).eval()
    with torch.no_grad():
        for layer_norm_module in (block.norm1, block.norm2):
            layer_norm_module.weight.normal_(mean=1.0, std=0.3)
            layer_norm_module.bias.normal_(mean=0.0, std=0.3)
    return block


def _post_norm_other_block_input_untouched(ns: dict) -> None:
    # another width and number of heads, against torch's post-norm layer; the caller's x must not change
    block = _random_block(42, 24, 3, mlp_ratio=2.0)
    x = torch.randn(1, 7, 24, generator=torch.Generator().manual_seed(43))
    before = x.clone()
    with torch.no_grad():
        want = _torch_encoder_layer(block, norm_first=False)(before)
        got = _tensor_like(ns["my_post_norm_forward"](block, x), (1, 7, 24))
    assert torch.equal(x, before), (
        "your function changed its input x in place (x += ... or x.add_): write x = x + ... so that the caller's "
        "tensor stays as it was"
    )
    assert torch.allclose(got, want, atol=1e-5), (
        "a block of width 24 with 3 heads: differs from torch's post-norm TransformerEncoderLayer; use the block's "
        "parts (block.attn, block.norm1, block.mlp, block.norm2), not fixed sizes"
    )


def _rms_norm_other_shapes_and_eps(ns: dict) -> None:
    g = torch.Generator().manual_seed(44)
    for shape, eps in (((5, 6), 0.1), ((2, 3, 4, 6), 1e-3)):
        x = 0.3 * torch.randn(*shape, generator=g)
        ref = nn.RMSNorm(6, eps=eps)
        with torch.no_grad():
            ref.weight.copy_(torch.randn(6, generator=g))
            gamma = ref.weight.detach().clone()
            want = ref(x)
        got = _tensor_like(ns["my_rms_norm"](x, gamma, eps=eps), shape)
        assert torch.allclose(got, want, atol=1e-5), (
            f"shape {shape}, eps={eps}: differs from nn.RMSNorm; use the eps argument (not a fixed 1e-6) and "
            "take the mean over the last dimension whatever the number of dimensions"
        )


def _pre_norm_other_block(ns: dict) -> None:
    # 6 heads of width 4 (the self-check has 4 heads), a hidden layer of 2d and LayerNorms with eps 1e-3
    block = _random_block(45, 24, 6, mlp_ratio=2.0, norm_eps=1e-3)
    x = torch.randn(1, 7, 24, generator=torch.Generator().manual_seed(46))
    with torch.no_grad():
        want = _torch_encoder_layer(block, norm_first=True)(x)
        got = _tensor_like(ns["my_pre_norm_block"](block, x.clone()), (1, 7, 24))
    assert torch.allclose(got, want, atol=1e-5), (
        "a block of width 24, 6 heads, hidden width 48, LayerNorm eps 1e-3: differs from torch's norm-first "
        "TransformerEncoderLayer; read num_heads, the widths and eps from the block (block.attn.num_heads, "
        "block.norm1.eps), not fixed values"
    )


GRADING = (
    Exercise(
        "lab6.4-ex1",
        "Exercise 1: LayerNorm by hand",
        ("my_layer_norm",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_layer_norm(ns["my_layer_norm"])),
            ("other shapes and eps", _layer_norm_other_shapes_and_eps),
        ),
    ),
    Exercise(
        "lab6.4-ex2",
        "Exercise 2: post-norm forward",
        ("my_post_norm_forward",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_post_norm_forward(ns["my_post_norm_forward"])),
            ("another block, input left unchanged", _post_norm_other_block_input_untouched),
        ),
    ),
    Exercise(
        "lab6.4-ex3",
        "Exercise 3: RMSNorm",
        ("my_rms_norm",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_rms_norm(ns["my_rms_norm"])),
            ("other shapes and eps", _rms_norm_other_shapes_and_eps),
        ),
    ),
    Exercise(
        "lab6.4-ex4",
        "Exercise 4: pre-norm block",
        ("my_pre_norm_block",),
        points=3,
        cases=(
            ("self-check", lambda ns: check_pre_norm_block_forward(ns["my_pre_norm_block"])),
            ("another block", _pre_norm_other_block),
        ),
    ),
)
### END HIDDEN TESTS
