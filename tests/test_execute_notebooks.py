"""The notebook runner behind `make execute-all`: it names the failing notebook and cell, and exits 1."""

import re
from pathlib import Path

import nbformat

from scripts import execute_notebooks as runner


def _notebook(path: Path, sources: list[str], figures: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["course"] = {"figures": figures}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _use_fake_repo(monkeypatch, root: Path, names: list[str]) -> None:
    monkeypatch.setattr(runner, "repo_root", lambda: root)
    monkeypatch.setattr(runner, "select_notebooks", lambda selectors: [Path(n) for n in names])
    monkeypatch.setattr(
        runner,
        "declared_figures",
        lambda nb: nbformat.read(root / nb, as_version=4).metadata["course"]["figures"],
    )


def test_failure_names_notebook_and_cell_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    _notebook(tmp_path / "week6/01_ok.ipynb", ['PROFILE = "quick"', "print(PROFILE)"], [])
    _notebook(tmp_path / "week6/02_bad.ipynb", ['PROFILE = "quick"', "x = 1", "1 / 0"], [])
    _use_fake_repo(monkeypatch, tmp_path, ["week6/01_ok.ipynb", "week6/02_bad.ipynb"])
    assert runner.main(["--profile", "full"]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"^week6/01_ok.ipynb +ok +[\d.]+$", out, re.M)
    assert re.search(r"^week6/02_bad.ipynb +FAILED +[\d.]+$", out, re.M)
    assert "week6/02_bad.ipynb: cell" in err and "ZeroDivisionError" in err
    executed = nbformat.read(tmp_path / "outputs/executed/week6/01_ok.ipynb", as_version=4)
    assert "full" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    # the failed notebook is written too (once, at its error), with the traceback the message points to
    failed = nbformat.read(tmp_path / "outputs/executed/week6/02_bad.ipynb", as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for c in failed.cells for o in c.get("outputs", []))


def test_missing_declared_figure_fails(tmp_path, monkeypatch, capsys):
    _notebook(tmp_path / "week6/03_nofig.ipynb", ['PROFILE = "quick"'], ["week6/03_missing.png"])
    _use_fake_repo(monkeypatch, tmp_path, ["week6/03_nofig.ipynb"])
    assert runner.main([]) == 1
    assert "did not write its declared figures: week6/03_missing.png" in capsys.readouterr().err
