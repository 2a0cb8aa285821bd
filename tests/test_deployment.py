"""common.deployment against eager PyTorch: the ONNX export at several batch sizes (the batch axis is really
dynamic), int8 keeping the course ViT's top-1 answers, the agreement numbers on a hand example, and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common import checkpoints, deployment
from common import reference_models as ref
from common.vit import VisionTransformer


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=16, patch_size=8, num_classes=6, embed_dim=32, depth=1, num_heads=2
    ).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return deployment.export_onnx(tiny, torch.randn(2, 3, 16, 16), path)


@pytest.mark.parametrize("level", deployment.GRAPH_LEVELS)
def test_exported_model_equals_eager_at_every_batch_size(tiny, tiny_onnx, level):
    session = deployment.onnx_session(tiny_onnx, level=level)
    assert isinstance(session.input_shape[0], str), "the batch axis must stay symbolic"
    for batch in (1, 3, 17, 64):
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            want = tiny(x)
        got = session(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_fixed_batch_export_refuses_other_batches_with_the_fix(tiny, tmp_path):
    path = deployment.export_onnx(
        tiny, torch.randn(2, 3, 16, 16), tmp_path / "fixed.onnx", dynamic_batch=False
    )
    session = deployment.onnx_session(path)
    assert session.input_shape == (2, 3, 16, 16)
    torch.testing.assert_close(
        session(torch.ones(2, 3, 16, 16)), tiny(torch.ones(2, 3, 16, 16)), atol=1e-5, rtol=1e-4
    )
    with pytest.raises(ValueError, match=r"axis 0 must be 2\).*re-export"):
        session(torch.ones(3, 3, 16, 16))


def test_unsupported_inputs_name_the_fix(tiny_onnx):
    session = deployment.onnx_session(tiny_onnx)
    with pytest.raises(ValueError, match=r"axis 2 must be 16\): resize"):
        session(torch.ones(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"float32.*x\.float\(\)"):
        session(torch.ones(1, 3, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"add the batch axis with x\[None\]"):
        session(torch.ones(3, 16, 16))
    with pytest.raises(ValueError, match="torch.Tensor"):
        session([[1.0]])
    with pytest.raises(ValueError, match="unknown graph-optimisation level 'max'"):
        deployment.onnx_session(tiny_onnx, level="max")
    with pytest.raises(ValueError, match="export one first"):
        deployment.onnx_session(tiny_onnx.with_name("missing.onnx"))


class BranchesOnBatch(nn.Module):
    """Exports without complaint, but only for batch 2: the exporter specialises the axis silently."""

    def forward(self, x):
        if x.shape[0] == 2:
            return x.flatten(1) * 2
        return x.flatten(1)


def test_a_failed_export_says_what_to_change(tiny, tmp_path):
    with pytest.raises(deployment.ExportError, match=r"fixed the batch axis.*Remove that branch"):
        deployment.export_onnx(BranchesOnBatch().eval(), torch.randn(2, 3, 4, 4), tmp_path / "b.onnx")
    with pytest.raises(ValueError, match=r"call model.eval\(\)"):
        deployment.export_onnx(nn.Flatten().train(), torch.randn(2, 3, 4, 4), tmp_path / "t.onnx")
    with pytest.raises(ValueError, match="float32"):
        deployment.export_onnx(tiny, torch.ones(2, 3, 16, 16, dtype=torch.int64), tmp_path / "i.onnx")


def test_int8_keeps_the_course_vits_top1_on_a_fixed_set(tmp_path):
    state, _ = checkpoints.load_course_checkpoint("vit_shapes")
    model = checkpoints.build_vit(state).eval()
    _, test, _ = ref.classification_data(64, 512, seed=0)
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = test.labels
    reference = deployment.logits_of(model, images)
    path = deployment.export_onnx(model, images[:2], tmp_path / "vit.onnx")
    int8 = deployment.quantize_onnx_int8(path, tmp_path / "vit.int8.onnx")
    assert deployment.saved_bytes(int8) < 0.5 * deployment.saved_bytes(path)  # int8 weights: ~1/4 of fp32
    for fn in (deployment.onnx_session(int8), deployment.quantize_torch_int8(model)):
        result = deployment.agreement(reference, deployment.logits_of(fn, images), labels)
        assert result.top1_agreement >= 0.99
        assert abs(result.accuracy_change) <= 1.0
        assert 0 < result.max_abs_diff < 1.0  # quantization moves the logits, a little
    fp32 = deployment.agreement(
        reference, deployment.logits_of(deployment.onnx_session(path), images), labels
    )
    assert fp32.top1_agreement == 1.0 and fp32.max_abs_diff < 1e-4 and fp32.accuracy_change == 0.0


def test_agreement_on_a_hand_example():
    reference = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    logits = torch.tensor([[2.0, 1.5, 0.0], [0.0, 1.0, 1.5], [1.0, 0.0, 0.5], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 2, 2])
    result = deployment.agreement(reference, logits, labels)
    assert result.max_abs_diff == 2.0  # row 2, class 1: 3 -> 1
    assert result.top1_agreement == 0.75  # row 2's top-1 moved from class 1 to class 2
    assert result.reference_accuracy == 0.75 and result.accuracy == 0.50  # row 2 was right, is now wrong
    assert result.accuracy_change == pytest.approx(-25.0)
    assert deployment.agreement(reference, logits).accuracy_change is None
    with pytest.raises(ValueError, match="one label per image"):
        deployment.agreement(reference, logits, labels[:3])
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        deployment.agreement(reference, logits[:3])


def test_logits_of_batches_like_one_call(tiny):
    x = torch.randn(23, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(deployment.logits_of(tiny, x, batch_size=5), tiny(x))
    with pytest.raises(ValueError, match="batch_size"):
        deployment.logits_of(tiny, x, batch_size=0)


def test_autocast_and_channels_last_follow_eager():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        want = cnn(x)
        torch.testing.assert_close(deployment.autocast(cnn)(x), want, atol=0.05, rtol=0.05)  # bf16: 8 bits
        assert deployment.autocast(cnn)(x).dtype == torch.float32
        torch.testing.assert_close(deployment.channels_last(cnn)(x), want, atol=1e-5, rtol=1e-5)


def test_gpu_only_paths_give_one_line_reasons(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for path in deployment.GPU_ONLY:
        reason = deployment.gpu_only_reason(path)
        assert reason.startswith("skipped: ") and "CUDA GPU" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="unknown GPU-only path"):
        deployment.gpu_only_reason("fp8")


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime", "int8"])
def test_build_runtime_runs_every_batch(tiny, runtime, tmp_path):
    fn, info = deployment.build_runtime(tiny, torch.randn(1, 3, 16, 16), runtime, tmp_path)
    assert info["bytes"] > 0 and info["setup_s"] >= 0
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want, got = tiny(x), fn(x)
    tolerance = 0.2 if runtime == "int8" else 1e-4
    torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        deployment.build_runtime(tiny, x, "tensorrt")


def test_count_torch_calls_counts_each_python_level_call():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    assert deployment.count_torch_calls(model, torch.randn(3, 4)) == 3  # F.linear, F.relu, F.linear
    assert deployment.count_torch_calls(lambda x: (x + 1).sum(), torch.randn(3)) == 2


def test_autocast_trains_float32_weights():
    model = deployment.autocast(nn.Linear(4, 2))
    loss = model(torch.randn(3, 4)).square().mean()
    loss.backward()
    assert model.model.weight.dtype == torch.float32 and model.model.weight.grad.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ make gpu-check
def test_gpu_check_without_cuda_stops_with_the_reason(monkeypatch, capsys):
    from scripts import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["week4/05"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_check_dry_run_writes_the_report_frame(tmp_path, monkeypatch):
    from common.course import notebooks
    from scripts import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--dry-run", "--report", str(report)]) == 0
    text = report.read_text()
    assert "dry run: nothing executed" in text
    for nb in notebooks():
        assert f"| {nb.as_posix()} | not run | 0.0 |" in text


def test_gpu_check_report_collects_targets_and_gpu_lines(tmp_path):
    import json

    from scripts import gpu_check

    executed = tmp_path / "05.ipynb"
    lines = ["target fastest: 3.1x (goal >= 3x): met\n", "fp16 autocast: 1.2 ms -> 2.00x\n", "other\n"]
    cell = {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": lines}]}
    executed.write_text(json.dumps({"cells": [cell]}))
    targets, gpu = gpu_check.findings(gpu_check.DEPLOYMENT, executed)
    assert targets == ["target fastest: 3.1x (goal >= 3x): met"] and gpu == ["fp16 autocast: 1.2 ms -> 2.00x"]
    assert gpu_check.findings("week6/01_attention_basics.ipynb", executed)[1] == []  # GPU lines: lab 4.5 only
    rows = [
        {"notebook": gpu_check.DEPLOYMENT, "status": "ok", "seconds": 300.0, "targets": targets, "gpu": gpu,
         "error": None},
        {"notebook": "week6/01", "status": "FAILED", "seconds": 200.5, "targets": [], "gpu": [], "error": "cell 3: X"},
    ]  # fmt: skip
    text = gpu_check.report(rows, device="NVIDIA H200", budget=480, environment="env")
    assert "1/2 notebooks passed; total 500.5 s, OVER the budget of 480 s" in text
    assert f"- {gpu_check.DEPLOYMENT}: `target fastest: 3.1x (goal >= 3x): met`" in text
    assert "- `fp16 autocast: 1.2 ms -> 2.00x`" in text and "- week6/01: cell 3: X" in text


def test_first_call_seconds_runs_the_call_once_without_autograd():
    calls = []

    def fn(x):
        calls.append(torch.is_grad_enabled())
        return x * 2

    seconds = deployment.first_call_seconds(fn, torch.ones(3, requires_grad=True))
    assert calls == [False] and seconds >= 0
