"""Checkpoints: atomic, weights-only saving, and the committed course models against their manifest."""

import json
import os

import pytest
import torch
from torchvision.transforms import v2

from common import checkpoints, seq2seq
from common import reference_models as ref
from common.dates import TARGET_VOCAB, date_splits
from common.dino_train import DINOConfig
from common.vit import VisionTransformer

TINY = dict(img_size=32, patch_size=8, num_classes=6, embed_dim=32, depth=2, num_heads=2)
MANIFEST = checkpoints.read_manifest()


def _torch_save_that_dies_midway(obj, f, *args, **kwargs):
    """Write a few bytes where torch.save was told to (a path or an open file), then fail like a full disk."""
    if hasattr(f, "write"):
        f.write(b"half a checkpoint")
        f.flush()
    else:
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
    raise OSError("disk full")


def _replace_that_fails(src, dst, *args, **kwargs):
    raise OSError("rename failed")


@pytest.mark.parametrize("crash", ["torch.save", "os.replace"])
def test_save_replaces_a_file_whole_or_not_at_all(tmp_path, monkeypatch, crash):
    # A plain torch.save(state, path) would leave "half a checkpoint" in m.pt (the load below fails) and never
    # call os.replace; a temporary file that is not cleaned up shows in the directory listing.
    path = checkpoints.save(tmp_path / "m.pt", step=1)
    before = path.read_bytes()
    if crash == "torch.save":
        monkeypatch.setattr(torch, "save", _torch_save_that_dies_midway)
    else:
        monkeypatch.setattr(os, "replace", _replace_that_fails)
    with pytest.raises(OSError, match="disk full|rename failed"):
        checkpoints.save(path, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before and checkpoints.load(path) == {"step": 1}  # the old file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # and nothing half-written is left beside it
    checkpoints.save(path, step=2)
    assert checkpoints.load(path) == {"step": 2}  # without a crash, the new state replaces the old


def test_load_refuses_arbitrary_objects_and_names_a_missing_file(tmp_path):
    torch.save({"object": DINOConfig()}, tmp_path / "unsafe.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported|global"):
        checkpoints.load(tmp_path / "unsafe.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoints.load(tmp_path / "missing.pt")


def test_vit_state_round_trip_in_fp16_keeps_the_outputs():
    torch.manual_seed(0)
    model = VisionTransformer(**TINY).eval()
    state = checkpoints.vit_state(model, TINY)
    assert all(v.dtype == torch.float16 for v in state["weights"].values() if v.is_floating_point())
    rebuilt = checkpoints.build_vit(state).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), atol=2e-3, rtol=2e-2)  # fp16: 11 significant bits


def test_course_checkpoint_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "course_dir", lambda: tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="make checkpoints"):
        checkpoints.load_course_checkpoint("vit_shapes")
    path = checkpoints.save(tmp_path / "m.pt", step=1)
    checkpoints.record("m", path, seed=0)
    assert checkpoints.load_course_checkpoint("m")[0] == {"step": 1}
    path.write_bytes(path.read_bytes() + b"\0")  # any change to the file
    with pytest.raises(checkpoints.CheckpointError, match="does not match its manifest"):
        checkpoints.load_course_checkpoint("m")
    (tmp_path / "m.pt").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="checkpoint missing"):
        checkpoints.load_course_checkpoint("m")


# --------------------------------------------------------------------------- the committed course models
def test_the_manifest_lists_the_course_models_within_the_size_budget():
    assert set(MANIFEST) == {"vit_shapes", "dino_shapes", "dino_supervised", "date_transformer"}, (
        "run `make checkpoints`"
    )
    assert sum(e["bytes"] for e in MANIFEST.values()) <= 10 * 2**20
    for entry in MANIFEST.values():
        assert {"command", "seed", "metrics", "date", "machine", "train_seconds"} <= set(entry)
    json.dumps(MANIFEST)  # plain data


