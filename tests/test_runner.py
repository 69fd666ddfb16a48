"""``python -m analysis`` is one argparse tree, and the packages have no import cycle.

* the top-level help lists every command, and every subcommand of the tree carries its entry point (``func``);
* a static import graph of ``analysis/``, ``audio_tasks/`` and ``interventions/`` (every ``import`` statement, at
  module level or inside a function, plus ``importlib.import_module("...")`` / ``__import__("...")`` calls with a
  literal name; imports under ``if TYPE_CHECKING:`` are not run and are left out): the packages import one way,
  ``analysis`` has no cycle (the old ``runner`` <-> ``demo`` one included), and the whole graph's remaining cycles
  (outside ``analysis``) are listed below.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "audio_tasks", "interventions")
COMMANDS = ("lens", "trace", "heads", "calibrate", "critical", "report", "compare", "leaderboard", "regress", "mmau",
            "demo")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    acts = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(acts) == 1, "python -m analysis has one level of subcommands"
    return dict(acts[0].choices)


def test_help_lists_every_command():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "analysis", "--help"], cwd=str(REPO), env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    listed = p.stdout.split("positional arguments:")[1]
    for cmd in COMMANDS:
        assert f"\n    {cmd} " in listed or f"\n    {cmd}\n" in listed, f"`{cmd}` missing from --help:\n{p.stdout}"


def test_every_subcommand_has_an_entry_point():
    from analysis import runner

    subs = _subcommands(runner.build_parser())
    assert set(subs) == set(COMMANDS)
    for name, sp in subs.items():
        func = sp.get_default("func")
        assert callable(func), f"`{name}` has no entry point"
        assert sp.prog == f"python -m analysis {name}"
        assert not [a for a in sp._actions if isinstance(a, argparse._SubParsersAction)], name


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    """Every module name ``module`` imports (``from a import b`` yields ``a.b``: module ``a.b`` if there is one,
    else ``a``, see :func:`import_graph`)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names.extend(f"{base}.{a.name}" for a in node.names)  # a module, or else a name of ``base``
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if fname in ("import_module", "__import__"):
                names.append(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (an import of ``a.b.c`` counts for the deepest existing one)."""
    files = {_module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps = set()
        for name in _imported_names(tree, mod, path.name == "__init__.py"):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != mod:
                deps.add(name)
        graph[mod] = deps
    return graph


@lru_cache(maxsize=1)
def repo_graph() -> dict[str, set[str]]:
    """The project's import graph (read once; the tests below do not change it)."""
    return import_graph()


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := dfs(v)):
                return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (c := dfs(u)):
            return c
    return None


def test_cycle_finder_finds_function_level_and_import_module_cycles(tmp_path):
    pkg = tmp_path / "analysis"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import importlib\n\ndef f():\n    return importlib.import_module('analysis.b')\n")
    (pkg / "b.py").write_text("def g():\n    from analysis.a import f\n    return f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from analysis import a\n"
                              "from . import b\nfrom analysis import not_a_module\n")
    graph = import_graph(tmp_path, ("analysis",))
    assert graph["analysis.a"] == {"analysis.b"} and graph["analysis.b"] == {"analysis.a"}
    assert graph["analysis.c"] == {"analysis", "analysis.b"}
    assert find_cycle(graph) in (["analysis.a", "analysis.b", "analysis.a"], ["analysis.b", "analysis.a", "analysis.b"])
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path, ("analysis",))) is None


def test_packages_import_one_way():
    """docs/CONTRACTS.md: ``interventions`` imports neither ``audio_tasks`` nor ``analysis``; ``audio_tasks`` does not
    import ``analysis`` (so a cycle through ``analysis`` lies inside ``analysis``)."""
    wrong = [(a, d) for a, deps in repo_graph().items() for d in deps
             if (a.startswith("interventions") and not d.startswith("interventions"))
             or (a.startswith("audio_tasks") and d.startswith("analysis"))]
    assert wrong == []


def test_no_import_cycle_in_analysis():
    graph = repo_graph()
    assert "analysis.runner" in graph and "analysis.demo" in graph
    sub = {m: {d for d in deps if d.split(".")[0] == "analysis"} for m, deps in graph.items()
           if m.split(".")[0] == "analysis"}
    cycle = find_cycle(sub)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The whole project: function-level imports count (they are what hid the old runner <-> demo cycle).
def test_no_import_cycle_in_the_packages():
    graph = repo_graph()
    assert "analysis.runner" in graph and "interventions.engine" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
