"""The package's modules import each other without a cycle.

Every ``import`` of a ``stackgan`` module counts, also those inside functions: a late import
hides a cycle from Python but not from the reader, who still has to know which module comes
first. Only imports under ``if TYPE_CHECKING:`` (annotations, never run) are left out.
"""
import ast
from pathlib import Path

import stackgan

ROOT = Path(stackgan.__file__).parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = ("stackgan",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module):
    """The import statements of a module, wherever they are, except under ``if TYPE_CHECKING``."""
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` when there is none."""
    done, path = set(), []

    def visit(node: str) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        path.append(node)
        for nxt in sorted(graph[node]):
            if cycle := visit(nxt):
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return []


def test_the_finder_sees_a_cycle_and_a_relative_import(tmp_path):
    pkg = tmp_path / "stackgan"
    (pkg / "text").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "text" / "__init__.py").write_text("")
    (pkg / "text" / "a.py").write_text("from . import b\n")
    (pkg / "text" / "b.py").write_text("def f():\n    from ..text.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .text import a\n")
    graph = import_graph(pkg)
    assert graph["stackgan.text.a"] == {"stackgan.text.b"} and graph["stackgan.c"] == set()
    assert find_cycle(graph) == ["stackgan.text.a", "stackgan.text.b", "stackgan.text.a"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"stackgan.commands", "stackgan.text.cache", "stackgan.pipeline"} <= set(graph)  # it read the package
    assert find_cycle(graph) == []
