"""CLIP (lab 4.4): the symmetric InfoNCE against a loop and a hand-computed example, the temperature, the text
encoder's masks and pooling, zero-shot helpers, retrieval recall, training, and the exercises' self-checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.attention import causal_mask
from common.captions import caption_vocabulary, captioned_shapes, context_length
from common.clip import (
    CLIP,
    MAX_LOGIT_SCALE,
    TextEncoder,
    class_embeddings,
    clip_loss,
    clip_loss_floor,
    content_loss_floor,
    encode_texts,
    ensemble_prompts,
    multi_positive_clip_loss,
    recall_at_k,
    recall_chance,
    train_clip,
)
from common.reference_models import standardizer
from common.vit import VisionTransformer


def tiny_clip(**kwargs) -> CLIP:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, num_classes=0, embed_dim=32, depth=1, num_heads=2)
    text = TextEncoder(len(caption_vocabulary()), context_length(), width=32, depth=1, num_heads=2)
    return CLIP(vit, text, embed_dim=16, **kwargs)


# ------------------------------------------------------------------------------------------ the loss
def loop_info_nce(logits):
    """Plain Python: -log softmax of the diagonal entry, row by row and column by column, averaged."""
    B = len(logits)
    rows = cols = 0.0
    for i in range(B):
        rows += -logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(B)))
        cols += -logits[i][i] + math.log(sum(math.exp(logits[j][i]) for j in range(B)))
    return (rows / B + cols / B) / 2


def test_clip_loss_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    for B in (1, 2, 5, 9):
        logits = torch.randn(B, B, generator=gen, dtype=torch.float64) * 4
        assert clip_loss(logits).item() == pytest.approx(loop_info_nce(logits.tolist()), rel=1e-12)


def test_clip_loss_on_a_hand_computed_example():
    # logits [[2, 0], [1, 3]]: rows (image -> text) give log(1 + e^-2) twice; columns (text -> image) give
    # log(1 + e^-1) and log(1 + e^-3). Loss = (0.126928 + (0.313262 + 0.048587) / 2) / 2 = 0.153926.
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    assert clip_loss(logits).item() == pytest.approx(0.153926, abs=1e-6)
    assert clip_loss(torch.zeros(4, 4)).item() == pytest.approx(math.log(4))  # nothing learnt: log B
    assert clip_loss(50 * torch.eye(4)).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="square"):
        clip_loss(torch.zeros(3, 4))


def test_loss_floor_is_reached_by_a_simplex_and_never_beaten():
    B, s = 8, 1.0
    simplex = F.normalize(torch.eye(B, dtype=torch.float64) - 1 / B, dim=1)  # cosine -1/(B-1) between corners
    assert (simplex @ simplex.T)[0, 1].item() == pytest.approx(-1 / (B - 1))
    assert clip_loss(s * simplex @ simplex.T).item() == pytest.approx(clip_loss_floor(B, s), rel=1e-9)
    # free unit embeddings optimised directly at a fixed scale approach the floor from above
    torch.manual_seed(0)
    img, txt = torch.randn(B, B, requires_grad=True), torch.randn(B, B, requires_grad=True)
    opt = torch.optim.Adam([img, txt], lr=0.05)
    for _ in range(400):
        loss = clip_loss(s * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert clip_loss_floor(B, s) - 1e-6 <= loss.item() <= clip_loss_floor(B, s) + 0.01
    assert clip_loss_floor(64, 1.0) > 3.0 > clip_loss_floor(64, 1 / 0.07)  # why the temperature is needed
    with pytest.raises(ValueError):
        clip_loss_floor(1, 1.0)


def loop_multi_positive(logits, positives):
    """Plain Python: row i's target is uniform over the j with positives[i][j]; column j's over the i."""
    B = len(logits)
    rows = cols = 0.0
    for i in range(B):
        norm = math.log(sum(math.exp(logits[i][j]) for j in range(B)))
        pos = [j for j in range(B) if positives[i][j]]
        rows += sum(-(logits[i][j] - norm) / len(pos) for j in pos)
    for j in range(B):
        norm = math.log(sum(math.exp(logits[i][j]) for i in range(B)))
        pos = [i for i in range(B) if positives[i][j]]
        cols += sum(-(logits[i][j] - norm) / len(pos) for i in pos)
    return (rows / B + cols / B) / 2


def test_multi_positive_loss_matches_a_loop_and_is_info_nce_without_duplicates():
    gen = torch.Generator().manual_seed(1)
    for B in (1, 3, 6):
        logits = torch.randn(B, B, generator=gen, dtype=torch.float64) * 3
        positives = (torch.rand(B, B, generator=gen) < 0.4) | torch.eye(B, dtype=torch.bool)
        got = multi_positive_clip_loss(logits, positives).item()
        assert got == pytest.approx(loop_multi_positive(logits.tolist(), positives.tolist()), rel=1e-12)
        eye = torch.eye(B, dtype=torch.bool)
        assert multi_positive_clip_loss(logits, eye).item() == pytest.approx(
            clip_loss(logits).item(), rel=1e-12
        )


def test_multi_positive_loss_on_a_hand_example():
    # captions 0 and 1 both fit images 0 and 1 ("a red star" twice); all logits 0: each row and column of the
    # duplicated pair puts 1/3 on each of its two targets, -log(1/3) = log 3; the third pair also log 3.
    # logits with the pair's block at +inf reach log 2 on the pair and 0 on the third: (2 log 2 / 3 * 2) / 2.
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert multi_positive_clip_loss(torch.zeros(3, 3), positives).item() == pytest.approx(math.log(3))
    assert content_loss_floor(positives) == pytest.approx(2 * math.log(2) / 3)
    ideal = 60.0 * positives.double()
    assert multi_positive_clip_loss(ideal, positives).item() == pytest.approx(2 * math.log(2) / 3, abs=1e-9)
    assert clip_loss(ideal).item() == pytest.approx(
        2 * math.log(2) / 3, abs=1e-9
    )  # plain InfoNCE: same floor
    with pytest.raises(ValueError, match="diagonal"):
        multi_positive_clip_loss(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, B\)"):
        multi_positive_clip_loss(torch.zeros(2, 2), torch.ones(3, 3, dtype=torch.bool))


def test_content_floor_is_never_beaten_by_free_logits():
    # an asymmetric fit (caption 0 "a red star" fits images 0 and 1; caption 1 "a small red star" only image 1)
    positives = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    floor = (math.log(1) + math.log(2) + 0 + math.log(2) + 0 + 0) / 6  # rows 1, 2, 1; columns 2, 1, 1
    assert content_loss_floor(positives) == pytest.approx(floor)
    torch.manual_seed(0)
    z = torch.randn(3, 3, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.1)
    for _ in range(1500):
        loss = multi_positive_clip_loss(z, positives)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert floor - 1e-6 <= loss.item() <= floor + 0.02


# ------------------------------------------------------------------------------------------ the model
def test_temperature_is_log_parameterised_and_clamped():
    model = tiny_clip()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.logit_scale_value == pytest.approx(1 / 0.07, rel=1e-6)
    images, tokens = (
        torch.rand(3, 3, 32, 32),
        caption_vocabulary().encode(["a red star", "a blue ring", "a star"]),
    )
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # scale e^10: far over the clamp
    logits, per_text = model(images, tokens)
    assert model.logit_scale_value == pytest.approx(MAX_LOGIT_SCALE)
    assert logits.abs().max().item() <= MAX_LOGIT_SCALE + 1e-4 and torch.equal(per_text, logits.T)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))
    with pytest.raises(ValueError, match="num_classes=0"):
        CLIP(VisionTransformer(num_classes=6), model.text)
    with pytest.raises(ValueError, match="max_logit_scale"):
        tiny_clip(init_temperature=0.001)


def test_embeddings_are_unit_vectors_and_logits_are_scaled_cosines():
    model = tiny_clip().eval()
    images, tokens = torch.rand(4, 3, 32, 32), caption_vocabulary().encode(["a red star"] * 4)
    img, txt = model.encode_image(images), model.encode_text(tokens)
    assert torch.allclose(img.norm(dim=1), torch.ones(4)) and torch.allclose(txt.norm(dim=1), torch.ones(4))
    logits, _ = model(images, tokens)
    assert torch.allclose(logits, model.logit_scale_value * img @ txt.T, atol=1e-5)


@pytest.mark.parametrize("causal,pooling", [(True, "eos"), (False, "mean"), (False, "eos")])
def test_text_features_do_not_depend_on_padding(causal, pooling):
    vocab = caption_vocabulary()
    torch.manual_seed(0)
    enc = TextEncoder(len(vocab), 12, width=32, depth=2, num_heads=4, causal=causal, pooling=pooling).eval()
    texts = ["a red star", "a large blue ring at the top"]
    short, long = enc(vocab.encode(texts)), enc(vocab.encode(texts, 12))
    assert short.shape == (2, 32) and torch.allclose(short, long, atol=1e-5)


def test_causal_mask_eos_state_sees_every_word_earlier_states_do_not():
    vocab = caption_vocabulary()
    torch.manual_seed(0)
    enc = TextEncoder(len(vocab), 8, width=32, depth=2, num_heads=4, causal=True).eval()
    a, b = vocab.encode(["a red star", "a red ring"])
    states = {}
    for name, ids in (("a", a), ("b", b)):
        x = enc.pos_embed(enc.token_embed(ids[None]))
        for block in enc.blocks:
            x = block(x, mask=causal_mask(x.shape[1])[None, None])
        states[name] = x[0]
    assert torch.allclose(states["a"][:2], states["b"][:2], atol=1e-6)  # "a red" cannot see the shape yet
    assert not torch.allclose(enc(a[None]), enc(b[None]))  # the <eos> feature can
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(10, 8, pooling="cls")
    with pytest.raises(ValueError, match="pad on the right"):
        enc(torch.tensor([[0, 3, 1]]))


# ------------------------------------------------------------------------------------------ zero-shot, retrieval
def test_ensemble_prompts_matches_a_loop():
    emb = torch.randn(3, 4, 5) * torch.rand(3, 4, 1).add(0.1)
    got = ensemble_prompts(emb)
    for c in range(3):
        mean = sum(emb[c, t] / emb[c, t].norm() for t in range(4)) / 4
        assert torch.allclose(got[c], mean / mean.norm(), atol=1e-6)


def test_class_embeddings_and_encode_texts():
    model, vocab = tiny_clip(), caption_vocabulary()
    texts = ["a red star", "a blue star", "a red ring", "a blue ring"]
    single = encode_texts(model, vocab, texts)
    weights = class_embeddings(model, vocab, [texts[:2], texts[2:]])
    assert torch.allclose(weights, ensemble_prompts(single.reshape(2, 2, -1)), atol=1e-6)
    assert torch.allclose(class_embeddings(model, vocab, [[t] for t in texts]), single, atol=1e-6)
    with pytest.raises(ValueError, match="same number"):
        class_embeddings(model, vocab, [texts[:1], texts[1:]])


def test_recall_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.5, 0.4]])
    # row 0: own column first; row 1: own column second; row 2: own column second
    assert recall_at_k(sim, 1) == pytest.approx(1 / 3)
    assert recall_at_k(sim, 2) == pytest.approx(1.0)
    assert recall_at_k(sim.T, 1) == pytest.approx(2 / 3)  # columns: 0 first, 1 behind 0.5, 2 first
    assert recall_at_k(torch.eye(5), 1) == 1.0 and recall_at_k(torch.eye(5), 10) == 1.0
    # with positives: row 1's top column (0) is a caption that fits too
    positives = torch.eye(3, dtype=torch.bool)
    positives[1, 0] = True
    assert recall_at_k(sim, 1, positives) == pytest.approx(2 / 3)
    assert recall_at_k(sim, 1, torch.eye(3, dtype=torch.bool)) == recall_at_k(sim, 1)
    # a (2, 3) gallery: image 0's correct captions are 1 and 2, image 1's is 0
    rect = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3]])
    fit = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert recall_at_k(rect, 1, fit) == 0.0 and recall_at_k(rect, 2, fit) == 0.5
    with pytest.raises(ValueError, match="square"):
        recall_at_k(rect, 1)


def test_recall_chance_is_what_random_rankings_get():
    fit = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # one of four correct, k = 2: 1 - C(3,2)/C(4,2) = 1/2; two of four: 1 - 1/6; all: 1
    assert recall_chance(fit, 2) == pytest.approx((0.5 + 5 / 6 + 1) / 3)
    assert recall_chance(torch.eye(50, dtype=torch.bool), 5) == pytest.approx(5 / 50)
    gen = torch.Generator().manual_seed(0)
    hits = [recall_at_k(torch.rand(3, 4, generator=gen), 2, fit) for _ in range(4000)]
    assert sum(hits) / len(hits) == pytest.approx(recall_chance(fit, 2), abs=0.02)


# ------------------------------------------------------------------------------------------ training
def test_train_clip_learns_and_keeps_a_frozen_temperature():
    data = captioned_shapes(128, "train", seed=0)
    vocab = caption_vocabulary()
    tokens = vocab.encode(data.captions, context_length())
    model = tiny_clip()
    calls = []

    def evaluate(m):
        calls.append(m.training)
        return {"scale": m.logit_scale_value}

    images = standardizer(data.images)(data.images)
    history = train_clip(
        model, images, tokens, epochs=10, batch_size=32, lr=3e-3, evaluate=evaluate, eval_every=12
    )
    assert len(history.step) == 40 and history.seconds > 0
    assert [s for s, _ in history.evals] == [12, 24, 36, 40] and history.evals[-1][1][
        "scale"
    ] == history.scale[-1]
    assert (
        history.mean_loss(4) < math.log(32) - 0.4
    )  # log B: the loss of equal logits (the first steps sit there)
    assert all(0 < s <= MAX_LOGIT_SCALE for s in history.scale)
    frozen = tiny_clip(init_temperature=1.0, learn_temperature=False)
    history = train_clip(frozen, data.images, tokens, epochs=1, batch_size=32)
    assert set(history.scale) == {1.0}
    assert min(history.loss) >= clip_loss_floor(32, 1.0) - 1e-6
    with pytest.raises(ValueError, match="no full batch"):
        train_clip(model, data.images[:8], tokens[:8], epochs=1, batch_size=32)


def test_train_clip_with_positives_records_each_batch_floor_and_trains_multi_positive():
    data = captioned_shapes(128, "train", seed=0)
    tokens = caption_vocabulary().encode(data.captions, context_length())
    seen = []

    def positives(index):
        seen.append(index.clone())
        return data.fit(index)

    history = train_clip(tiny_clip(), data.images, tokens, epochs=2, batch_size=32, lr=2e-3,
                         loss="multi_positive", positives=positives)  # fmt: skip
    assert len(history.floor) == len(history.step) == 8 and len(seen) == 8
    assert sorted(torch.cat(seen[:4]).tolist()) == list(range(128))  # each epoch visits every pair once
    assert all(f == pytest.approx(content_loss_floor(data.fit(i))) for f, i in zip(history.floor, seen))
    assert all(loss >= f - 1e-6 for loss, f in zip(history.loss, history.floor))
    assert history.mean_floor(4) == pytest.approx(sum(history.floor[-4:]) / 4)
    assert history.mean_loss(2) < history.loss[0]
    with pytest.raises(ValueError, match="needs positives"):
        train_clip(tiny_clip(), data.images, tokens, epochs=1, batch_size=32, loss="multi_positive")
    with pytest.raises(ValueError, match="unknown loss"):
        train_clip(tiny_clip(), data.images, tokens, epochs=1, batch_size=32, loss="siglip")
    with pytest.raises(ValueError, match="positives="):
        train_clip(tiny_clip(), data.images, tokens, epochs=1, batch_size=32).mean_floor()
