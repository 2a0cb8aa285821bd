"""The package's layers, as the README draws them: a module imports only from its own layer or lower ones."""

import ast
from pathlib import Path

import common

LAYERS = {  # lowest first
    "course": ["course", "runtime", "plotting", "doctor", "statistics"],
    "models, data": [
        "attention",
        "positional",
        "blocks",
        "vit",
        "swin",
        "timm_interop",
        "datasets",
        "sine_waves",
        "recall",
        "captions",
        "dates",
    ],
    "training": ["training", "checkpoints", "sequence_models", "seq2seq"],
    "methods": [
        "dino",
        "dino_train",
        "dino_eval",
        "attention_analysis",
        "position_tables",
        "diagnostics",
        "benchmark",
        "model_selection",
        "deployment",
        "clip",
    ],
    "recipes": ["reference_models"],
}
LEVEL = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
PACKAGE = Path(common.__file__).parent


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("common."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "common":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("common."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(LEVEL), "add new modules to LAYERS here and to the README's layout"


def test_imports_only_go_down():
    upward = [
        f"{m} ({name}) imports {d} ({list(LAYERS)[LEVEL[d]]})"
        for name, modules in LAYERS.items()
        for m in modules
        for d in imports_of(m)
        if LEVEL[d] > LEVEL[m]
    ]
    assert not upward, upward


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in LEVEL}
    done, active = set(), []

    def visit(m):
        assert m not in active, f"import cycle: {' -> '.join([*active[active.index(m) :], m])}"
        if m in done:
            return
        active.append(m)
        for d in graph[m]:
            visit(d)
        active.pop()
        done.add(m)

    for m in graph:
        visit(m)
