"""From a trained model to a fast one, measured: ONNX export, ONNX Runtime, int8, and how far each path moves the
model's answers (lab 4.5, the benchmark app's runtime choice).

- :func:`export_onnx`: torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with a dynamic batch
  axis, at ``OPSET``; a failed export raises :class:`ExportError` saying what to change.
- :class:`OnnxModel` (:func:`onnx_session`): an ONNX Runtime CPU session at one of ``GRAPH_LEVELS``, called like
  the torch model (a float32 tensor in, a tensor out); an input of the wrong dtype, rank or size raises
  ValueError naming the fix.
- :func:`quantize_onnx_int8`: ONNX Runtime's dynamic quantization (int8 weights, activations quantized per call);
  :func:`quantize_torch_int8`: torch's own dynamic int8 ``nn.Linear`` (``torch.ao``, deprecated in favour of
  the separate torchao package, which the course does not install).
- :class:`Autocast` (:func:`autocast`), :func:`compiled` (:func:`first_call_seconds`), :func:`channels_last`: the
  other paths, as callables like the model (``Autocast`` also trains: mixed precision). :func:`count_torch_calls`:
  how many torch calls one forward makes from Python (the per-call overhead that dominates at batch 1).
- :func:`logits_of`, :func:`agreement`: logits over a whole set in batches, and what a path changed against the
  eager fp32 reference (max |Δ logit|, top-1 agreement, accuracy change).
- :func:`gpu_only_reason`: the one-line reason a GPU-only path (fp16 autocast, CUDA graphs, TensorRT) is skipped.
- :func:`build_runtime`: one of ``RUNTIMES`` (eager, compiled, ONNX Runtime, int8) for a model and an example
  input: what the app's runtime choice calls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

OPSET = 18  # the dynamo exporter's default opset in this torch release; stated in lab 4.5
GRAPH_LEVELS = ("disabled", "basic", "extended", "all")  # ONNX Runtime's graph-optimisation levels
RUNTIMES = ("eager", "compiled", "onnxruntime", "int8")  # the app's runtime choice
INPUT_NAME = "images"


class ExportError(RuntimeError):
    """The model could not be exported to ONNX; the message names the fix."""


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "onnxruntime is not installed: run `make setup` (requirements.txt pins onnx, onnxscript and "
            "onnxruntime)."
        ) from None
    return onnxruntime


def _check_images(x, what: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of images (N, C, H, W), got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(
            f"{what} must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}; "
            "add the batch axis with x[None]."
        )
    if x.dtype != torch.float32:
        raise ValueError(f"{what} must be float32, got {x.dtype}; convert it with x.float().")


# ------------------------------------------------------------------------------------------------ export
@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints its progress ("[torch.onnx] Obtain model graph ... ✅") and warns about
    onnxscript internals; neither says anything about the model. Errors still raise."""
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> Path:
    """Export ``model`` (in eval mode, on the CPU) to ``path`` with torch's dynamo exporter.

    The batch axis is dynamic (``torch.export.Dim``), so one file serves every batch size; the other axes are
    fixed at ``example``'s. With ``verify`` (default) the file is checked against eager in ONNX Runtime
    (:func:`_verify`): an axis the exporter silently fixed, or outputs that differ by more than ``tolerance``
    times the largest output, raise :class:`ExportError` naming the fix."""
    _check_images(example, "example")
    if model.training:
        raise ValueError(
            "the model is in training mode (dropout, batch statistics): call model.eval() first."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=["logits"],
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
            program.save(str(path))
    except Exception as err:  # the exporter raises many kinds; the caller gets one, with the fix
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ExportError(
            f"ONNX export of {type(model).__name__} failed ({type(err).__name__}: {first}). Fixes: make the "
            "forward pass free of Python data-dependent control flow (torch.cond, or compute shapes from "
            "x.shape), install onnxscript (`make setup`), or export with dynamic_batch=False."
        ) from err
    if verify:
        _verify(model, example, path, dynamic_batch, tolerance)
    return path


def _verify(
    model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool, tolerance: float
) -> None:
    """The exporter does not always fail loudly: when it cannot keep an axis symbolic it may specialise it to the
    example's size, and it can trace data-dependent code into a graph valid for the example only. So the file is
    run in ONNX Runtime and compared with eager, at the example and (dynamic batch) at another batch size."""
    session = onnx_session(path)
    batch_axis = session.input_shape[0]
    if dynamic_batch and isinstance(batch_axis, int):
        raise ExportError(
            f"the exporter fixed the batch axis of {type(model).__name__} to {batch_axis} instead of keeping it "
            "dynamic: the forward pass branches on the batch size (e.g. `if x.shape[0] == ...`). Remove that "
            "branch, or export with dynamic_batch=False and run batches of exactly that size."
        )
    other = torch.cat([example, example[:1]]) if dynamic_batch else example
    for x in (example, other):
        with torch.no_grad():
            want = model(x)
        if not isinstance(want, torch.Tensor):
            raise ExportError(
                f"{type(model).__name__}'s forward returns {type(want).__name__}, not a tensor: export a "
                "module that returns the logits tensor."
            )
        got = session(x)
        scale = float(want.abs().max()) or 1.0
        diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
        if diff > tolerance * scale:
            raise ExportError(
                f"the exported {type(model).__name__} differs from eager at batch {len(x)} (output "
                f"{tuple(got.shape)} vs {tuple(want.shape)}, max |diff| {diff:.3g} > {tolerance:g} x max "
                f"|output| {scale:.3g}): the graph was traced for the example's values only (data-dependent "
                "Python control flow or sizes taken from tensor values). Compute shapes from x.shape or use "
                "torch.cond, then export again."
            )


# ------------------------------------------------------------------------------------------------ ONNX Runtime
class OnnxModel:
    """An ONNX Runtime CPU session, called like the torch model: ``model(x)`` with x (N, C, H, W) float32."""

    def __init__(
        self,
        path: str | Path,
        *,
        level: str = "all",
        threads: int | None = None,
        providers: list | None = None,
    ):
        if level not in GRAPH_LEVELS:
            raise ValueError(f"unknown graph-optimisation level {level!r}; use one of {GRAPH_LEVELS}.")
        ort = _ort()
        path = Path(path)
        if not path.exists():
            raise ValueError(
                f"no ONNX file at {path}: export one first with export_onnx(model, example, path)."
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        options.intra_op_num_threads = (
            threads or torch.get_num_threads()
        )  # as many as torch uses: a fair race
        options.log_severity_level = 3  # errors only: no "removing initializer" notes in the notebook
        # the CPU provider unless told otherwise (lab 4.5's GPU section passes TensorRT's and CUDA's)
        self.session = ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.path, self.level = path, level
        signature = self.session.get_inputs()[0]
        self.input_name = signature.name
        self.input_shape = tuple(signature.shape)  # the batch axis is a name (str) when dynamic

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(self.prepare(x)))

    def prepare(self, x: torch.Tensor):
        """The numpy array the session takes, after checking ``x`` against the exported signature."""
        _check_images(x)
        fixed = [(i, want) for i, want in enumerate(self.input_shape) if isinstance(want, int)]
        wrong = [(i, want) for i, want in fixed if x.shape[i] != want]
        if wrong:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match the exported {self.input_shape} (axis "
                f"{wrong[0][0]} must be {wrong[0][1]}): resize the images to the exported size, or re-export "
                "with an example of this size."
            )
        return x.detach().cpu().contiguous().numpy()

    def run(self, array):
        """The session on a prepared numpy array (what the benchmark times: no tensor conversion)."""
        return self.session.run(None, {self.input_name: array})[0]


def onnx_session(
    path: str | Path, *, level: str = "all", threads: int | None = None, providers: list | None = None
) -> OnnxModel:
    return OnnxModel(path, level=level, threads=threads, providers=providers)


class _NoPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in str(record.msg)


def quantize_onnx_int8(path: str | Path, out: str | Path) -> Path:
    """ONNX Runtime's dynamic quantization: MatMul/Gemm weights stored as int8 (per tensor), activations
    quantized on the fly from each call's range. Needs no calibration data. (Its hint to run shape pre-processing
    first is dropped: the dynamo exporter's graph already carries the shapes.)"""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path, out = Path(path), Path(out)
    if not path.exists():
        raise ValueError(f"no ONNX file at {path}: export one first with export_onnx(model, example, path).")
    root, hint = logging.getLogger(), _NoPreprocessHint()
    root.addFilter(hint)
    try:
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(hint)
    return out


def quantize_torch_int8(model: nn.Module) -> nn.Module:
    """torch's dynamic int8 quantization of every ``nn.Linear`` (a copy; ``model`` is untouched). The
    ``torch.ao.quantization`` API is deprecated (its warnings say torchao replaces it); it still runs, so the lab
    measures it beside ONNX Runtime's."""
    import copy

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


# ------------------------------------------------------------------------------------------------ torch paths
class Autocast(nn.Module):
    """``model`` under ``torch.autocast``: matmuls and convolutions in ``dtype``, logits back in float32. The
    weights stay float32 (autocast casts a copy per op), so wrapping a model to train it is mixed-precision
    training: the optimizer updates float32 weights, and the loss is computed outside, in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16, device_type: str = "cpu"):
        super().__init__()
        self.model, self.dtype, self.device_type = model, dtype, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x).float()


def autocast(model: nn.Module, dtype: torch.dtype = torch.bfloat16, device_type: str = "cpu") -> Autocast:
    return Autocast(model, dtype, device_type)


class _CountCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def count_torch_calls(fn: Callable, *args) -> int:
    """How many torch functions and Tensor methods one call ``fn(*args)`` makes from Python (public
    ``TorchFunctionMode``): each is a trip through Python and the dispatcher, paid whatever the batch size."""
    counter = _CountCalls()
    with torch.no_grad(), counter:
        fn(*args)
    return counter.calls


def first_call_seconds(fn: Callable, example: torch.Tensor) -> float:
    """Seconds of one untimed ``fn(example)`` under no_grad: for a compiled function, the compile it triggers."""
    start = time.perf_counter()
    with torch.no_grad():
        fn(example)
    return time.perf_counter() - start


def compiled(model: nn.Module, example: torch.Tensor, **options) -> tuple[Callable, float]:
    """``torch.compile(model, **options)`` and the seconds its first call took (tracing, Inductor's code
    generation and the C++ compiler: paid once, before any timed call). A new input shape compiles again on
    its first call (:func:`first_call_seconds` times it): with ``dynamic=False`` one static graph per batch
    size; with ``dynamic=True`` and a batch-1 example torch still specialises size 1, so the first larger
    batch compiles a second, dynamic graph, which then serves every batch size of 2 and more."""
    fn = torch.compile(model, **options)
    return fn, first_call_seconds(fn, example)


def channels_last(model: nn.Module) -> Callable:
    """The model and its input in NHWC memory order (a convolution-friendly layout for oneDNN)."""
    model = model.to(memory_format=torch.channels_last)
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def saved_bytes(model_or_path) -> int:
    """Size on disk: an ONNX file's, or a torch model's state dict as ``torch.save`` writes it."""
    if isinstance(model_or_path, (str, Path)):
        return Path(model_or_path).stat().st_size
    with tempfile.TemporaryFile() as f:
        torch.save(model_or_path.state_dict(), f)
        return f.tell()


# ------------------------------------------------------------------------------------------------ agreement
@torch.no_grad()
def logits_of(fn: Callable, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """``fn`` over ``images`` in batches: (N, classes) float32 logits."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return torch.cat([fn(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)])


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float  # max |logit - reference logit| over the set
    top1_agreement: float  # share of images whose top-1 class equals the reference's
    accuracy: float | None  # of this path, when labels were given
    reference_accuracy: float | None

    @property
    def accuracy_change(self) -> float | None:
        """This path's accuracy minus the reference's, in points (percent)."""
        if self.accuracy is None:
            return None
        return 100 * (self.accuracy - self.reference_accuracy)


def agreement(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None = None) -> Agreement:
    """What a path changed against the reference's logits (the eager fp32 model) on the same images."""
    if reference.shape != logits.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and logits must both be (N, classes) for the same images, got {tuple(reference.shape)} "
            f"and {tuple(logits.shape)}."
        )
    ref_top, top = reference.argmax(1), logits.argmax(1)
    acc = ref_acc = None
    if labels is not None:
        if len(labels) != len(reference):
            raise ValueError(f"{len(labels)} labels for {len(reference)} images: pass one label per image.")
        acc, ref_acc = float((top == labels).float().mean()), float((ref_top == labels).float().mean())
    return Agreement(
        float((logits.float() - reference.float()).abs().max()),
        float((top == ref_top).float().mean()),
        acc,
        ref_acc,
    )


