"""The orchestrator's layout, read from its source (ast): imports go one way, no cycle.

Front doors (the flat modules) -> ``_core`` (what both journeys share) -> ``_namespaces``;
``_cli`` on top, imported by nothing. Every import statement counts: at module level,
inside a function, or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "orchestrator"
PACKAGE = "isolates.orchestrator"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """The orchestrator modules ``module`` imports (``from x import y``: x.y if a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> str:
    rest = module.removeprefix(PACKAGE).lstrip(".")
    first = rest.split(".")[0]
    return first if first in ("_core", "_namespaces", "_cli") else "front door"


def _edges() -> Iterator[tuple[str, str]]:
    for module, targets in GRAPH.items():
        for target in targets:
            yield module, target


@pytest.mark.parametrize(
    ("layer", "never"),
    [
        ("_core", {"front door", "_cli"}),
        ("_namespaces", {"front door", "_core", "_cli"}),
        ("front door", {"_cli"}),
    ],
)
def test_imports_go_one_way(layer: str, never: set[str]) -> None:
    wrong = [f"{a} -> {b}" for a, b in _edges() if _layer(a) == layer and _layer(b) in never]
    assert wrong == []


def test_nothing_outside_the_command_line_imports_it() -> None:
    # The command's script (bin/isolates, which pyproject.toml installs) and ``python -m``
    # reach it; no module of the library does.
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    assert 'script-files = ["bin/isolates"]' in pyproject
    script = (ROOT.parent / "bin" / "isolates").read_text()
    assert "from isolates.orchestrator._cli.main import main" in script
    assert (ROOT / "_cli" / "main.py").is_file() and (ROOT / "_cli" / "__main__.py").is_file()


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert cycles == []


def test_the_runner_reaches_its_supervisor_only_through_the_owner_protocol() -> None:
    tree = ast.parse(MODULES[f"{PACKAGE}._runner"].read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self.owner"
    }
    assert used == {"worker_done", "hand_over"}
    assert f"{PACKAGE}._supervisor" not in GRAPH[f"{PACKAGE}._runner"]
    assert f"{PACKAGE}._call" not in GRAPH[f"{PACKAGE}._runner"]


def test_only_the_lifecycle_changes_a_state() -> None:
    wrong = []
    for module, path in MODULES.items():
        if module == f"{PACKAGE}._lifecycle":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in ("state", "_state"):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Call) and _called(node) in ("check", "_to", "_move"):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert wrong == []


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
