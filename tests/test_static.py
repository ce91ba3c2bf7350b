"""Static checks of the tree: ruff and mypy as configured in pyproject.toml, and no import circle.

ruff and mypy are the ones installed next to the interpreter that runs the tests (the ``test`` extra).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> Path:
    tool = BIN / name
    if not tool.is_file():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[test]'")
    return tool


def _check(command: List[str]) -> None:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}"


def test_ruff_is_clean() -> None:
    """[tool.ruff] of pyproject.toml: pycodestyle, pyflakes and bugbear over the whole tree."""
    _check([str(_tool("ruff")), "check", "--no-cache", "."])


def test_mypy_is_clean() -> None:
    """[tool.mypy] of pyproject.toml: the dlsetup package type-checks (no cache written to the tree)."""
    _check([str(_tool("mypy")), "--cache-dir", os.devnull])


# -- imports ----------------------------------------------------------------------------------------


def _modules() -> Dict[str, Path]:
    modules = {}
    for path in (REPO / "dlsetup").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(modules: Dict[str, Path], lazy: bool) -> Dict[str, Set[str]]:
    """module -> the dlsetup modules it imports: at module level only, or with ``lazy`` also those
    imported inside functions. ``from package import name`` is an edge to ``package.name`` where that is
    a module (importing a submodule is not importing what the package's ``__init__`` imports)."""
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in (ast.walk(tree) if lazy else tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [sub for sub in subs if sub in modules]
                if len(targets) < len(subs):
                    targets.append(node.module)
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_circle() -> None:
    """No two dlsetup modules import each other, even through others, at module level."""
    assert cycles(import_graph(_modules(), lazy=False)) == []


def test_fleet_inventory_and_runner_import_no_circle_even_lazily() -> None:
    """dlsetup.fleet -> dlsetup.inventory -> dlsetup.runner must not lead back, not even through an
    import inside a function: the runner's Ansible settings live in dlsetup.runner.settings."""
    modules = _modules()
    graph = import_graph(modules, lazy=True)
    core = {m for m in modules if m in ("dlsetup.fleet", "dlsetup.inventory") or m.startswith("dlsetup.runner")}
    assert "dlsetup.runner" in graph["dlsetup.inventory"]  # the graph sees the lazy import
    assert [c for c in cycles(graph) if len(core.intersection(c)) > 1] == []
    assert not any(m.startswith("dlsetup.runner") and "dlsetup.fleet" in graph[m] for m in modules)
