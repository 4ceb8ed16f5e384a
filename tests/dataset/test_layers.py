"""The dataset package's modules import one way: no circle (not even behind TYPE_CHECKING), and nothing
below the top layer imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import shardflow.dataset

PACKAGE = "shardflow.dataset"
ROOT = Path(shardflow.dataset.__file__).parent

TOP = {f"{PACKAGE}.dataset", f"{PACKAGE}.loader"}
"""The torch layer's roots: the composition root (``StreamingDataset``) and the loader."""

BELOW = {
    f"{PACKAGE}.{name}"
    for name in (
        "pool",
        "_iteration",
        "_collate",
        "_fetch",
        "_bundles",
        "_slots",
        "_threads",
        "_epochs",
        "_units",
        "world",
        "errors",
        "stream",
        "util",
    )
}
"""Modules below the top layer: they take what they need as arguments, never the dataset or the loader."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _imports(path: Path, name: str) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, anywhere in it (functions and
    ``TYPE_CHECKING`` blocks included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in ROOT.rglob("*.py")}
    return {
        name: {target for target in _imports(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``graph`` (its modules in order, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_package_has_no_import_circle() -> None:
    graph = _graph()
    for node in graph.values():  # the facade (__init__) imports everything; modules import its modules
        node.discard(PACKAGE)
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_nothing_below_the_top_layer_imports_it() -> None:
    graph = _graph()
    assert BELOW <= set(graph), f"modules gone: {sorted(BELOW - set(graph))}; update BELOW"
    offenders = {name: sorted(graph[name] & TOP) for name in BELOW if graph[name] & TOP}
    assert not offenders, f"imported from below the top layer: {offenders}"


def test_the_walk_finds_imports_behind_type_checking_and_finds_circles(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .dataset import StreamingDataset\n"
    )
    assert f"{PACKAGE}.dataset" in _imports(probe, f"{PACKAGE}.probe")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_names() -> None:
    """Seams are public names: ``from shardflow.dataset.x import _name`` from another module is not one."""
    found = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                names = [alias.name for alias in node.names]
                private = [name for name in names if name.startswith("_") and not name.startswith("__")]
                found += [f"{_module_name(path)}: {node.module}.{name}" for name in private]
    assert not found, found
