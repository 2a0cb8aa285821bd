"""The environment report (``make doctor`` = ``python -m common.doctor``): what this machine offers the course.

Versions of Python and the course's libraries (lab 4.5's ONNX tools among them), whether a C++ compiler is there
for ``torch.compile`` on the CPU, the device and its name, threads, free memory, whether the optional downloads
are reachable, and which notebook profiles suit this machine. Offline it finishes in a few
seconds (the network probe times out). :func:`environment_line` is the one-line version each notebook prints
right after its parameters, so that a bug report carries it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from importlib import metadata

import psutil
import torch

from common.course import notebooks, repo_root
from common.runtime import get_device, in_colab, is_online

LIBRARIES = ("torch", "torchvision", "timm", "numpy")
# Lab 4.5 (deployment): the dynamo ONNX exporter needs onnxscript; ONNX Runtime runs and quantizes the file.
DEPLOYMENT_LIBRARIES = ("onnx", "onnxscript", "onnxruntime")
# Hosts of the optional downloads: pretrained weights (Hugging Face), CIFAR-10 (Toronto), the course on Colab.
HOSTS = {"pretrained weights": "huggingface.co", "CIFAR-10": "www.cs.toronto.edu", "GitHub": "github.com"}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would call: $CXX as Inductor reads it, else its
    default (g++ on Linux, clang++ on macOS) or the other one; None when there is none (torch.compile then fails
    on the CPU)."""
    default = ("clang++", "g++") if sys.platform == "darwin" else ("g++", "clang++")
    for name in (os.environ.get("CXX"), *default):
        if name and (found := shutil.which(name)):
            return found
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{platform.machine()} CPU"


def environment_line(device: torch.device | str | None = None) -> str:
    """One line: Python, library versions, device and threads (no network, instant)."""
    device = get_device(None if device is None else str(device))
    libs = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    where = "Colab" if in_colab() else platform.system()
    return (
        f"Python {platform.python_version()}, {libs} | {device.type}: {device_name(device)}, "
        f"{torch.get_num_threads()} threads | {where}"
    )


def report(probe_network: bool = True, timeout: float = 2.0) -> str:
    device = get_device()
    lines = [
        f"Python      {platform.python_version()} ({sys.executable})",
        *(f"{name:<11} {_version(name)}" for name in LIBRARIES),
        *(f"{name:<11} {_version(name)} (lab 4.5)" for name in DEPLOYMENT_LIBRARIES),
        "compiler    "
        + (
            f"C++ {compiler} (torch.compile on the CPU can build its kernels)"
            if (compiler := cxx_compiler())
            else "no C++ compiler on PATH: torch.compile fails on the CPU (lab 4.5 skips it); "
            "install g++ (apt-get install g++) or set CXX"
        ),
        f"device      {device.type}: {device_name(device)}",
        f"threads     {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs",
        f"memory      {psutil.virtual_memory().available / 2**30:.1f} GiB free of "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
    ]
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        lines.append(f"GPU memory  {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    if probe_network:
        for what, host in HOSTS.items():
            start = time.perf_counter()
            ok = is_online(host, timeout=timeout)
            lines.append(
                f"network     {what} ({host}): "
                + (
                    "reachable"
                    if ok
                    else f"unreachable ({time.perf_counter() - start:.1f} s): optional, skipped"
                )
            )
    online = any(is_online(host, timeout=timeout) for host in HOSTS.values()) if probe_network else False
    full = "yes" if device.type == "cuda" else "sized for one GPU (not timed on a CPU)"
    lines.append(
        f"profiles    quick: every lab, offline, on a 2-core CPU (README: measured times); full: {full}"
    )
    for nb in notebooks():
        optional = "require_online(" in (repo_root() / nb).read_text(encoding="utf-8")
        extra = f"   optional download: {'reachable' if online else 'skipped offline'}" if optional else ""
        lines.append(
            f"  {nb.as_posix():<38} quick: yes   full: {'yes' if device.type == 'cuda' else 'GPU advised'}{extra}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
