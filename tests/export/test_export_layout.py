"""Imports inside model_export run one way: the graph of its modules' imports of each other,
those inside functions included, has no cycle; and the exporter never imports the service
(both wings share only model_contract)."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "model_export"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of `module`, at any depth (functions, classes, branches)."""
    tree = ast.parse(MODULES[module].read_text("utf-8"), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _imported_names(module: str) -> Iterator[tuple[str, str | None]]:
    """(imported module, name taken from it or None) for each import of `module`."""
    is_package = MODULES[module].name == "__init__.py"
    for node in _imports(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
            continue
        base = node.module or ""
        if node.level:  # relative: resolved against the importing module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        for alias in node.names:
            yield base, alias.name


def _target(imported: str, name: str | None) -> str | None:
    """The model_export module an import loads: `from P import m` loads the module P.m when
    there is one, else P; `import a.b.c` loads the deepest of them that is a module here."""
    if name is not None and f"{imported}.{name}" in MODULES:
        return f"{imported}.{name}"
    parts = imported.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """model_export module → the model_export modules it imports (anywhere in its code)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {_target(imported, name) for imported, name in _imported_names(module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_check_sees_every_module_and_imports_inside_functions():
    assert {"model_export", "model_export.export", "model_export.weights.files"} <= set(MODULES)
    graph = import_graph()
    # The CLI imports the exporter inside main(): such an import is an edge too.
    assert "model_export.export" in graph["model_export.__main__"]
    assert "model_export.weights.hub" in graph["model_export.weights"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None


def test_model_export_imports_run_one_way():
    graph = import_graph()
    found = cycle(graph)
    assert found is None, f"import cycle: {' → '.join(found)}"


def test_the_exporter_never_imports_the_service():
    offenders = sorted(
        module
        for module in MODULES
        if any(imported.split(".")[0] == "service" for imported, _ in _imported_names(module))
    )
    assert not offenders, f"{offenders} import the service; share model_contract instead"
