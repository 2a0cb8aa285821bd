import pytest

from common import course
from common.course import REPO_SLUG, SETUP_CELL, check_exercise, colab_url, select_notebooks


def test_setup_cell_compiles_and_uses_the_slug():
    compile(SETUP_CELL, "setup", "exec")
    assert f"https://github.com/{REPO_SLUG}.git" in SETUP_CELL
    assert "torch" not in SETUP_CELL.split("pip")[-1], "Colab's torch must not be reinstalled"


def test_colab_url_points_at_the_file():
    assert colab_url("week6/01_attention_basics.ipynb").endswith(
        f"github/{REPO_SLUG}/blob/main/week6/01_attention_basics.ipynb"
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
    root = course.repo_root()
    assert (root / "common" / "course.py").exists()
    out = course.outputs_dir("week6")
    assert out == root / "outputs" / "week6" and out.is_dir()
