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
    # the labs' self-checks, reference solutions and grading cases, one module per lab (a package)
    "exercises": ["exercises"],
}
LEVEL = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
PACKAGE = Path(common.__file__).parent


def source_files(module: str) -> list[Path]:
    """A module's file, or every file of a subpackage (``exercises``)."""
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def imports_of(module: str) -> set[str]:
    found = set()
    for path in source_files(module):
        found |= _imports_in(path)
    return found - {module}


def _imports_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
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
    modules = ({p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}) | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
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


def test_concept_modules_hold_no_exercise_code():
    """Self-checks, reference solutions and grading cases live in common/exercises/, one module per lab."""
    found = [
        f"{path.name}: {node.name}"
        for module in LEVEL
        if module != "exercises"
        for path in source_files(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and (
            node.name.startswith(("check_", "reference_", "grade_"))
            or "exercise" in (ast.get_docstring(node) or "").lower()
        )
    ]
    assert not found, found
