"""One plotting style, one way to save figures, and the attention heatmap used across the labs."""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from PIL import Image

from common.course import outputs_dir


def set_style() -> None:
    """The course's figure style: seaborn's whitegrid, readable fonts, moderate inline size."""
    sns.set_theme(style="whitegrid", context="notebook", palette="deep")
    plt.rcParams.update(
        {
            "figure.dpi": 90,
            "savefig.dpi": 130,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "figure.autolayout": False,
        }
    )


_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from (?:current font|font\(s\) (.*?))\.?$")


def render_checking_glyphs(fig: plt.Figure, render=None) -> None:
    """Render ``fig`` (``render()``, default: draw its canvas) and raise if a character had no glyph in the font.

    Matplotlib only warns when a font lacks a character and then draws an empty box (the figure's Korean text,
    say, turns into squares). The course's figures are in English with the default font; this turns a missing
    glyph into an error that names the characters, so a figure cannot silently lose its text on some machine.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (render or fig.canvas.draw)()
    found = [m for w in caught if (m := _MISSING_GLYPH.search(str(w.message)))]
    missing = "".join(sorted({chr(int(m.group(1))) for m in found}))
    fonts = ", ".join(sorted({m.group(2) or "the current font" for m in found}))
    for w in caught:  # everything else is passed on as it came
        if not _MISSING_GLYPH.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        raise ValueError(
            f'the figure\'s font ({fonts}) has no glyph for "{missing}": '
            "these characters would render as empty boxes. Keep figure text in English, or install a font that "
            "has them through a package (e.g. koreanize-matplotlib for Hangul) and select it in rcParams."
        )


def savefig(fig: plt.Figure, name: str, show: bool = True) -> None:
    """Save ``fig`` as ``outputs/<name>`` (e.g. ``"week6/01_scaling_effect.png"``), show it inline, close it.

    The file goes to :func:`common.course.outputs_dir`; the path printed is relative to it, so notebook
    outputs do not depend on the machine. Shows the figure only with ``show`` inside IPython. Returns nothing,
    so a notebook cell ending in ``savefig(...)`` shows no extra output. Raises if a character of the figure's
    text has no glyph in its font (:func:`render_checking_glyphs`).
    """
    path = Path(name)
    if path.suffix != ".png" or len(path.parts) != 2:
        raise ValueError(f"figure name must look like 'week6/01_name.png', got {name!r}.")
    target = outputs_dir(path.parts[0]) / path.name
    buffer = io.BytesIO()
    render_checking_glyphs(fig, lambda: fig.savefig(buffer, format="png"))
    target.write_bytes(buffer.getvalue())
    print(f"saved outputs/{path.as_posix()}")  # relative to the outputs folder: the same on every machine
    if show:
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                display(_inline_png(fig, buffer.getvalue()), raw=True)
        except ImportError:
            pass
    plt.close(fig)


def _inline_png(fig: plt.Figure, png: bytes) -> dict:
    """What the inline backend would show for ``fig`` (its PNG at ``figure.dpi``, its repr as text), made from the
    saved PNG scaled down (area averaging) instead of a second rendering: the same picture in about a tenth of
    the time (a second rendering was about half of every figure's cost, some 8 s in labs 6.1-6.4)."""
    scale = fig.dpi / plt.rcParams["savefig.dpi"] if plt.rcParams["savefig.dpi"] != "figure" else 1.0
    if scale < 1:
        image = Image.open(io.BytesIO(png))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        out = io.BytesIO()
        image.resize(size, Image.Resampling.BOX).save(out, format="png")
        png = out.getvalue()
    return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": repr(fig)}


def attention_heatmap(
    weights,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
    annot: bool | None = None,
    cmap: str = "viridis",
    vmax: float | None = None,
    cbar: bool = True,
) -> plt.Axes:
    """Heatmap of an (n_queries, n_keys) weight matrix: rows are queries, columns the keys they attend to."""
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(
            f"attention_heatmap needs a 2-D matrix, got shape {w.shape}; select one head/example."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.5 * w.shape[1], 0.8 + 0.45 * w.shape[0]))
    annot = w.size <= 100 if annot is None else annot
    sns.heatmap(
        w,
        ax=ax,
        cmap=cmap,
        vmin=0,
        vmax=vmax,
        annot=annot,
        fmt=".2f",
        square=True,
        cbar=cbar,
        xticklabels=list(x_labels) if x_labels is not None else "auto",
        yticklabels=list(y_labels) if y_labels is not None else "auto",
        annot_kws={"fontsize": 8},
    )
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    return ax
