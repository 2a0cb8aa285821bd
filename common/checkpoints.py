"""Checkpoints: the one way the course saves and loads weights, and its committed, hash-verified models.

- :func:`save` writes ``torch.save(state)`` to a temporary file and renames it (a crash never leaves half a
  file); keep ``state`` to tensors, numbers, strings, lists and dicts so that :func:`load` can use
  ``weights_only=True`` (no code from the file runs).
- The course-trained models live in ``checkpoints/`` at the top of the repository, listed in
  ``checkpoints/manifest.json`` with their sha256, the command that made them, the seed, the final metrics
  of the training log, the date and the machine. ``make checkpoints`` (``scripts/train_checkpoints.py``)
  writes both; :func:`load_course_checkpoint` checks the hash before loading.
- :func:`vit_state` / :func:`build_vit` turn a ``VisionTransformer`` into a storable dict (fp16 weights, the
  constructor arguments) and back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import torch

from common.course import repo_root
from common.vit import VisionTransformer

MISSING_HINT = "run `make checkpoints` to train it (see the README)"


class CheckpointError(RuntimeError):
    """A course checkpoint is missing or does not match its manifest."""


def save(path: str | Path, **state) -> Path:
    """``torch.save(state)`` to a temporary file beside ``path``, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave a renamed stub
        os.replace(tmp, path)  # readers see the old file or the new one, never a part
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing file says how to make it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train it first or fix the path.")
    return torch.load(path, map_location=map_location, weights_only=True)


# ---------------------------------------------------------------------------------------------- ViT state
def vit_state(model: VisionTransformer, config: dict, half: bool = True) -> dict:
    """The constructor arguments and the weights (fp16 by default: half the size, same accuracy to ~0.1 %)."""
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return {"config": dict(config), "weights": {k: v.detach().cpu() for k, v in weights.items()}}


def build_vit(state: dict) -> VisionTransformer:
    """A float32 ``VisionTransformer`` from :func:`vit_state`'s dict."""
    model = VisionTransformer(**state["config"])
    model.load_state_dict({k: v.float() for k, v in state["weights"].items()})
    return model


# ---------------------------------------------------------------------------------------------- course models
def course_dir() -> Path:
    return repo_root() / "checkpoints"


def manifest_path() -> Path:
    return course_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record(name: str, path: Path, **info) -> dict:
    """Add or replace ``name``'s manifest entry: file, sha256, size, and ``info`` (command, seed, metrics...).
    Safe when two trainings finish together (``make checkpoints`` runs them side by side): a file lock."""
    entry = {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, **info}
    with open(course_dir() / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest()
        manifest[name] = entry
        manifest_path().write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def load_course_checkpoint(name: str) -> tuple[dict, dict]:
    """``(state, manifest entry)`` of a course model, after checking its sha256 against the manifest."""
    entry = read_manifest().get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint missing: {name!r} is not in {manifest_path()}; {MISSING_HINT}.")
    path = course_dir() / entry["file"]
    if not path.exists():
        raise CheckpointError(f"checkpoint missing: {path}; {MISSING_HINT}.")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise CheckpointError(
            f"{path} does not match its manifest (sha256 {actual[:12]}... != {entry['sha256'][:12]}...): "
            f"the file changed or is a Git LFS pointer; restore it with git or {MISSING_HINT}."
        )
    return load(path), entry
