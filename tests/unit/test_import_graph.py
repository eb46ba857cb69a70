"""The package's import graph: no circle among ``mlloop`` modules, and Airflow only below ``orchestration/``.

The graph is read from the source with ``ast`` (nothing is imported). Every runtime import counts, at
module level and inside functions alike: an import moved into a function still closes a circle, it only
hides it until the function runs. Imports under ``if TYPE_CHECKING:`` do not run and do not count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include"
ORCHESTRATION = "mlloop.orchestration"


def module_name(path: Path, root: Path) -> str:
    """Return the dotted module name of a source file below ``root``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Yield the runtime import statements of a module (functions included, TYPE_CHECKING blocks not)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path) -> set[str]:
    """Return the dotted names ``module`` imports (``from a import b``: ``a.b``), relative ones resolved."""
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[: len(package) - (node.level - 1)] + ([base] if base else []))
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return the package's module graph (module -> modules it imports) and every name each imports."""
    paths = {module_name(path, root): path for path in sorted((root / package).rglob("*.py"))}
    names = {module: imported_names(module, path) for module, path in paths.items()}
    graph: dict[str, set[str]] = {}
    for module, imported in names.items():
        targets = set()
        for name in imported:
            # ``from pkg import thing``: the submodule pkg.thing when there is one, else pkg itself.
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph, names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def airflow_importers(names: dict[str, set[str]]) -> dict[str, list[str]]:
    """Return the modules outside orchestration/ that import Airflow, with what they import."""
    return {
        module: sorted(n for n in imported if n.split(".")[0] == "airflow")
        for module, imported in names.items()
        if not (module == ORCHESTRATION or module.startswith(f"{ORCHESTRATION}."))
        and any(n.split(".")[0] == "airflow" for n in imported)
    }


def test_no_import_circle_among_mlloop_modules() -> None:
    graph, _ = import_graph(INCLUDE, "mlloop")
    assert len(graph) > 50 and "mlloop.ops.demo" in graph
    assert cycles(graph) == []


def test_no_module_outside_orchestration_imports_airflow() -> None:
    _, names = import_graph(INCLUDE, "mlloop")
    assert airflow_importers(names) == {}, "import Airflow only below include/mlloop/orchestration/"


def test_the_check_sees_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from . import a\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n"
    )
    (package / "d.py").write_text("def g():\n    import airflow.sdk\n")
    graph, names = import_graph(tmp_path, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert graph["pkg.c"] == set()
    assert airflow_importers(names) == {"pkg.d": ["airflow.sdk"]}
