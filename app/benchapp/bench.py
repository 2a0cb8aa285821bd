"""Tab 1: lab 4.3's model zoo, measured live on this machine with the course's own tools.

Models are the timm architectures of ``common.model_selection.FAMILIES`` (the tiny/small ``quick`` variant and
the ``base``-size ``full`` variant of each family), built as week4/03_model_comparison.ipynb builds them:
``timm.create_model(name, pretrained=False)``, random weights, since cost does not depend on the weights.
With the network, ``pretrained=True`` loads the released weights instead and the page shows top-5 ImageNet
predictions for the user's image.

Each row: parameters (``count_parameters``), FLOPs per image (``count_flops``, FlopCounterMode, on the meta
device), latency at batch 1 (median and IQR, ``measure_latency``: torch.utils.benchmark), throughput at the
chosen batch (``measure_throughput``) and peak memory at that batch (``measure_peak_memory``), all on the chosen
runtime (``common.deployment.RUNTIMES``: eager PyTorch, ``torch.compile``, ONNX Runtime, ONNX Runtime int8, built by
``common.deployment.build_runtime`` as lab 4.5 does), with its setup time (compile or export), the file it runs
from, and its largest logit difference from eager on the timed batch.

Before anything real is allocated the run is checked against the free memory (:func:`memory_estimate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import timm
import torch
from torch.overrides import TorchFunctionMode

from benchapp import InputError
from common.benchmark import (
    count_flops,
    count_parameters,
    free_memory_bytes,
    measure_latency,
    measure_peak_memory,
    measure_throughput,
)
from common.deployment import RUNTIMES, ExportError, build_runtime
from common.model_selection import FAMILIES
from common.runtime import OfflineError, is_online, require_online

MIN_SIZE, MAX_SIZE = 32, 512
MAX_BATCH = 64
MEMORY_SHARE = 0.5  # a run may plan to use at most half the free memory (lab 4.3's margin)
ACTIVATION_FACTOR = 3  # live tensors at once: an op's input, its output and a residual, each <= the largest
# Families whose timm models take (and need) the input size at construction: ViTs size their position table.
SIZED_FAMILIES = ("ViT", "DeiT", "Swin", "DINOv2")
COLUMNS = (
    "model", "family", "size", "weights", "runtime", "input_px", "batch", "params_M", "GFLOPs_per_image",
    "latency_ms", "latency_iqr_ms", "latency_runs", "throughput_img_s", "peak_MiB", "estimate_MiB", "setup_s",
    "file_MB", "max_dlogit_vs_eager",
)  # fmt: skip
RUNTIME_LABELS = {
    "eager": "eager PyTorch (fp32)",
    "compiled": "torch.compile (first call compiles: seconds to minutes)",
    "onnxruntime": "ONNX Runtime (CPU, all graph optimisations)",
    "int8": "ONNX Runtime int8 (dynamic quantization)",
}


@dataclass(frozen=True)
class ZooModel:
    name: str  # timm architecture
    family: str
    size: str  # "tiny/small" (the quick profile's variant) or "base" (the size the lab guide compares)
    kind: str


def zoo() -> dict[str, ZooModel]:
    """Every architecture of lab 4.3's zoo, tiny/small first, keyed by timm name."""
    models = {}
    for variant, size in (("quick", "tiny/small"), ("full", "base")):
        for family, fam in FAMILIES.items():
            name = getattr(fam, variant)
            models[name] = ZooModel(name, family, size, fam.kind)
    return models


def choice_label(model: ZooModel) -> str:
    return f"{model.family} · {model.name} ({model.size})"


def check_request(names, img_size, batch_size, runtime: str = "eager") -> tuple[list[ZooModel], int, int]:
    """The chosen models, size and batch, or :class:`InputError` saying what is wrong."""
    if runtime not in RUNTIMES:
        raise InputError(
            f"알 수 없는 런타임 / Unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}."
        )
    if isinstance(names, str):
        names = [names]
    names = [n for n in (names or []) if n]
    if not names:
        raise InputError("모델을 하나 이상 고르세요 / Choose at least one model.")
    known = zoo()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(
            f"알 수 없는 모델 / Unknown model name(s): {', '.join(map(repr, unknown))}. "
            f"Choose from lab 4.3's zoo: {', '.join(known)}."
        )
    try:
        size, batch = int(img_size), int(batch_size)
    except (TypeError, ValueError):
        raise InputError(
            "입력 크기와 배치는 정수여야 합니다 / Input size and batch size must be integers."
        ) from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"입력 크기 / Input size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}.")
    if not 1 <= batch <= MAX_BATCH:
        raise InputError(f"배치 크기 / Batch size must be between 1 and {MAX_BATCH}, got {batch}.")
    return [known[n] for n in dict.fromkeys(names)], size, batch


