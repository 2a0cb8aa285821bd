import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from common.env import repo_root  # noqa: E402
from common.plotting import attention_heatmap, savefig  # noqa: E402


def test_savefig_writes_under_outputs_and_prints_a_relative_path(capsys):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    savefig(fig, "tests/00_smoke.png", show=False)
    path = repo_root() / "outputs" / "tests" / "00_smoke.png"
    try:
        assert path.stat().st_size > 0
        assert capsys.readouterr().out.strip() == "saved outputs/tests/00_smoke.png"
    finally:
        path.unlink()
        path.parent.rmdir()


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
