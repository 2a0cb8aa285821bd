"""The environment report: the versions it prints are the installed ones, and it answers within seconds."""

import platform
import time
from importlib import metadata

import torch

from common.course import notebooks
from common.doctor import cxx_compiler, environment_line, report


def test_environment_line_names_the_installed_versions_and_device():
    line = environment_line("cpu")
    assert f"Python {platform.python_version()}" in line
    for name in ("torch", "torchvision", "timm", "numpy"):
        assert f"{name} {metadata.version(name)}" in line
    assert f"cpu: {platform.machine()} CPU, {torch.get_num_threads()} threads" in line


def test_report_lists_versions_and_every_notebook_in_seconds():
    start = time.perf_counter()
    text = report(timeout=1.0)
    assert time.perf_counter() - start < 10  # three network probes, each bounded by its timeout
    assert f"torch       {metadata.version('torch')}" in text
    for nb in notebooks():
        assert nb.as_posix() in text
    assert text.count("network") == 3


def test_report_names_the_deployment_libraries_and_the_compiler(monkeypatch):
    text = report(probe_network=False)
    for name in ("onnx", "onnxscript", "onnxruntime"):
        assert f"{name:<11} {metadata.version(name)} (lab 4.5)" in text
    assert "network" not in text
    monkeypatch.setenv("CXX", "/bin/true")  # a compiler named by $CXX wins
    assert cxx_compiler() == "/bin/true"
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", "/nonexistent")  # no compiler anywhere: the report says what to install
    assert cxx_compiler() is None
    assert "no C++ compiler on PATH: torch.compile fails on the CPU" in report(probe_network=False)
