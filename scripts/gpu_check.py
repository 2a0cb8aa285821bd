"""The prepared GPU check (``make gpu-check``): every notebook's quick profile with ``DEVICE=cuda``, lab 4.5's
GPU-only paths among them (fp16 autocast, CUDA graphs, TensorRT), against an 8-minute budget, and a short report.

    python -m scripts.gpu_check [--device cuda] [--budget 480] [--report outputs/gpu_check.md] [NOTEBOOK ...]
    python -m scripts.gpu_check --dry-run      # no GPU needed: lists what would run and writes the report's frame

Executed notebooks go to outputs/executed/ (as ``make execute-all``). The report (markdown) gives the device, the
versions, each notebook's status and seconds, the total against the budget, every ``target`` line the notebooks
printed and lab 4.5's GPU-only lines. Without CUDA it stops at once, saying so, unless ``--dry-run`` or
``--device cpu`` (a slow rehearsal of the same pipeline on the CPU) is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common.course import repo_root, select_notebooks
from common.deployment import GPU_ONLY
from common.doctor import environment_line

BUDGET_S = 480  # issue 25: every quick profile plus the GPU-only cells in <= 8 minutes on one GPU
DEPLOYMENT = "week4/05_deployment.ipynb"


def printed_lines(executed: Path) -> list[str]:
    """Every line the executed notebook printed (stream outputs), in order."""
    nb = json.loads(executed.read_text(encoding="utf-8"))
    lines = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                lines += text.splitlines()
    return lines


def findings(notebook: str, executed: Path | None) -> tuple[list[str], list[str]]:
    """(target lines, GPU-only lines) of one executed notebook; none when it did not run."""
    if executed is None or not executed.exists():
        return [], []
    lines = printed_lines(executed)
    targets = [line for line in lines if line.startswith("target ")]
    gpu = [line for line in lines if notebook == DEPLOYMENT and line.split(":")[0] in GPU_ONLY]
    return targets, gpu


def report(rows: list[dict], *, device: str, budget: float, environment: str, dry_run: bool = False) -> str:
    """The markdown report. ``rows``: one dict per notebook with ``notebook``, ``status``, ``seconds``,
    ``targets`` and ``gpu`` (lists of lines), ``error`` (or None)."""
    total = sum(r["seconds"] for r in rows)
    ran = [r for r in rows if r["status"] != "not run"]
    failed = [r for r in rows if r["status"] == "FAILED"]
    if dry_run:
        verdict = f"dry run: nothing executed ({len(rows)} notebooks would run on {device})"
    else:
        within = "within" if total <= budget else "OVER"
        verdict = (
            f"{len(ran) - len(failed)}/{len(rows)} notebooks passed; total {total:.1f} s, {within} the budget of "
            f"{budget:.0f} s"
        )
    lines = [
        f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- environment: {environment}",
        f"- device: {device}",
        f"- result: {verdict}",
        "",
        "| notebook | status | seconds |",
        "|---|---|---|",
        *(f"| {r['notebook']} | {r['status']} | {r['seconds']:.1f} |" for r in rows),
        f"| total | | {total:.1f} |",
        "",
        "## Target lines",
        "",
        *(f"- {r['notebook']}: `{t}`" for r in rows for t in r["targets"]),
        "",
        "## GPU-only paths (lab 4.5, section 6)",
        "",
        *(f"- `{g}`" for r in rows for g in r["gpu"]),
    ]
    if failed:
        lines += ["", "## Failures", "", *(f"- {r['notebook']}: {r['error']}" for r in failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", help="paths or fragments such as week4/05 (default: all)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run")
    parser.add_argument("--report", default="outputs/gpu_check.md")
    parser.add_argument(
        "--dry-run", action="store_true", help="write the report's frame without running anything"
    )
    args = parser.parse_args(argv)
    try:
        selected = select_notebooks(args.notebooks)
    except ValueError as err:
        parser.error(str(err))
    if args.device == "cuda" and not torch.cuda.is_available() and not args.dry_run:
        print(
            "gpu-check needs a CUDA GPU and this machine has none: run it where one is, or rehearse with "
            "--dry-run (nothing executed) or --device cpu (every quick profile on the CPU, slow).",
            file=sys.stderr,
        )
        return 2
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    )
    rows = []
    for notebook in selected:
        row = {"notebook": notebook.as_posix(), "status": "not run", "seconds": 0.0, "error": None}
        executed = None
        if not args.dry_run:
            from papermill.exceptions import PapermillExecutionError

            from scripts.execute_notebooks import execute, missing_figures

            executed = repo_root() / "outputs" / "executed" / notebook
            executed.parent.mkdir(parents=True, exist_ok=True)
            print(f"▶ {notebook} (quick, DEVICE={args.device})", flush=True)
            start = time.time()
            try:
                execute(notebook, executed, {"PROFILE": "quick", "DEVICE": args.device})
                missing = missing_figures(notebook, start)
                row["status"] = "ok" if not missing else "FAILED"
                row["error"] = f"did not write {', '.join(missing)}" if missing else None
            except PapermillExecutionError as err:
                row["status"], row["error"] = (
                    "FAILED",
                    f"cell {err.cell_index}: {err.ename}: {err.evalue}"[:300],
                )
            except Exception as err:  # noqa: BLE001 - every failure is reported with the notebook's name
                row["status"], row["error"] = "FAILED", f"{type(err).__name__}: {err}"[:300]
            row["seconds"] = time.time() - start
            print(f"  {row['status']} in {row['seconds']:.1f} s", flush=True)
        row["targets"], row["gpu"] = findings(row["notebook"], executed)
        rows.append(row)
    text = report(
        rows,
        device=device_name,
        budget=args.budget,
        environment=environment_line("cuda" if device_name != "cpu" else "cpu"),
        dry_run=args.dry_run,
    )
    path = repo_root() / args.report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text)
    print(f"report written to {args.report}")
    over = not args.dry_run and sum(r["seconds"] for r in rows) > args.budget
    return 1 if any(r["status"] == "FAILED" for r in rows) or over else 0


if __name__ == "__main__":
    sys.exit(main())
