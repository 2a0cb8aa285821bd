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
    check_info_nce,
    check_loss_floor,
    check_prompt_ensemble,
    class_embeddings,
    clip_loss,
    clip_loss_floor,
    encode_texts,
    ensemble_prompts,
    recall_at_k,
    train_clip,
)
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

    history = train_clip(
        model, data.images, tokens, epochs=4, batch_size=32, lr=2e-3, evaluate=evaluate, eval_every=6
    )
    assert len(history.step) == 16 and history.seconds > 0
    assert [s for s, _ in history.evals] == [6, 12, 16] and history.evals[-1][1]["scale"] == history.scale[-1]
    assert history.mean_loss(4) < history.loss[0] - 0.3
    assert all(0 < s <= MAX_LOGIT_SCALE for s in history.scale)
    frozen = tiny_clip(init_temperature=1.0, learn_temperature=False)
    history = train_clip(frozen, data.images, tokens, epochs=1, batch_size=32)
    assert set(history.scale) == {1.0}
    assert min(history.loss) >= clip_loss_floor(32, 1.0) - 1e-6
    with pytest.raises(ValueError, match="no full batch"):
        train_clip(model, data.images[:8], tokens[:8], epochs=1, batch_size=32)


# ------------------------------------------------------------------------------------------ exercises
def test_info_nce_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_info_nce(clip_loss)
    assert "[pass] InfoNCE" in exercise_output("InfoNCE", lambda: check_info_nce(clip_loss))
    target = torch.arange

    with pytest.raises(AssertionError, match="one direction only"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z))))
    with pytest.raises(AssertionError, match="added the two directions"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z))) + F.cross_entropy(z.T, target(len(z))))
    with pytest.raises(AssertionError, match="diagonal"):
        check_info_nce(
            lambda z: (F.cross_entropy(z, target(len(z)).flip(0)) + F.cross_entropy(z.T, target(len(z)))) / 2
        )
    with pytest.raises(AssertionError, match="scalar"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z)), reduction="none"))
    assert "[fail] InfoNCE: you computed one direction only" in exercise_output(
        "InfoNCE", lambda: check_info_nce(lambda z: F.cross_entropy(z, target(len(z))))
    )


def test_prompt_ensemble_check_accepts_the_reference_and_explains_wrong_answers():
    check_prompt_ensemble(ensemble_prompts)
    with pytest.raises(AssertionError, match="before averaging"):
        check_prompt_ensemble(lambda e: F.normalize(e.mean(1), dim=-1))
    with pytest.raises(AssertionError, match="not unit vectors"):
        check_prompt_ensemble(lambda e: F.normalize(e, dim=-1).mean(1))
    with pytest.raises(AssertionError, match=r"\(4, 8\)"):
        check_prompt_ensemble(lambda e: F.normalize(e, dim=-1))


def test_loss_floor_check_accepts_the_reference_and_explains_wrong_answers():
    check_loss_floor(clip_loss_floor, measured=[(64, 1.0, 3.4)])
    with pytest.raises(AssertionError, match="simplex"):
        check_loss_floor(lambda b, s: math.log1p((b - 1) * math.exp(-2 * s)))
    with pytest.raises(AssertionError, match="learnt nothing"):
        check_loss_floor(lambda b, s: math.log(b))
    with pytest.raises(AssertionError, match="below your floor"):
        check_loss_floor(clip_loss_floor, measured=[(64, 1.0, 2.0)])
    with pytest.raises(AssertionError, match="expected"):
        check_loss_floor(lambda b, s: 0.0)