def build(
    name: str, img_size: int, *, on: str | torch.device = "cpu", pretrained: bool = False
) -> torch.nn.Module:
    """A timm model in eval mode; ViT-like families are built for ``img_size`` (as lab 4.3 does for DINOv2)."""
    family = zoo()[name].family
    kwargs = {"img_size": img_size} if family in SIZED_FAMILIES else {}
    with torch.device(on):
        return timm.create_model(name, pretrained=pretrained, **kwargs).eval()


class _LargestTensor(TorchFunctionMode):
    """The largest tensor (bytes) that any op returns: run on the meta device, shapes only, nothing allocated."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        stack = [result]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel() * item.element_size())
            elif isinstance(item, (tuple, list)):
                stack.extend(item)
        return result


@dataclass(frozen=True)
class Estimate:
    weights: int  # bytes: 4 × parameters (float32)
    inputs: int  # bytes: 4 × batch × 3 × size²
    activations: int  # bytes: ACTIVATION_FACTOR × batch × the largest per-image tensor of one forward pass
    params: int
    flops: int  # per image

    @property
    def total(self) -> int:
        return self.weights + self.inputs + self.activations


FORMULA = (
    f"need = 4 B × parameters + 4 B × batch × 3 × size² + {ACTIVATION_FACTOR} × batch × (largest tensor of one "
    f"image's forward pass, found on the meta device); the run is refused when need > "
    f"{MEMORY_SHARE:.0%} of the free memory (common.benchmark.free_memory_bytes)."
)


def memory_estimate(name: str, img_size: int, batch: int) -> Estimate:
    """What a run at ``batch`` needs, from shapes alone (the meta device): no real memory is allocated.

    Also checks that the architecture accepts ``img_size`` (a bad size raises :class:`InputError`) and counts
    the parameters and FLOPs per image (``count_flops``) on the way."""
    try:
        model = build(name, img_size, on="meta")
        x = torch.empty(1, 3, img_size, img_size, device="meta")
        flops = count_flops(model, x)
        largest = _LargestTensor()
        with torch.no_grad(), largest:
            model(x)
    except (RuntimeError, AssertionError, ValueError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(
            f"{name}: 입력 크기 {img_size}를 받지 않습니다 / does not accept input size {img_size} px ({reason})."
        ) from None
    params = count_parameters(model)
    return Estimate(
        weights=4 * params,
        inputs=4 * batch * 3 * img_size * img_size,
        activations=ACTIVATION_FACTOR * batch * largest.largest,
        params=params,
        flops=flops,
    )


def check_memory(name: str, estimate: Estimate, free: int | None = None) -> None:
    """Refuse (:class:`InputError`, with the numbers) a run that would not fit in the free memory."""
    free = free_memory_bytes("cpu") if free is None else free
    budget = MEMORY_SHARE * free
    if estimate.total > budget:
        raise InputError(
            f"{name}: 메모리 부족 예상 — 실행하지 않았습니다 / refused before allocating: it would need about "
            f"{estimate.total / 2**20:,.0f} MiB (weights {estimate.weights / 2**20:,.0f} + inputs "
            f"{estimate.inputs / 2**20:,.0f} + activations {estimate.activations / 2**20:,.0f} MiB), more than "
            f"{MEMORY_SHARE:.0%} of the {free / 2**20:,.0f} MiB free. Lower the batch or the input size. "
            f"Formula: {FORMULA}"
        )


def network_available() -> bool:
    """Whether pretrained weights can be downloaded: False at once with COURSE_OFFLINE=1, else a ≤ 3 s probe."""
    return os.environ.get("COURSE_OFFLINE") != "1" and is_online()


def measure(
    model: ZooModel,
    img_size: int,
    batch: int,
    *,
    min_run_time: float = 0.2,
    pretrained: bool = False,
    estimate: Estimate | None = None,
    runtime: str = "eager",
) -> tuple[dict, torch.nn.Module]:
    """One table row for ``model`` on ``runtime`` (and the eager model itself, for predictions). Checks memory
    first. Peak memory is measured for eager only: ONNX Runtime allocates outside torch, and a compiled graph inside
    its generated kernels, where ``measure_peak_memory``'s tensor tracking sees nothing."""
    estimate = estimate or memory_estimate(model.name, img_size, batch)
    check_memory(model.name, estimate)
    if pretrained:
        require_online(f"Pretrained weights for timm's {model.name}")
    torch.manual_seed(0)
    net = build(model.name, img_size, pretrained=pretrained)
    x1 = torch.randn(1, 3, img_size, img_size)
    xb = torch.randn(batch, 3, img_size, img_size)
    fn, info = build_runtime(net, xb, runtime)
    with torch.no_grad():  # one untimed call per shape: the first builds oneDNN kernels (can take ~1 s)
        fn(x1)
        dlogit = float((fn(xb).float() - net(xb)).abs().max())
    latency = measure_latency(fn, x1, min_run_time=min_run_time)
    rate = measure_throughput(fn, xb, min_run_time=min_run_time)
    peak = measure_peak_memory(net, xb).mib if runtime == "eager" else float("nan")
    row = {
        "model": model.name,
        "family": model.family,
        "size": model.size,
        "weights": "pretrained" if pretrained else "random",
        "runtime": runtime,
        "input_px": img_size,
        "batch": batch,
        "params_M": count_parameters(net) / 1e6,
        "GFLOPs_per_image": estimate.flops / 1e9,
        "latency_ms": latency.median * 1e3,
        "latency_iqr_ms": latency.iqr * 1e3,
        "latency_runs": latency.runs,
        "throughput_img_s": rate.items_per_second,
        "peak_MiB": peak,
        "estimate_MiB": estimate.total / 2**20,
        "setup_s": info["setup_s"],
        "file_MB": info["bytes"] / 1e6,
        "max_dlogit_vs_eager": dlogit,
    }
    return row, net


