"""The package's import graph: no cycles between smallcovid modules, no Streamlit, no dangling imports.

Every module under ``smallcovid/`` is parsed with :mod:`ast` (nothing is imported).
Each ``import`` statement counts, at module level or inside a function, except those
under ``if TYPE_CHECKING:`` (they never run). Edges go module -> module:

- ``import smallcovid.x.y`` -> ``smallcovid.x.y`` (not the parent package's ``__init__``);
- ``from smallcovid.x import name`` -> ``smallcovid.x.name`` if that is a module, else ``smallcovid.x``;
- relative imports are resolved against the importing module's package first.

A cycle is a set of modules that reach each other (a strongly connected component
of more than one module); the failure message shows one closed path through each,
with the file and line of every import on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "smallcovid"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

Graph = dict[str, dict[str, int]]  # module -> {imported module: first line}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(f, root): f for f in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = list(node.orelse)
        stack.extend(children)


def imported_names(module: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(absolute dotted name, line) for every import in ``path`` (any package, resolved as above)."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    nodes = sorted(_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))),
                   key=lambda n: (n.lineno, n.col_offset))
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
            continue
        if node.level:
            base_parts = package[: len(package) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            out.append((candidate if alias.name != "*" and candidate in modules else base, node.lineno))
    return out


def import_graph(root: Path = ROOT) -> tuple[Graph, list[str]]:
    """(graph of smallcovid.* -> smallcovid.* edges, imports naming no existing module)."""
    files = package_modules(root)
    modules = set(files)
    graph: Graph = {m: {} for m in modules}
    dangling = []
    for module, path in files.items():
        for name, line in imported_names(module, path, modules):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            if name not in modules:
                dangling.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
                continue
            if name != module:
                graph[module].setdefault(name, line)
    return graph, dangling


def find_cycles(graph: dict[str, dict[str, int] | set[str] | list[str]]) -> list[list[str]]:
    """One closed path [a, b, ..., a] per strongly connected component of more than one node.

    Tarjan's algorithm (iterative), then a breadth-first walk inside the component
    back to its first node for the shortest cycle through it. Self-loops count too.
    """
    succ = {n: sorted(graph[n]) for n in graph}
    for targets in list(succ.values()):
        for t in targets:
            succ.setdefault(t, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in succ[node]:
                    components.append(sorted(comp))
    cycles = []
    for comp in sorted(components):
        members, first = set(comp), comp[0]
        parent: dict[str, str] = {}
        frontier = [first]
        while frontier and first not in parent:
            nxt_frontier = []
            for n in frontier:
                for t in succ[n]:
                    if t in members and t not in parent:
                        parent[t] = n
                        nxt_frontier.append(t)
            frontier = nxt_frontier
        path = [first]
        node = parent[first]
        while node != first:
            path.append(node)
            node = parent[node]
        path.append(first)
        cycles.append(path[::-1])
    return cycles


def describe(cycle: list[str], graph: Graph, files: dict[str, Path]) -> str:
    steps = [f"  {files[a].relative_to(ROOT.parent)}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


# ------------------------------------------------------------------ the finder itself

def test_cycle_finder_finds_cycles_in_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"g"}, "g": {"f"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"], ["f", "g", "f"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_graph_resolves_submodules_names_and_relative_imports(tmp_path):
    root = tmp_path / PACKAGE
    for folder in (root, root / "x", root / "y"):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    (root / "x" / "a.py").write_text("import smallcovid.y.b\nfrom smallcovid.y import c, helper\n")
    (root / "y" / "b.py").write_text("def f():\n    from ..x import a\n")
    (root / "y" / "c.py").write_text("from . import b\nfrom .b import f\nimport numpy\n"
                                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from smallcovid.x import a\n")
    (root / "y" / "__init__.py").write_text("helper = 1\nimport smallcovid.gone\n")
    graph, dangling = import_graph(root)
    assert graph == {
        "smallcovid": {}, "smallcovid.x": {}, "smallcovid.y": {},
        "smallcovid.x.a": {"smallcovid.y.b": 1, "smallcovid.y.c": 2, "smallcovid.y": 2},
        "smallcovid.y.b": {"smallcovid.x.a": 2},
        "smallcovid.y.c": {"smallcovid.y.b": 1},
    }
    assert dangling == [f"{PACKAGE}/y/__init__.py:2 imports smallcovid.gone"]
    assert find_cycles(graph) == [["smallcovid.x.a", "smallcovid.y.b", "smallcovid.x.a"]]


# ------------------------------------------------------------------ the package

def test_no_import_cycles_in_the_package():
    graph, _ = import_graph()
    assert len(graph) > 40 and sum(map(len, graph.values())) > 50  # the scan saw the package
    files = package_modules()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in smallcovid/:\n" + "\n".join(describe(c, graph, files) for c in cycles)


def test_every_package_import_names_an_existing_module():
    _, dangling = import_graph()
    assert not dangling, "\n".join(dangling)


def test_package_never_imports_streamlit():
    files = package_modules()
    hits = [f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
            for module, path in files.items()
            for name, line in imported_names(module, path, set(files))
            if name == "streamlit" or name.startswith("streamlit.")]
    assert not hits, "smallcovid/ must stay free of Streamlit (the app lives in app.py and pages/):\n" + "\n".join(hits)


@pytest.mark.parametrize("module", ["smallcovid.cli.main", "smallcovid.cli.train", "smallcovid.training.jobs"])
def test_entry_points_import_in_a_fresh_interpreter(module):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT.parent, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