# ------------------------------------------------------------------------------------------------ GPU-only paths
GPU_ONLY = ("fp16 autocast", "CUDA graphs", "TensorRT")


def gpu_only_reason(path: str) -> str | None:
    """None when ``path`` (one of ``GPU_ONLY``) can run here, else the one-line reason it is skipped."""
    if path not in GPU_ONLY:
        raise ValueError(f"unknown GPU-only path {path!r}; use one of {GPU_ONLY}.")
    if not torch.cuda.is_available():
        return f"skipped: {path} needs a CUDA GPU (this machine has none); `make gpu-check` runs it on one."
    if path == "TensorRT":
        ort_trt = importlib.util.find_spec("onnxruntime") and "TensorrtExecutionProvider" in (
            _ort().get_available_providers()
        )
        if not (importlib.util.find_spec("torch_tensorrt") or ort_trt):
            return (
                "skipped: TensorRT needs torch_tensorrt or onnxruntime-gpu's TensorrtExecutionProvider "
                "(neither is installed; pip install torch-tensorrt matching this torch)."
            )
    return None


# ------------------------------------------------------------------------------------------------ the app's runtimes
def build_runtime(
    model: nn.Module, example: torch.Tensor, runtime: str, workdir: str | Path | None = None
) -> tuple[Callable, dict]:
    """``(fn, info)``: ``model`` made ready to run ``example``-shaped batches on one of ``RUNTIMES``, and what it
    cost (``setup_s``: compile or export + session time; ``bytes``: the file an ONNX path runs from).

    ``compiled`` compiles for dynamic batch sizes; the ONNX paths export once to ``workdir`` (a temporary
    folder if None)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {RUNTIMES}.")
    _check_images(example, "example")
    model = model.eval()
    start = time.perf_counter()
    if runtime == "eager":
        return model, {"setup_s": 0.0, "bytes": saved_bytes(model)}
    if runtime == "compiled":
        fn, seconds = compiled(model, example, dynamic=True)
        return fn, {"setup_s": seconds, "bytes": saved_bytes(model)}
    folder = Path(workdir or tempfile.mkdtemp(prefix="onnx-"))
    path = export_onnx(model, example, folder / f"{type(model).__name__}.onnx")
    if runtime == "int8":
        path = quantize_onnx_int8(path, path.with_suffix(".int8.onnx"))
    session = onnx_session(path)
    return session, {"setup_s": time.perf_counter() - start, "bytes": saved_bytes(path)}
