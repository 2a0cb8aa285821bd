"""Execute the course's notebooks with papermill, in course order, and print a runtime table.

    python -m scripts.execute_notebooks [--profile quick|full] [--device D] [--dataset D] [NOTEBOOK ...]
        writes outputs/executed/<week>/<name>.ipynb
    python -m scripts.execute_notebooks --in-place [NOTEBOOK ...]
        refreshes the committed notebooks' outputs with their default parameters

Exits non-zero, naming the notebook and the cell, if a notebook fails or does not write its figures.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from papermill.exceptions import PapermillExecutionError

from common.course import PROFILES, declared_figures, repo_root, select_notebooks


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's and nbclient's per-run metadata so a refresh only changes real outputs."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


class IPCKernelManager(AsyncKernelManager):
    """Kernels talk to the runner over local IPC sockets in a private temporary folder, not TCP ports: nothing
    listens on the network, and ipykernel has no reason to warn about unencrypted TCP on every notebook."""

    socket_dir = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if IPCKernelManager.socket_dir is None:
            IPCKernelManager.socket_dir = tempfile.mkdtemp(prefix="course-kernels-")
            atexit.register(shutil.rmtree, IPCKernelManager.socket_dir, ignore_errors=True)
        self.transport = "ipc"
        self.ip = str(Path(IPCKernelManager.socket_dir) / "kernel")


def execute(notebook: Path, target: Path, parameters: dict) -> None:
    pm.execute_notebook(
        str(repo_root() / notebook),
        str(target),
        parameters=parameters,
        kernel_name="python3",
        cwd=str((repo_root() / notebook).parent),
        progress_bar=False,
        log_output=False,
        # papermill rewrites the whole notebook before and after every cell (about 1.3 s of CPU per notebook,
        # competing with the kernel on a 2-core machine); written once at the end, and on an error before raising
        request_save_on_cell_execute=False,
        kernel_manager_class=IPCKernelManager,
    )


def missing_figures(notebook: Path, since: float) -> list[str]:
    outputs = repo_root() / "outputs"
    return [
        f
        for f in declared_figures(notebook)
        if not (outputs / f).exists() or (outputs / f).stat().st_mtime < since
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", help="paths or fragments such as week6/01 (default: all)")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps or auto")
    parser.add_argument("--dataset", default=None, help="passed to notebooks that take a DATASET parameter")
    parser.add_argument(
        "--in-place", action="store_true", help="refresh committed notebooks (default parameters)"
    )
    args = parser.parse_args(argv)

    try:
        selected = select_notebooks(args.notebooks)
    except ValueError as err:
        parser.error(str(err))
    if args.in_place and (args.profile != "quick" or args.device or args.dataset):
        parser.error(
            "--in-place keeps the committed defaults; do not combine it with --profile/--device/--dataset."
        )
    parameters = {} if args.in_place else {"PROFILE": args.profile}
    parameters.update({k: v for k, v in (("DEVICE", args.device), ("DATASET", args.dataset)) if v})
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # inline figures in the kernel

    rows, failures = [], []
    for notebook in selected:
        print(f"▶ {notebook} {parameters or '(defaults)'}", flush=True)
        start = time.time()
        if args.in_place:
            tmp = Path(tempfile.mkdtemp()) / notebook.name
            target = tmp
        else:
            target = repo_root() / "outputs" / "executed" / notebook
            target.parent.mkdir(parents=True, exist_ok=True)
        status = "ok"
        try:
            execute(notebook, target, parameters)
            missing = missing_figures(notebook, start)
            if missing:
                raise RuntimeError(f"did not write its declared figures: {', '.join(missing)}")
            if args.in_place:
                strip_run_metadata(target)
                shutil.move(target, repo_root() / notebook)
        except PapermillExecutionError as err:
            status = "FAILED"
            failures.append(
                f"{notebook}: cell {err.cell_index} (execution count {err.exec_count}) raised "
                f"{err.ename}: {err.evalue}"
            )
        except Exception as err:  # noqa: BLE001 - report every kind of failure with the notebook's name
            status = "FAILED"
            failures.append(f"{notebook}: {type(err).__name__}: {err}")
        rows.append((notebook.as_posix(), status, time.time() - start))
        print(f"  {status} in {rows[-1][2]:.1f} s", flush=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'notebook':<{width}}  status  seconds")
    for name, status, seconds in rows:
        print(f"{name:<{width}}  {status:<6}  {seconds:7.1f}")
    print(f"{'total':<{width}}          {sum(r[2] for r in rows):7.1f}  (profile={args.profile})")
    if failures:
        print("\nFailures:\n  " + "\n  ".join(failures), file=sys.stderr)
        if not args.in_place:
            print("Executed copies with the traceback are under outputs/executed/.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
