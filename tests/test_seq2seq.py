"""Lab 6.6's encoder-decoder pieces against torch's own layers and written-out references."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.seq2seq import (
    BOS,
    EOS,
    PAD,
    AdditiveAttention,
    DecoderBlock,
    RNNSeq2Seq,
    TransformerSeq2Seq,
    beam_search,
    exact_match,
    greedy_decode,
    smoothed_cross_entropy,
    train_seq2seq,
)


def torch_decoder_layer(block: DecoderBlock, norm_first: bool) -> nn.TransformerDecoderLayer:
    d = block.norm1.normalized_shape[0]
    ref = nn.TransformerDecoderLayer(
        d,
        block.self_attn.num_heads,
        block.mlp.fc1.out_features,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.self_attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.self_attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.self_attn.proj.state_dict())
        ca = block.cross_attn
        ref.multihead_attn.in_proj_weight.copy_(torch.cat([ca.q.weight, ca.kv.weight]))
        ref.multihead_attn.in_proj_bias.copy_(torch.cat([ca.q.bias, ca.kv.bias]))
        ref.multihead_attn.out_proj.load_state_dict(ca.proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.fc1.state_dict())
        ref.linear2.load_state_dict(block.mlp.fc2.state_dict())
        for i in (1, 2, 3):
            getattr(ref, f"norm{i}").load_state_dict(getattr(block, f"norm{i}").state_dict())
    return ref.eval()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_decoder_block_equals_torch_decoder_layer(norm):
    torch.manual_seed(0)
    block = DecoderBlock(32, 4, mlp_ratio=2, norm=norm).eval()
    with torch.no_grad():  # distinct norms, so that a swapped LayerNorm shows
        for ln in (block.norm1, block.norm2, block.norm3):
            ln.weight.normal_(1.0, 0.3)
            ln.bias.normal_(0.0, 0.3)
    ref = torch_decoder_layer(block, norm_first=norm == "pre")
    x, memory = torch.randn(3, 6, 32), torch.randn(3, 9, 32)
    lengths = torch.tensor([9, 5, 2])
    keep = torch.arange(9)[None] < lengths[:, None]
    want = ref(
        x,
        memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(6),
        tgt_is_causal=True,
        memory_key_padding_mask=~keep,  # torch: True = blocked
    )
    got, weights = block(x, memory, keep[:, None, None], return_attention=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(block(x, memory, keep[:, None, None]), want, atol=1e-5, rtol=0)
    assert weights.shape == (3, 4, 6, 9)
    assert float(weights[2, :, :, 2:].detach().abs().max()) == 0.0, "padded source positions get no weight"
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 6))


def _model():
    torch.manual_seed(0)
    return TransformerSeq2Seq(20, 9, dim=32, num_heads=4).eval()


def test_transformer_is_causal_and_ignores_padding():
    m = _model()
    src = torch.randint(3, 20, (2, 7))
    src[1, 4:] = PAD
    lengths = torch.tensor([7, 4])
    tgt = torch.randint(3, 9, (2, 6))
    logits = m(src, lengths, tgt)
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(3, 9, (2, 2))
    torch.testing.assert_close(m(src, lengths, changed)[:, :4], logits[:, :4])  # no future leaks
    assert not torch.allclose(m(src, lengths, changed)[:, 4:], logits[:, 4:])
    longer = F.pad(src, (0, 5), value=PAD)
    torch.testing.assert_close(m(longer, lengths, tgt), logits, atol=1e-5, rtol=0)
    noisy = src.clone()
    noisy[1, 4:] = 5  # what sits beyond the length is never read
    torch.testing.assert_close(m(noisy, lengths, tgt)[1], logits[1], atol=1e-5, rtol=0)


def test_additive_attention_against_a_loop():
    torch.manual_seed(0)
    att = AdditiveAttention(6, 10, 5)
    q, keys = torch.randn(2, 6), torch.randn(2, 4, 10)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    context, weights = att(q, keys, mask)
    for b in range(2):
        scores = torch.stack(
            [
                att.v.weight[0] @ torch.tanh(att.w_query.weight @ q[b] + att.w_key(keys[b, j]))
                for j in range(4)
            ]
        )
        n = int(mask[b].sum())
        w = torch.softmax(scores[:n], 0)
        torch.testing.assert_close(weights[b, :n], w)
        torch.testing.assert_close(context[b], (w[:, None] * keys[b, :n]).sum(0))
    assert float(weights[1, 2:].detach().sum()) == 0.0


@pytest.mark.parametrize("attention", [False, True])
def test_rnn_teacher_forcing_equals_stepping_and_ignores_padding(attention):
    torch.manual_seed(0)
    m = RNNSeq2Seq(20, 9, emb=8, hidden=12, attention=attention).eval()
    src = torch.randint(3, 20, (2, 7))
    src[1, 5:] = PAD
    lengths = torch.tensor([7, 5])
    tgt = torch.randint(3, 9, (2, 5))
    logits = m(src, lengths, tgt)
    state = m.start(src, lengths)
    for t in range(5):
        logp, state = m.step(state, tgt[:, : t + 1])
        torch.testing.assert_close(logp, logits[:, t].log_softmax(-1))
    torch.testing.assert_close(m(F.pad(src, (0, 3)), lengths, tgt), logits, atol=1e-6, rtol=0)
    noisy = src.clone()
    noisy[1, 5:] = 4
    torch.testing.assert_close(m(noisy, lengths, tgt)[1], logits[1], atol=1e-6, rtol=0)


def test_no_attention_model_sees_the_source_only_through_one_vector():
    torch.manual_seed(0)
    m = RNNSeq2Seq(20, 9, emb=8, hidden=12, attention=False).eval()
    src, lengths = torch.randint(3, 20, (1, 6)), torch.tensor([6])
    state = m.start(src, lengths)
    assert set(state) == {"h", "final"} and state["final"].shape == (1, 24)


class MarkovModel(nn.Module):
    """A decoding reference: log p(next | prefix) from a fixed table of the last token (and the step)."""

    def __init__(self, vocab=5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(12, vocab, vocab, generator=g).mul(2).log_softmax(-1)
        self.table[:, :, BOS] = -1e9  # never emits BOS or PAD
        self.table[:, :, PAD] = -1e9
        self.table = self.table.log_softmax(-1)
        self.dummy = nn.Parameter(torch.zeros(1))

    def start(self, src, lengths):
        return {"src": src.float()}

    def step(self, state, prefix):
        return self.table[prefix.shape[1] - 1, prefix[:, -1]], state


def _score(model, seq):
    total, prefix = 0.0, [BOS]
    for tok in seq:
        total += float(model.table[len(prefix) - 1, prefix[-1], tok])
        prefix.append(tok)
        if tok == EOS:
            break
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_is_exhaustive_search_when_the_beam_holds_everything(seed):
    model, V, L = MarkovModel(5, seed), 5, 4
    best = max(
        (s for s in itertools.product(range(V), repeat=L) if PAD not in s and BOS not in s),
        key=lambda s: _score(model, s),
    )
    src = torch.zeros(1, 1, dtype=torch.long)
    got = beam_search(model, src, torch.tensor([1]), beam_size=V**L, max_len=L)[0].tolist()
    assert math.isclose(_score(model, got), _score(model, best), abs_tol=1e-5)
    greedy = greedy_decode(model, src, torch.tensor([1]), max_len=L)[0].tolist()
    assert _score(model, got) >= _score(model, greedy) - 1e-6


@pytest.mark.parametrize("kind", ["transformer", "rnn"])
def test_beam_of_one_is_greedy(kind):
    torch.manual_seed(0)
    m = _model() if kind == "transformer" else RNNSeq2Seq(20, 9, emb=8, hidden=12).eval()
    src = torch.randint(3, 20, (4, 8))
    lengths = torch.tensor([8, 6, 3, 8])
    src[1, 6:], src[2, 3:] = PAD, PAD
    g = greedy_decode(m, src, lengths, max_len=6)
    b = beam_search(m, src, lengths, beam_size=1, max_len=6)
    n = min(g.shape[1], b.shape[1])
    assert torch.equal(g[:, :n], b[:, :n])


def test_label_smoothing_equals_torch():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 6, 11), torch.randint(0, 11, (4, 6))
    target[0, 3:] = PAD
    for eps in (0.0, 0.1, 0.3):
        want = F.cross_entropy(
            logits.reshape(-1, 11), target.reshape(-1), label_smoothing=eps, ignore_index=PAD
        )
        torch.testing.assert_close(smoothed_cross_entropy(logits, target, eps), want)
    with pytest.raises(ValueError, match="smoothing"):
        smoothed_cross_entropy(logits, target, 1.0)


def test_training_learns_to_copy_and_exact_match_counts_whole_sequences():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 8, (256, 4), generator=g)
    tgt = torch.cat([torch.full((256, 1), BOS), src, torch.full((256, 1), EOS)], 1)  # copy the source
    lengths = torch.full((256,), 4)
    m = TransformerSeq2Seq(8, 8, dim=32, num_heads=4, enc_layers=1, dec_layers=1)
    before = exact_match(m, src, lengths, tgt).float().mean()
    run = train_seq2seq(m, src, lengths, tgt, lr=3e-3, steps=150, batch_size=64, smoothing=0.0)
    assert run.losses[-1] < 0.2 * run.losses[0]
    after = exact_match(m, src, lengths, tgt)
    assert after.float().mean() > 0.9 > before
    assert exact_match(m, src, lengths, tgt, beam_size=3).float().mean() >= after.float().mean() - 0.02
    wrong = tgt.clone()
    wrong[:, 2] = 3 + (wrong[:, 2] - 2) % 5  # one character off in every target
    assert exact_match(m, src, lengths, wrong).float().mean() < 0.1
