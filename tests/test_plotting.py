import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common.plotting import attention_heatmap, render_checking_glyphs, savefig  # noqa: E402


def test_savefig_writes_under_the_outputs_folder_and_prints_a_relative_path(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUTS", str(tmp_path))  # never into the repository's outputs/
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    savefig(fig, "tests/00_smoke.png", show=False)
    assert (tmp_path / "tests" / "00_smoke.png").stat().st_size > 0
    assert capsys.readouterr().out.strip() == "saved outputs/tests/00_smoke.png"


def test_savefig_shows_what_the_inline_backend_would_show(tmp_path, monkeypatch):
    # The reference: matplotlib rendering the figure itself at figure.dpi, as the inline backend does.
    monkeypatch.setenv("COURSE_OUTPUTS", str(tmp_path))
    shown = []
    monkeypatch.setattr("IPython.get_ipython", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda data, raw=False: shown.append((data, raw)))
    with plt.rc_context({"figure.dpi": 90, "savefig.dpi": 130, "savefig.bbox": "tight"}):
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.imshow(torch.rand(8, 8).numpy(), cmap="viridis")
        ax.set_title("attention")
        expected = io.BytesIO()
        fig.savefig(expected, format="png", dpi=fig.dpi)
        text = repr(fig)
        savefig(fig, "tests/02_inline.png")
    ((data, raw),) = shown
    assert raw and data["text/plain"] == text
    got = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))
    reference = Image.open(expected)
    assert abs(got.width - reference.width) <= 2 and abs(got.height - reference.height) <= 2
    saved = Image.open(tmp_path / "tests" / "02_inline.png")
    # the file keeps savefig.dpi (130), the notebook shows figure.dpi (90)
    assert saved.width > 1.3 * got.width
    # the same picture: the mean colour of the shown image is that of matplotlib's own rendering
    assert np.allclose(
        np.asarray(got.convert("RGB")).mean((0, 1)), np.asarray(reference.convert("RGB")).mean((0, 1)), atol=6
    )


def test_savefig_rejects_names_without_week_folder():
    with pytest.raises(ValueError, match="week6/01_name.png"):
        savefig(plt.figure(), "figure.png", show=False)


def test_attention_heatmap_draws_the_matrix():
    w = torch.softmax(torch.randn(3, 4), -1)
    ax = attention_heatmap(w, list("abcd"), list("xyz"), title="t")
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    with pytest.raises(ValueError, match="2-D"):
        attention_heatmap(torch.rand(2, 3, 3))
    plt.close("all")


def test_a_character_without_a_glyph_is_an_error_that_names_it(tmp_path, monkeypatch):
    # Hangul and a private-use character are not in the default font (DejaVu Sans): matplotlib alone would
    # only warn and draw empty boxes.
    monkeypatch.setenv("COURSE_OUTPUTS", str(tmp_path))
    fig, ax = plt.subplots()
    ax.set_title("attention 어텐션 \ue000")
    with pytest.raises(ValueError, match="empty boxes") as err:
        savefig(fig, "tests/01_glyphs.png", show=False)
    assert all(ch in str(err.value) for ch in "어텐션\ue000")
    plt.close("all")


def test_english_text_and_mathtext_render_without_complaint():
    fig, ax = plt.subplots()
    ax.set_title(r"softmax($QK^\top/\sqrt{d_k}$) · 32×32 — α, β, ≈, →")
    render_checking_glyphs(fig)  # raises if any glyph were missing
    plt.close(fig)