def test_make_checkpoints_runs_the_commands_the_manifest_records():
    # the manifest's "exact command" is what `make checkpoints` runs, so a retrain reproduces the committed models
    makefile = (checkpoints.course_dir().parent / "Makefile").read_text()
    recipe = makefile.split("\ncheckpoints:", 1)[1].split("\n\n", 1)[0]
    run = {
        line.split("$(BIN)/", 1)[1].strip()
        for line in recipe.splitlines()
        if "scripts.train_checkpoints" in line
    }
    assert run == {entry["command"] for entry in MANIFEST.values()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_checkpoint_matches_its_sha256(name):
    path = checkpoints.course_dir() / MANIFEST[name]["file"]
    assert checkpoints.sha256(path) == MANIFEST[name]["sha256"], f"{path} differs from the manifest"


@pytest.mark.skipif("vit_shapes" not in MANIFEST, reason="no ViT checkpoint yet")
def test_vit_checkpoint_reproduces_its_test_accuracy():
    state, entry = checkpoints.load_course_checkpoint("vit_shapes")
    model = checkpoints.build_vit(state)
    sizes = ref.VIT_SIZES["course"]
    _, test, _ = ref.classification_data(64, sizes["n_test"], entry["seed"], state["data"]["background"])
    test.transform = v2.Normalize(state["mean"], state["std"])  # the training set's statistics, as stored
    acc = ref.accuracy(model, test)
    assert abs(acc - entry["metrics"]["test_accuracy"]) <= 0.01, (acc, entry["metrics"])


@pytest.mark.skipif("dino_shapes" not in MANIFEST, reason="no DINO checkpoint yet")
def test_dino_checkpoint_reproduces_its_knn_and_iou():
    state, entry = checkpoints.load_course_checkpoint("dino_shapes")
    data = ref.dino_data("course", seed=entry["seed"])
    assert data.normalize.mean == pytest.approx(state["mean"])
    assert state["data"]["background"] == ref.DINO_DATA["background"]
    metrics = ref.dino_metrics(
        ref.dino_from_checkpoint(state).teacher.backbone, data
    )  # as logged: test split
    assert abs(metrics["knn"] - entry["metrics"]["teacher_knn"]) <= 0.01
    assert abs(metrics["iou"] - entry["metrics"]["teacher_iou"]) <= 0.01


@pytest.mark.skipif("dino_supervised" not in MANIFEST, reason="no supervised DINO opponent yet")
def test_dino_supervised_checkpoint_reproduces_its_test_accuracy():
    state, entry = checkpoints.load_course_checkpoint("dino_supervised")
    model = checkpoints.build_vit(state)
    assert state["config"] == {**ref.DINO_BACKBONE, "num_classes": 6}  # DINO's backbone, a linear head
    _, test, _ = ref.dino_supervised_data(
        entry["seed"], split="test", stats=(state["mean"], state["std"]), n_train=64
    )
    assert abs(ref.accuracy(model, test) - entry["metrics"]["test_accuracy"]) <= 0.01


@pytest.mark.skipif("date_transformer" not in MANIFEST, reason="no lab-6.6 Transformer checkpoint yet")
def test_date_transformer_checkpoint_reproduces_its_exact_match_on_the_labs_split():
    state, entry = checkpoints.load_course_checkpoint("date_transformer")
    data = state["data"]
    assert data == seq2seq.CHECKPOINT_DATA  # lab 6.6's split: its test dates were never trained on
    splits = date_splits(data["n_train"], data["n_val"], data["n_test"], seed=data["seed"])
    models = seq2seq.models_from_checkpoint(state)
    assert len(models) == len(entry["metrics"]["test_exact_match"]) == len(state["recipe"]["seeds"])
    src, lengths, _ = splits.test.tensors()
    for model, logged in zip(models, entry["metrics"]["test_exact_match"], strict=True):
        # recomputed here from the strings: the ISO target the decoded characters must spell
        pred = seq2seq.greedy_decode(model, src, lengths, max_len=11)
        decoded = [TARGET_VOCAB.decode(row) for row in pred.tolist()]
        acc = sum(d == t for d, t in zip(decoded, splits.test.targets, strict=True)) / len(decoded)
        assert abs(acc - logged) <= 0.005, (acc, logged)
