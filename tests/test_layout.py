"""The package's layout: no import circles between modules or packages, no giant module.

The import graph is read with :mod:`ast` from the source, not from ``sys.modules``, so a
circle is found whether or not some test happens to import its modules in the order
that breaks. Each ``import`` of a ``robot_daemon`` module is an edge, with two rules:

* imports under ``if TYPE_CHECKING:`` do not count: they never run;
* imports inside functions **do** count. A lazy import only delays a dependency, it does
  not remove it: ``fleet.decode`` importing ``fleet.dataset`` inside a function while
  ``fleet.dataset`` imports ``fleet.decode`` at the top is the same tangle, one call
  later. Lazy imports stay where they keep an optional extra (mcap, Dask, pyarrow,
  prometheus-client) out of the robot's runtime; they must point one way like any other.

Importing ``a.b.c`` also runs ``a/b/__init__.py``, so it is an edge to ``a.b`` as well
(except from inside ``a.b`` itself). The package graph joins the modules of each
subpackage (``robot_daemon.serve``, ``robot_daemon.learn``, ...) into one node, each
top-level module being a node of its own: ``serve -> learn -> serve`` is a circle even
when it runs through different modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robot_daemon"
ROOT = "robot_daemon"
#: Longest module, in lines: past this a module holds more than one concern.
MAX_LINES = 600


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (path, whether it is a package's ``__init__``), for every module."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``body``, at any depth (functions and classes included),
    but none under ``if TYPE_CHECKING:`` (its ``else`` branch does run)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _imports([child])
                elif isinstance(child, ast.excepthandler):
                    yield from _imports(child.body)


def _targets(
    name: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str]
) -> Iterator[str]:
    """The ``robot_daemon`` modules that ``node``, in module ``name``, imports."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: from the package of ``name``
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        # ``from a.b import c``: the module a.b.c if there is one, else a name in a.b.
        wanted = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                  for alias in node.names]
    for target in wanted:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target:
            yield target


def module_graph() -> dict[str, set[str]]:
    """Module -> the ``robot_daemon`` modules it imports (the module docstring's rules)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree.body):
            for target in _targets(name, is_package, node, set(modules)):
                parts = target.split(".")
                # The packages whose __init__ runs on the way (not those ``name`` is in).
                for i in range(2, len(parts) + 1):
                    step = ".".join(parts[:i])
                    if step != name and not name.startswith(step + "."):
                        graph[name].add(step)
    return graph


def _unit(name: str) -> str:
    """The package graph's node of module ``name``: its subpackage, or itself."""
    parts = name.split(".")
    return ".".join(parts[:2])


def package_graph() -> dict[str, set[str]]:
    """Subpackage (or top-level module) -> those it imports; ``robot_daemon`` itself left
    out (its ``__init__`` holds only the version)."""
    graph: dict[str, set[str]] = {}
    for name, targets in module_graph().items():
        if name == ROOT:
            continue
        graph.setdefault(_unit(name), set()).update(
            _unit(t) for t in targets if t != ROOT and _unit(t) != _unit(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` if it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    graph = module_graph()
    # robot_daemon.sim.bag imports robot_daemon.bag inside write_bag (the mcap extra).
    assert "robot_daemon.bag" in graph["robot_daemon.sim.bag"]
    # robot_daemon.serve.daemon names the Model type under TYPE_CHECKING only.
    assert "robot_daemon.model" not in graph["robot_daemon.serve.daemon"]


def test_no_module_imports_itself_through_others() -> None:
    cycle = find_cycle(module_graph())
    assert cycle is None, f"import circle between modules: {' -> '.join(cycle)}"


def test_no_package_imports_itself_through_others() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, f"import circle between packages: {' -> '.join(cycle)}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE.parent)} has {lines} lines (at most {MAX_LINES}): split"
        " it along one of its concerns")
