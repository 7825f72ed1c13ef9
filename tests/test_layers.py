"""The one rule of the layout: data and code flow one way, interp → probes → apps.

- ``interp`` (core) imports neither ``probes`` nor ``apps``;
- ``probes`` (measures) imports ``interp`` only, never ``apps``;
- ``apps`` (dashboard, reports, CLI) may import both;
- no two files import each other, directly or through a loop.

Every module's AST is walked, imports inside functions included, and so are
``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name.
Imports under ``if TYPE_CHECKING:`` count too: a type-only loop is still a loop a reader has to follow.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "probes", "apps")
#: which packages each package may import (itself included)
ALLOWED = {"interp": {"interp"}, "probes": {"interp", "probes"}, "apps": {"interp", "probes", "apps"}}


@dataclass(frozen=True)
class Edge:
    src: str  # importing module, dotted
    dst: str  # imported module, dotted (resolved to a module of ours)
    file: str  # path relative to the tree's root
    line: int
    text: str

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the three packages by dotted name (packages as their __init__)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, path: Path, node: ast.AST) -> list[str]:
    """Dotted names one AST node imports (candidates: ``from a import b`` may name module a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _absolute(module, path, node)
        return [f"{base}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call):
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return [arg.value]
    return []


def import_edges(root: Path = ROOT) -> list[Edge]:
    modules = module_files(root)
    edges: dict[tuple[str, str, int], Edge] = {}  # one edge per (file, module, line), however many names
    for module, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, filename=str(path))):
            for target in _targets(module, path, node):
                dst = _resolve(target, modules)
                if dst is None or dst == module:
                    continue
                rel = path.relative_to(root).as_posix()
                edges.setdefault((module, dst, node.lineno),
                                 Edge(module, dst, rel, node.lineno, lines[node.lineno - 1].strip()))
    return list(edges.values())


def layer_violations(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        src_pkg, dst_pkg = e.src.split(".")[0], e.dst.split(".")[0]
        if dst_pkg not in ALLOWED[src_pkg]:
            out.append(f"{e.where()}  ({src_pkg} must not import {dst_pkg})")
    return out


def import_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One representative loop per strongly connected component of the file graph (Tarjan).

    A package ``__init__`` that re-exports its own submodules is not a loop with them as long as no
    submodule imports the package back; such an import is reported like any other.
    """
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.src, []).append(e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph.get(v, []):
            if e.dst not in index:
                visit(e.dst)
                low[v] = min(low[v], low[e.dst])
            elif e.dst in on_stack:
                low[v] = min(low[v], index[e.dst])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_loop_in(comp, graph) for comp in components]


def _loop_in(comp: list[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest loop through the component's first module, as the import edges that make it."""
    members = set(comp)
    start = min(comp)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph.get(v, []):
                if e.dst == start:
                    return [*paths[v], e]
                if e.dst in members and e.dst not in paths:
                    paths[e.dst] = [*paths[v], e]
                    nxt.append(e.dst)
        frontier = nxt
    raise AssertionError(f"no loop found in component {comp}")


def test_layers_import_one_way():
    bad = layer_violations(import_edges())
    assert not bad, "imports against the layers (interp ← probes ← apps):\n" + "\n".join(bad)


def test_no_import_cycles():
    loops = import_cycles(import_edges())
    text = "\n\n".join("\n".join(e.where() for e in loop) for loop in loops)
    assert not loops, f"{len(loops)} import loop(s), each shown as the imports that close it:\n{text}"


# ---------------------------------------------------------------- the checker itself, on a synthetic tree
def _write(tmp: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_lazy_and_importlib_imports(tmp_path):
    _write(tmp_path, {
        "interp/__init__.py": "",
        "interp/core.py": "def f():\n    from probes import m\n",
        "interp/other.py": "import importlib\nimportlib.import_module('apps.ui')\n",
        "probes/__init__.py": "", "probes/m.py": "from interp import core\n",
        "apps/__init__.py": "", "apps/ui.py": "import probes.m\n",
    })
    bad = layer_violations(import_edges(tmp_path))
    assert any("interp/core.py:2: from probes import m" in b for b in bad)
    assert any("interp/other.py:2: importlib.import_module('apps.ui')" in b for b in bad)
    assert not any(b.startswith("probes/") or b.startswith("apps/") for b in bad)


def test_checker_finds_loops_through_relative_and_function_imports(tmp_path):
    _write(tmp_path, {
        "interp/__init__.py": "", "interp/a.py": "from .b import x\n",
        "interp/b.py": "def g():\n    import interp.c\n", "interp/c.py": "from interp.a import y\n",
        "probes/__init__.py": "", "apps/__init__.py": "",
    })
    loops = import_cycles(import_edges(tmp_path))
    assert len(loops) == 1
    assert [(e.src, e.dst) for e in loops[0]] == [("interp.a", "interp.b"), ("interp.b", "interp.c"),
                                                  ("interp.c", "interp.a")]
