"""The course itself: where it lives, its profiles, its notebooks in order, their figures.

- :func:`repo_root`, :func:`outputs_dir`: the repository and its generated ``outputs/`` folder.
- ``PROFILES`` and :func:`resolve_profile`: every notebook's ``PROFILE`` parameter, ``quick`` or ``full``.
- :func:`notebooks`, :func:`select_notebooks`, :func:`colab_url`, :func:`colab_badge`,
  :func:`declared_figures`, ``SETUP_CELL``.

The repository slug is configured here and nowhere else (Colab badges and the setup cell use it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_SLUG = "attention-vit-course/attention-vit-labs"
BRANCH = "main"
# Week 6 (attention, the transformer) comes first: week 4's ViT is built from its blocks.
WEEK_ORDER = ("week6", "week4")
PROFILES = ("quick", "full")

SETUP_CELL = f"""\
# Setup: on Colab, fetch the course and install what Colab lacks, at the course's pinned versions.
# Locally nothing happens (`make setup` installed everything).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess
    from importlib import metadata

    repo = "/content/{REPO_SLUG.split("/")[1]}"
    if not os.path.isdir(repo):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/{REPO_SLUG}.git", repo], check=True)
    # requirements.txt is the one list of versions; Colab's torch, torchvision and what it already has stay.
    missing = []
    for line in open(f"{{repo}}/requirements.txt"):
        pin = line.split("#")[0].strip()
        if pin and not pin.startswith(("torch==", "torchvision==")):
            try:
                metadata.version(pin.split("==")[0])
            except metadata.PackageNotFoundError:
                missing.append(pin)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", repo], check=True)
    sys.path.insert(0, repo)
    print(f"Colab: torch {{metadata.version('torch')}}, timm {{metadata.version('timm')}}; installed {{missing or 'nothing'}}")"""


def _is_course(folder: Path) -> bool:
    # the committed checkpoints mark the course's top folder (the repository, or the app deployed as a Space)
    return (folder / "checkpoints" / "manifest.json").is_file()


def repo_root() -> Path:
    """The course's top folder (notebooks, ``checkpoints/``, ``outputs/``): ``$COURSE_ROOT`` if set; else the
    checkout this package sits in (an editable install, or running from the repository); else the nearest folder
    at or above the working directory that holds the course (a plain ``pip install .`` puts the package in
    site-packages, far from the notebooks)."""
    if root := os.environ.get("COURSE_ROOT"):
        if not _is_course(Path(root)):
            raise FileNotFoundError(
                f"COURSE_ROOT={root} does not hold the course (no checkpoints/manifest.json)."
            )
        return Path(root).resolve()
    for start in (Path(__file__).resolve().parent.parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if _is_course(folder):
                return folder
    raise FileNotFoundError(
        "cannot find the course's folder (the one with checkpoints/manifest.json): run from inside the repository "
        "or set COURSE_ROOT=/path/to/the/repository."
    )


def outputs_dir(*parts: str) -> Path:
    """``outputs/<parts...>``, created on first use: the folder named by ``$COURSE_OUTPUTS`` if set (tests,
    read-only checkouts), else ``outputs/`` in the repository."""
    root = os.environ.get("COURSE_OUTPUTS")
    path = (Path(root) if root else repo_root() / "outputs").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_profile(profile: str, **settings: dict[str, Any]) -> dict[str, Any]:
    """Return the settings of ``profile`` (``quick`` or ``full``), failing clearly on a typo; with no
    settings given, only check ``profile`` and return ``{}``.

    >>> resolve_profile("quick", quick={"epochs": 2}, full={"epochs": 30})
    {'epochs': 2}
    """
    if profile not in PROFILES:
        raise ValueError(f"Unknown PROFILE {profile!r}; use one of {PROFILES}.")
    if settings:
        if profile not in settings:
            raise ValueError(f"No settings given for profile {profile!r}.")
        return dict(settings[profile])
    return {}


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