def run_benchmark(
    names,
    img_size,
    batch_size,
    *,
    min_run_time: float = 0.2,
    pretrained: bool = False,
    progress: Callable[[float, str], None] | None = None,
    runtime: str = "eager",
) -> tuple[pd.DataFrame, list[str], dict[str, torch.nn.Module]]:
    """Measure every chosen model. Returns the table, one message per model that was refused or failed
    (the others still run), and the measured models (for top-5 predictions when pretrained)."""
    models, size, batch = check_request(names, img_size, batch_size, runtime)
    rows, messages, nets = [], [], {}
    for i, model in enumerate(models):
        if progress:
            progress(i / len(models), f"{model.name} ({i + 1}/{len(models)})")
        try:
            estimate = memory_estimate(model.name, size, batch)
            row, net = measure(
                model,
                size,
                batch,
                min_run_time=min_run_time,
                pretrained=pretrained,
                estimate=estimate,
                runtime=runtime,
            )
        except (InputError, OfflineError) as err:
            messages.append(str(err))
            continue
        except ExportError as err:  # the message names the fix
            messages.append(f"{model.name}: ONNX 변환 실패 / export failed: {str(err)[:300]}")
            continue
        except (RuntimeError, MemoryError, OSError, ValueError) as err:  # a failed allocation or download
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            messages.append(f"{model.name}: 측정 실패 / measurement failed: {first}")
            continue
        rows.append(row)
        nets[model.name] = net
    if progress:
        progress(1.0, "done")
    return pd.DataFrame(rows), messages, nets


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: rounded."""
    if table.empty:
        return table
    return table.round(
        {c: 3 if c == "GFLOPs_per_image" else 2 for c in table.select_dtypes("number").columns}
    )


def chart(table: pd.DataFrame):
    """Latency (median, IQR bars), throughput and peak memory per model: one matplotlib figure."""
    from matplotlib.figure import Figure  # not pyplot: no global figure registry in a server

    fig = Figure(figsize=(13, 0.6 * max(3, len(table)) + 1.2), layout="constrained")
    axes = fig.subplots(1, 3)
    labels = table["model"].tolist()
    y = np.arange(len(labels))
    axes[0].barh(y, table["latency_ms"], xerr=table["latency_iqr_ms"] / 2, color="tab:blue", capsize=3)
    axes[0].set_xlabel(f"latency, batch 1 (ms; bar = IQR), {table['runtime'].iloc[0]}")
    axes[1].barh(y, table["throughput_img_s"], color="tab:green")
    axes[1].set_xlabel(f"throughput (images/s, batch {int(table['batch'].iloc[0])})")
    axes[2].barh(y, table["peak_MiB"].fillna(0), color="tab:orange", label="measured peak (eager only)")
    axes[2].scatter(
        table["estimate_MiB"], y, color="black", marker="|", s=200, label="estimate (refusal check)"
    )
    axes[2].set_xlabel("memory (MiB)")
    axes[2].legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.set_yticks(y, labels if ax is axes[0] else [""] * len(labels))
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"measured on this machine's CPU ({torch.get_num_threads()} threads), input {table['input_px'].iloc[0]} px"
    )
    return fig


def top5(net: torch.nn.Module, pixels: np.ndarray, img_size: int) -> list[tuple[str, float]] | None:
    """Top-5 ImageNet classes (description, probability) of a pretrained classifier for the user's image,
    preprocessed with the model's own data config at ``img_size``; None for a model without a classifier head
    (DINOv2's released backbone)."""
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    if getattr(net, "num_classes", 0) != 1000:
        return None
    config = resolve_data_config({"input_size": (3, img_size, img_size)}, model=net)
    transform = create_transform(**config)
    with torch.no_grad():
        probs = net(transform(Image.fromarray(pixels))[None]).softmax(-1)[0]
    values, indices = probs.topk(5)
    info = ImageNetInfo()
    return [(info.index_to_description(int(i)), float(v)) for v, i in zip(values, indices)]
