"""Run the notebooks' code on an emulated accelerator, on a CPU: catches CPU tensors meeting device tensors.

    .venv/bin/python -m scripts.check_devices                 # every notebook, shrunk: ~40 s on 2 CPU cores
    .venv/bin/python -m scripts.check_devices week6/03 week4  # a selection (name fragments, as in NOTEBOOKS)

Exits 1 naming the notebook and cell of the first error in each notebook. CI has no GPU, and on a CPU code
written for ``DEVICE="cuda"`` works even where a tensor was never moved (lab 6.3 fed CPU tokens to a model
trained on the device: a RuntimeError on CUDA). Here ``DEVICE`` is the sentinel ``torch.device("cpu", 0)``, and
:class:`EmulatedDevice` (a public ``torch.overrides.TorchFunctionMode``) marks the storage of every tensor that
reaches it (``.to(device)``, ``module.to(device)``, ``device=device`` factories), propagates the mark through
every torch op, answers ``tensor.device`` with the sentinel, and raises :class:`DeviceMismatchError` (a
RuntimeError, like CUDA's) where CUDA would refuse:

- an op mixing device and CPU tensors (allowed, as on CUDA: CPU 0-dim scalars, CPU index tensors into a
  device tensor, ``copy_`` and assignment);
- ``.numpy()`` / ``np.asarray`` of a device tensor (NumPy or a plot without ``.cpu()`` first);
- a CPU ``torch.Generator`` drawing device tensors.

Covered: the quick profile's code paths (smaller sizes, :data:`SHRINK`) of every notebook and of the
``common`` functions they call. Not covered: cells the quick profile or the missing network skips, DataLoader
worker processes, ``with torch.device(...)`` blocks, and whatever runs in C++ only (autograd's backward: its
gradients are marked when Python reads ``.grad``). Code behind ``if device.type == "cuda"`` takes the CPU
branch (the sentinel's type is ``cpu``). Only a GPU run shows the kernels themselves: cuDNN, flash attention,
TF32 and their numerics and nondeterminism, what cuDNN refuses (an eval-mode RNN's backward) or what
FlopCounterMode cannot count (cuDNN's fused RNN), ``torch.backends``/autocast effects, memory and speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode

from common.benchmark import tensors_in

# The emulated accelerator: a real CPU device, distinct from torch.device("cpu") (which stays "the host").
DEVICE = torch.device("cpu", 0)
_MARK = "_on_emulated_device"  # set in the __dict__ of a storage: every view of it is on the device
# Ops that CUDA also runs with tensors on two devices: copies, assignment, shape-only references.
_MIXING_ALLOWED = {
    "copy_",
    "__setitem__",
    "_has_compatible_shallow_copy_type",
    "set_",
    "expand_as",
    "view_as",
    "reshape_as",
}
# Packed sequences: torch takes `lengths` and keeps a PackedSequence's `batch_sizes` (1-D int64) on the CPU, on
# CUDA too; the data stay on the device.
_PACKED_OPS = {"_pack_padded_sequence", "_pad_packed_sequence", "gru", "lstm", "rnn_tanh", "rnn_relu"}
_INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__ipow__"}


class DeviceMismatchError(RuntimeError):
    """What CUDA would raise: tensors on two devices in one op, or NumPy reading device memory."""


def _storage(t: torch.Tensor):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, ValueError):  # no storage (sparse, lazy parameters): unmarked
        return None


def on_device(t: torch.Tensor) -> bool:
    """Whether ``t`` lives on the emulated accelerator (its storage was moved or created there)."""
    storage = _storage(t)
    return storage is not None and storage.__dict__.get(_MARK, False)


def _mark(t: torch.Tensor) -> torch.Tensor:
    storage = _storage(t)
    if storage is not None:
        storage.__dict__[_MARK] = True
    return t


def _is_device(d) -> bool | None:
    """True for the emulated accelerator, False for any other device, None for "no device given"."""
    if d is None or isinstance(d, bool):
        return None
    if isinstance(d, int):  # .to(0), .cuda(0): a CUDA index
        return True
    try:
        return torch.device(d) == DEVICE
    except (RuntimeError, TypeError):
        return None


def _name(func) -> str:
    name = getattr(func, "__name__", repr(func))
    if name in ("__get__", "__set__"):  # a Tensor property: device, data, grad ...
        return f"{func.__self__.__name__}.{name}"
    return name


def _describe(ts) -> str:
    return ", ".join(f"{tuple(t.shape)} {t.dtype}".replace("torch.", "") for t in ts)


class EmulatedDevice(TorchFunctionMode):
    """Track which tensors live on the emulated accelerator :data:`DEVICE`; raise where CUDA would.

    ``with EmulatedDevice(): model.to(DEVICE); model(cpu_tokens)`` raises :class:`DeviceMismatchError`.
    Marks live on storages, so views, ``.data``, ``nn.Parameter(t)`` and ``model.to()`` share them; gradients
    (made by autograd in C++) are marked when Python reads them through ``.grad``.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if name == "untyped_storage" or name.endswith(".__set__"):  # on_device() itself; p.data = t
            return func(*args, **kwargs)
        if name == "device.__get__":
            return DEVICE if on_device(args[0]) else func(*args, **kwargs)
        if name in ("numpy", "__array__") and on_device(args[0]):
            raise DeviceMismatchError(
                f"{name}() of a tensor on the device, {_describe(args[:1])}: call .cpu() first (NumPy, plots)."
            )
        if name in ("to", "cpu", "cuda", "type_as"):
            return self._move(func, name, args, kwargs)

        tensors = list(tensors_in((args, kwargs)))
        target = _is_device(kwargs.get("device"))  # factories: torch.zeros(..., device=device)
        if target is None:
            target = any(on_device(t) for t in tensors)
            if name == "__getitem__":  # CUDA accepts CPU index tensors into a device tensor, not the reverse
                target = on_device(args[0])
                index = [t for t in tensors_in(args[1:]) if on_device(t) and t.dim() > 0]
                if index and not target:
                    self._fail(name, index, [args[0]])
            elif target and name not in _MIXING_ALLOWED:
                self._check(name, args, tensors)
        generator = kwargs.get("generator")
        if target and isinstance(generator, torch.Generator) and generator.device.type == "cpu":
            raise DeviceMismatchError(f"{name}: a CPU torch.Generator cannot draw tensors on the device.")
        out = func(*args, **kwargs)
        if target and name not in _MIXING_ALLOWED:
            for t in tensors_in(out):
                if not (name in _PACKED_OPS and t.dtype == torch.int64):  # batch sizes, lengths: on the CPU
                    _mark(t)
        return out

    def _move(self, func, name, args, kwargs):
        source = args[0]
        if name == "cpu":
            target = False
        elif name == "cuda":
            target = True
        elif name == "type_as":
            target = on_device(args[1])
        else:  # .to(device), .to(device, dtype), .to(tensor), .to(dtype), .to(device=...)
            target = _is_device(kwargs.get("device"))
            for a in args[1:]:
                if isinstance(a, torch.Tensor):
                    target = on_device(a)
                elif isinstance(a, (str, torch.device, int)):
                    target = _is_device(a) if target is None else target
            if target is None:
                target = on_device(source)
        out = func(*args, **kwargs)
        if target != on_device(source) and _storage(out) is _storage(source):
            out = out.clone()  # a move between devices copies: the source stays where it was
        return _mark(out) if target else out

    def _check(self, name, args, tensors):
        host = [t for t in tensors if not on_device(t) and t.dim() > 0]  # CPU scalars are fine on CUDA
        if name in _PACKED_OPS:
            host = [t for t in host if not (t.dim() == 1 and t.dtype == torch.int64)]
        inplace = (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS
        if inplace and isinstance(args[0], torch.Tensor) and not on_device(args[0]):
            host = [args[0]]  # a device result written into a CPU tensor
        if host:
            self._fail(name, [t for t in tensors if on_device(t)], host)

    @staticmethod
    def _fail(name, device_tensors, cpu_tensors):
        raise DeviceMismatchError(
            f"{name}: tensors on the device ({_describe(device_tensors)}) and on the CPU "
            f"({_describe(cpu_tensors)}); CUDA raises 'Expected all tensors to be on the same device'. "
            "Move the CPU ones with .to(device)."
        )


# ------------------------------------------------------------------------------------------- the notebooks
# Smaller settings than the quick profile (the same code paths with fewer examples, epochs and lengths), put
# into `cfg` right after the cell that defines it: the check is about where tensors live, not the results.
SHRINK: dict[str, dict] = {
    "week6/01": dict(trials=50, d_ks=[1, 4, 16]),
    "week6/02": dict(
        heads=[1, 4], n_train=200, n_test=100, epochs=1, lengths=[16, 32, 64], min_run_time=0.01
    ),
    "week6/03": dict(n_train=300, n_test=100, epochs=1),
    "week6/04": dict(depth=3, flow_depth=3, n_train=128, n_val=64, n_test=64, epochs=1, stability_layers=2),
    "week6/05": dict(
        n_train=128,
        n_val=64,
        n_test=64,
        epochs=1,
        seeds=2,
        sweep_seeds=2,
        longer_seeds=2,
        timing_lengths=[10, 20],
    ),
    "week4/01": dict(n_train=256, n_test=128),
    "week4/02": dict(n_train=400, n_test=32, epochs=2, batch_size=32, supervised_epochs=2, ablation_steps=2),
    "week4/03": dict(
        batch=1, min_run_time=0.01, seq_lens=[64, 128], swin_maps_timed=[14], swin_maps_counted=[28]
    ),
    "week4/04": dict(
        n_train=256,
        n_val=128,
        n_test=128,
        epochs=2,
        no_temp_epochs=1,
        eval_every=4,
        n_eval=64,
        n_retrieval=64,
    ),
}


def _lab_4_1(ns: dict, stack: contextlib.ExitStack) -> None:  # the recipe's length is read from `ref`
    ref = ns["ref"]
    stack.enter_context(mock.patch.dict(ref.VIT_SIZES, quick={**ref.VIT_SIZES["quick"], "epochs": 1}))


def _lab_4_2(ns: dict, stack: contextlib.ExitStack) -> None:  # DINO's data sizes are read from `ref`
    ref, sizes = ns["ref"], {k: ns["cfg"][k] for k in ("n_train", "n_test", "epochs", "batch_size")}
    stack.enter_context(mock.patch.dict(ref.DINO_SIZES, quick={**ref.DINO_SIZES["quick"], **sizes}))


# Settings that live outside `cfg`, patched for the run (and restored after it).
HOOKS: dict[str, Callable[[dict, contextlib.ExitStack], None]] = {"week4/01": _lab_4_1, "week4/02": _lab_4_2}


def notebook_key(notebook: Path) -> str:
    """``week6/03_positional_encoding.ipynb`` -> ``week6/03``: the keys of :data:`SHRINK` and :data:`HOOKS`."""
    return f"{notebook.parent.name}/{notebook.name[:2]}"


def run_notebook(path: Path, shrink: dict | None = None, hook: Callable | None = None) -> None:
    """Execute ``path``'s code cells in this process, under :class:`EmulatedDevice`, with the parameters
    ``PROFILE="quick"`` and ``DEVICE="cpu:0"`` (:data:`DEVICE`). ``shrink`` updates ``cfg`` after the cell that
    defines it, then ``hook(namespace, exit_stack)`` runs. Raises the first error, noting the cell's number.
    Matplotlib's settings are restored afterwards; figures go to ``$COURSE_OUTPUTS`` (or ``outputs/``)."""
    import matplotlib
    import nbformat

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = nbformat.read(path, as_version=4)
    ns: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(matplotlib.rc_context())
            # the cells' printing and progress bars are not the point here: the first error is
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            stack.enter_context(EmulatedDevice())
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or "google.colab" in cell.source:
                    continue
                try:
                    exec(compile(cell.source, f"{path.name}, cell {i}", "exec"), ns)
                    if "parameters" in cell.metadata.get("tags", []):
                        ns.update(PROFILE="quick", DEVICE=str(DEVICE))
                    if "cfg" in ns and shrink is not None:
                        ns["cfg"].update(shrink)
                        if hook is not None:
                            hook(ns, stack)
                        shrink = None
                except BaseException as err:
                    err.add_note(f"{path.name}: cell {i}")
                    raise
                finally:
                    plt.close("all")
    finally:
        os.chdir(cwd)


def main(argv: list[str] | None = None) -> int:
    from common.course import repo_root, select_notebooks

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="paths or fragments such as week6/03 (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("COURSE_OFFLINE", "1")  # the optional download cells skip at once
    os.environ["COURSE_OUTPUTS"] = tempfile.mkdtemp(prefix="check_devices_")  # figures to a scratch folder
    torch.set_num_threads(1)  # tiny tensors: a second thread gains nothing and, on a busy runner, costs 10x
    failed = 0
    for nb in select_notebooks(args.notebooks):
        start = time.perf_counter()
        try:
            run_notebook(repo_root() / nb, SHRINK.get(notebook_key(nb), {}), HOOKS.get(notebook_key(nb)))
            status = "ok"
        except (Exception, SystemExit) as err:
            failed += 1
            status = "FAILED"
            where = "; ".join(getattr(err, "__notes__", []))
            print(f"{nb.as_posix()}: {where}: {type(err).__name__}: {err}", file=sys.stderr)
        print(f"{nb.as_posix():<40} {status:<7} {time.perf_counter() - start:6.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
