"""The course's registry: where the repository lives, the notebooks in course order, their figures.

The repository slug is configured here and nowhere else (Colab badges and the setup cell use it).
"""

from __future__ import annotations

import json
from pathlib import Path

from common.env import repo_root

REPO_SLUG = "attention-vit-course/attention-vit-labs"
BRANCH = "main"
# Week 6 (attention, the transformer) comes first: week 4's ViT is built from its blocks.
WEEK_ORDER = ("week6", "week4")

SETUP_CELL = f"""\
# Setup: on Colab, fetch the course and install its helper package `common`; locally nothing happens.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    repo = "/content/{REPO_SLUG.split("/")[1]}"
    if not os.path.isdir(repo):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/{REPO_SLUG}.git", repo], check=True)
    # Colab's own torch/torchvision stay; only our package and what Colab lacks get installed.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", repo], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "timm", "seaborn"], check=True)
    sys.path.insert(0, repo)"""


def notebooks() -> list[Path]:
    """Every lab notebook, as paths relative to the repository, in course order."""
    root = repo_root()
    return [p.relative_to(root) for week in WEEK_ORDER for p in sorted((root / week).glob("[0-9]*.ipynb"))]


def select_notebooks(selectors: list[str] | None = None) -> list[Path]:
    """The notebooks matching any selector (a path or a fragment such as ``week6/01``); all if none."""
    every = notebooks()
    if not selectors:
        return every
    chosen = [nb for nb in every if any(s.strip("./") in nb.as_posix() for s in selectors)]
    if not chosen:
        names = ", ".join(nb.as_posix() for nb in every)
        raise ValueError(f"NOTEBOOKS={' '.join(selectors)!r} matches no notebook; choose from: {names}.")
    return chosen


def colab_url(notebook: Path | str) -> str:
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{Path(notebook).as_posix()}"


def colab_badge(notebook: Path | str) -> str:
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    )


def declared_figures(notebook: Path | str) -> list[str]:
    """Figures a notebook promises to write (``metadata.course.figures``), e.g. ``week6/01_x.png``."""
    nb = json.loads((repo_root() / notebook).read_text(encoding="utf-8"))
    return list(nb.get("metadata", {}).get("course", {}).get("figures", []))
