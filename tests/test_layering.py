"""Data flows one way: reference -> stages -> backends -> bundle -> runtime. The runtime (and what it
reads: bundle, spec, errors, outputs) never imports the export side, so an app-side install needs neither
transformers nor the converters, and its ONNX path needs no torch."""

from __future__ import annotations

import ast
from pathlib import Path

import edgetam_export

PACKAGE = Path(edgetam_export.__file__).parent
EXPORT_SIDE = ("transformers", "edgetam_export.backends", "edgetam_export.export", "edgetam_export.reference",
               "edgetam_export.verification.samples", "edgetam_export.stages.registry")
TORCH_FREE = ["bundle.py", "recipes.py", "errors.py", "safe_output.py", "verification/sample_data.py", "progress.py", "model_card.py", "stages/spec.py",
              *[p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "runtime").rglob("*.py")
                if p.name != "executorch.py"]]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_runtime_never_imports_the_export_side():
    """Followed through every module the runtime reaches, lazy imports included (a recipe that imported the stage
    registry inside a method once pulled torch and transformers into the runtime through `bundle.py`)."""
    graph = package_imports()
    for start in [name for name in graph if name.startswith("edgetam_export.runtime")]:
        reached, stack = {start}, [start]
        while stack:
            for name in graph[stack.pop()] - reached:
                reached.add(name)
                stack.append(name)
        for name in reached:
            bad = {m for m in imports(module_path(name)) if m.startswith(EXPORT_SIDE)}
            assert not bad, f"{start} reaches {name}, which imports {bad}"


def module_path(name: str) -> Path:
    relative = Path(*name.split(".")[1:])
    return PACKAGE / relative.with_suffix(".py") if (PACKAGE / relative.with_suffix(".py")).is_file() \
        else PACKAGE / relative / "__init__.py"


def test_runtime_modules_need_no_torch():
    """Only the ExecuTorch runner may import torch (ExecuTorch's Python runtime is built on it)."""
    for relative in TORCH_FREE:
        bad = {name for name in imports(PACKAGE / relative) if name.split(".")[0] in ("torch", "executorch")}
        assert not bad, f"{relative} imports {bad}"


def package_imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at the top or inside functions), from the source."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("edgetam_export", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        # Importing a.b.c runs the package a.b first: its __init__ is part of the import.
        found |= {m.rsplit(".", depth)[0] for m in set(found) for depth in range(1, m.count("."))}
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycles():
    """Quantization, lowering and runners import downwards only (a backend calling back into `export` was a cycle)."""
    graph = package_imports()

    def reaches(start: str, target: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt == target:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, cycles
