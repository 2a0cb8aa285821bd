"""One plotting style, one way to save figures, and the attention heatmap used across the labs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

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


def savefig(fig: plt.Figure, name: str, show: bool = True) -> None:
    """Save ``fig`` as ``outputs/<name>`` (e.g. ``"week6/01_scaling_effect.png"``), show it inline, close it.

    The file goes to :func:`common.course.outputs_dir`; the path printed is relative to it, so notebook
    outputs do not depend on the machine. Shows the figure only with ``show`` inside IPython. Returns nothing,
    so a notebook cell ending in ``savefig(...)`` shows no extra output.
    """
    path = Path(name)
    if path.suffix != ".png" or len(path.parts) != 2:
        raise ValueError(f"figure name must look like 'week6/01_name.png', got {name!r}.")
    target = outputs_dir(path.parts[0]) / path.name
    fig.savefig(target)
    print(f"saved outputs/{path.as_posix()}")  # relative to the outputs folder: the same on every machine
    if show:
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                display(fig)
        except ImportError:
            pass
    plt.close(fig)


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
