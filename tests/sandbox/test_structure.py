"""The sandbox's modules import one way: no cycle among them, not even a TYPE_CHECKING one.

Read from the source (ast): every import statement counts, at module level, under
``if TYPE_CHECKING`` or inside a function, since each is a dependency a reader follows.
``from . import x`` depends on ``x`` when it is a submodule, else on the package.

One kind of edge is let through, each named below with its reason: a method of a
lower module that imports, when called, the higher module implementing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sandbox"
Graph = dict[str, set[str]]
#: Imports that point up a layer, inside the one method that needs them.
UPWARD = {
    ("sandbox._policy", "sandbox._policy_file"): "Policy.load, from_toml and to_toml: policy "
    "files sit above the profiles (a [profile] table), which build Policies",
}


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted names ("sandbox._policy", "sandbox.profiles") of every module under root."""
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (``isolates.`` stripped)."""
    if not node.level:
        return (node.module or "").removeprefix("isolates.")
    package = module.split(".")
    base = package if is_package else package[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph(root: Path) -> Graph:
    """Module -> the modules of the same tree it imports."""
    modules = _module_names(root)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name.removeprefix("isolates.") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _imported(node, name, path.name == "__init__.py")
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [sub if sub in modules else base for sub in subs]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_sandbox_modules() -> None:
    graph = import_graph(ROOT)
    assert "sandbox._policy" in graph and "sandbox.profiles._pledge" in graph
    for low, high in UPWARD:
        assert high in graph[low], f"{low} no longer imports {high}: drop it from UPWARD"
        graph[low].discard(high)
    assert cycles(graph) == []


def test_an_upward_import_is_made_only_inside_a_function() -> None:
    for low, high in UPWARD:
        tree = ast.parse((ROOT.parent / (low.replace(".", "/") + ".py")).read_text())
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom | ast.Import)]
        named = {a.name for n in top for a in n.names} | {
            n.module or "" for n in top if isinstance(n, ast.ImportFrom)
        }
        assert high.rsplit(".", 1)[1] not in named, f"{low} imports {high} at module level"


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A cycle closed only by a TYPE_CHECKING import, or by an import inside a function,
    or through ``from . import sub``, is found (the check above cannot pass vacuously)."""
    pkg = tmp_path / "sandbox"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text("from ._b import B\n")
    (pkg / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._a import A\n"
    )
    (pkg / "_c.py").write_text("def f():\n    from isolates.sandbox import _d\n")
    (pkg / "_d.py").write_text("from ._c import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_e.py").write_text("from .. import _a\nfrom . import _f\n")
    (pkg / "sub" / "_f.py").write_text("from ._e import x\n")
    assert sorted(cycles(import_graph(pkg))) == [
        ["sandbox._a", "sandbox._b"],
        ["sandbox._c", "sandbox._d"],
        ["sandbox.sub._e", "sandbox.sub._f"],
    ]
