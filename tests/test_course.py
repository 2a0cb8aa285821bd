import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from common import course
from common.course import REPO_SLUG, SETUP_CELL, colab_url, select_notebooks
from common.exercises import check_exercise

COLAB_HAS = {"torch", "torchvision", "timm"}  # a simulated Colab: these are preinstalled, the rest is missing


def _run_setup_cell(monkeypatch, on_colab: bool) -> list[list[str]]:
    """Execute SETUP_CELL with subprocess.run recorded instead of run; for Colab a fake google.colab, a clone
    whose files are this checkout's, and only COLAB_HAS installed."""
    from importlib import metadata

    commands = []
    clone = f"/content/{REPO_SLUG.split('/')[1]}"

    def fake_version(name):
        if name.lower() not in COLAB_HAS:
            raise metadata.PackageNotFoundError(name)
        return "0.0"

    def open_in_clone(path, *args, **kwargs):  # "/content/<repo>/x" -> "<this checkout>/x"
        return open(str(path).replace(clone, str(course.repo_root()), 1), *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kwargs: commands.append(list(cmd)))
    monkeypatch.setattr(os.path, "isdir", lambda path: False)  # a fresh Colab machine: nothing cloned yet
    monkeypatch.setattr(metadata, "version", fake_version)
    monkeypatch.setattr(sys, "path", list(sys.path))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(SETUP_CELL, "setup", "exec"), {"open": open_in_clone})
    return commands


def test_setup_cell_clones_the_repository_and_leaves_colabs_torch_alone(monkeypatch):
    assert _run_setup_cell(monkeypatch, on_colab=False) == []  # locally nothing happens
    commands = _run_setup_cell(monkeypatch, on_colab=True)
    owner, name = REPO_SLUG.split("/")
    clone = ["git", "clone", "--depth", "1", f"https://github.com/{owner}/{name}.git", f"/content/{name}"]
    assert commands[0] == clone
    pips = commands[1:]
    assert pips and all(cmd[:4] == [sys.executable, "-m", "pip", "install"] for cmd in pips)
    assert ["-q", "--no-deps", "-e", f"/content/{name}"] in [cmd[4:] for cmd in pips]  # ours, no pinned deps
    installed = {arg.split("==")[0] for cmd in pips for arg in cmd[4:] if not arg.startswith("-")}
    assert not installed & {"torch", "torchvision", "torchaudio"}, "Colab's torch must not be reinstalled"
    assert {"seaborn", "scikit-learn"} <= installed  # what the simulated Colab lacks gets installed
    assert "timm" not in installed  # and what it has stays
    assert sys.path[0] == f"/content/{name}"


def test_colab_url_points_at_the_file():
    # Colab's documented form: https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/<path>
    assert colab_url("week6/01_attention_basics.ipynb") == (
        f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/week6/01_attention_basics.ipynb"
    )


def test_select_notebooks_rejects_unknown_names():
    with pytest.raises(ValueError, match="matches no notebook"):
        select_notebooks(["week9/99"])


def test_check_exercise_reports_each_outcome(capsys):
    def todo():
        raise NotImplementedError

    def wrong():
        assert 1 == 2, "one is not two"

    check_exercise("a", lambda: None)
    check_exercise("b", todo)
    check_exercise("c", wrong)
    out = capsys.readouterr().out
    assert "[pass] a" in out and "[todo] b" in out and "[fail] c: one is not two" in out


def test_resolve_profile():
    assert course.resolve_profile("full", quick={"n": 1}, full={"n": 9}) == {"n": 9}
    with pytest.raises(ValueError, match="Unknown PROFILE"):
        course.resolve_profile("fast", quick={}, full={})


def test_paths_are_inside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    monkeypatch.delenv("COURSE_OUTPUTS", raising=False)
    root = course.repo_root()
    assert root == Path(__file__).resolve().parent.parent  # this test file lives in <repo>/tests
    out = course.outputs_dir("week6")
    assert out == root / "outputs" / "week6" and out.is_dir()
    monkeypatch.setenv("COURSE_OUTPUTS", str(tmp_path / "elsewhere"))
    assert course.outputs_dir("a", "b") == tmp_path / "elsewhere" / "a" / "b"
    assert (tmp_path / "elsewhere" / "a" / "b").is_dir()


def test_a_plain_install_finds_the_course_from_the_working_directory(tmp_path):
    # `pip install .` (not editable) copies the package into site-packages, away from the notebooks and
    # checkpoints; a copy of `common/` on PYTHONPATH is the same situation without a build (works offline).
    site = tmp_path / "site"
    shutil.copytree(
        course.repo_root() / "common", site / "common", ignore=shutil.ignore_patterns("__pycache__")
    )
    script = "import common.course as c; print(c.__file__); print(c.repo_root())"
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("COURSE_ROOT", None)

    def run(cwd, **extra):
        return subprocess.run(
            [sys.executable, "-c", script], cwd=cwd, env={**env, **extra}, capture_output=True, text=True
        )

    inside = run(course.repo_root() / "week4")
    installed_at, root = inside.stdout.split()
    assert installed_at.startswith(str(site)) and Path(root) == course.repo_root()
    outside = run(tmp_path)
    assert outside.returncode != 0 and "COURSE_ROOT" in outside.stderr
    assert run(tmp_path, COURSE_ROOT=str(course.repo_root())).stdout.split()[1] == str(course.repo_root())
