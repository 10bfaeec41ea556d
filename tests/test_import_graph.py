"""No import circle in uq_bias: the graph of which module imports which (at module level or
inside functions) has no cycle, so data flows one way (DESIGN.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

import uq_bias

ROOT = Path(uq_bias.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported(tree: ast.AST, modules: dict[str, Path], here: str) -> set[str]:
    """The uq_bias modules a module's source imports, anywhere in it. ``from a.b import c``
    counts as an import of ``a.b.c`` where that is a module, else of ``a.b``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules and name != here}


def import_graph() -> tuple[list[str], dict[str, set[str]]]:
    modules = module_names()
    graph = {
        name: imported(ast.parse(path.read_text()), modules, name) for name, path in modules.items()
    }
    return sorted(modules), graph


def cycles(names: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds a cycle)."""
    index = {name: k for k, name in enumerate(names)}
    rows = [index[a] for a in names for b in graph[a]]
    cols = [index[b] for a in names for b in graph[a]]
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names),) * 2)
    _, labels = connected_components(matrix, directed=True, connection="strong")
    groups = [[n for n in names if labels[index[n]] == label] for label in set(labels.tolist())]
    return sorted(group for group in groups if len(group) > 1)


def test_cycle_finder_finds_a_planted_circle():
    names = ["a", "b", "c", "d"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(names, graph) == [["a", "b", "c"]]
    assert cycles(names, {**graph, "c": set()}) == []


def test_import_graph_sees_lazy_imports():
    names, graph = import_graph()
    assert "uq_bias.bias.config" in names and "uq_bias.options" in graph["uq_bias.bias.config"]
    # the campaign loads the bias inside functions: those imports count too
    lazy = ast.parse("def f():\n    from uq_bias.bias import estimate_window\n")
    assert imported(lazy, module_names(), "x") == {"uq_bias.bias"}


def test_no_import_circle_in_uq_bias():
    names, graph = import_graph()
    assert cycles(names, graph) == [], "modules that import each other (directly or around)"
