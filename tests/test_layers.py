"""The layers: orchestrator -> channels -> sandbox, through public seams only.

Read from the source (ast), so no import can hide behind a function or TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"sandbox": "isolates.sandbox", "channels": "isolates.channels",
            "orchestrator": "isolates.orchestrator"}  # fmt: skip
#: What each package may import of the others (by absolute module name prefix).
NEVER = {
    "sandbox": ("isolates.channels", "isolates.orchestrator"),
    "channels": ("isolates.orchestrator", "isolates.sandbox._"),
    "orchestrator": ("isolates.sandbox._", "isolates.channels._"),
}
#: Modules with a lazy public face: their TYPE_CHECKING imports, lazy map and __all__.
FACES = ("isolates.sandbox", "isolates.sandbox.lowlevel", "isolates.channels",
         "isolates.orchestrator")  # fmt: skip


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names (``from x import _y``: x._y)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                    if a.name.startswith("_")]  # fmt: skip
    return out


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_no_package_reaches_into_anothers_private_modules(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, module in _imports(path)
        if module.startswith(NEVER[folder])
    ]
    assert wrong == []


def test_relative_imports_stay_inside_their_package() -> None:
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            depth = len(path.relative_to(ROOT / folder).parts)  # 1: the package itself
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    assert node.level <= depth, f"{path}:{node.lineno} leaves {folder}/"


def _type_checking_names(module: str) -> set[str]:
    path = Path(importlib.import_module(module).__file__ or "")
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom | ast.Import):
                    names |= {a.asname or a.name for a in stmt.names}
    return names


def _lazy_map(module: str) -> set[str]:
    path = Path(importlib.import_module(module).__file__ or "")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_EXPORTS":
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no _EXPORTS map")


@pytest.mark.parametrize("module", FACES)
def test_type_checking_imports_lazy_map_and_all_agree(module: str) -> None:
    all_names = set(importlib.import_module(module).__all__)
    assert _type_checking_names(module) == all_names, "TYPE_CHECKING imports vs __all__"
    assert _lazy_map(module) == all_names, "the lazy export map vs __all__"


@pytest.mark.parametrize("package", list(PACKAGES.values()))
def test_public_classes_and_functions_report_their_public_module(package: str) -> None:
    module = importlib.import_module(package)
    private = []
    for name in module.__all__:
        obj = getattr(module, name)
        published = isinstance(obj, type) or (callable(obj) and hasattr(obj, "__module__"))
        if published and obj.__module__ != package:
            private.append(f"{name}: {obj.__module__}")
    assert private == []
