"""The service's imports run one way: edge → api / oip → pipeline, with no loop.

Read from the source with ``ast`` (imports inside functions included), so a test fails the
moment a module reaches the wrong way, before anything runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module this file imports, anywhere in it, as absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path if path.name == "__init__.py" else path.parent, root)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SERVICE.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules} for name, path in modules.items()}


def test_no_import_loop_in_the_service() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            loop = [*stack[stack.index(name) :], name]
            raise AssertionError("import loop: " + " → ".join(loop))
        if name in done:
            return
        for target in sorted(graph[name]):
            # A package's __init__ importing its own modules is how packages work, not a loop.
            if not target.startswith(name + "."):
                visit(target, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


# (package, what it must never import): the data path knows no HTTP, the REST API no other
# protocol and no server, and nothing in the service knows torch or the exporter.
FORBIDDEN = [
    ("service", ("torch", "torchvision", "model_export")),
    ("service.pipeline", ("fastapi", "starlette", "uvicorn", "service.api", "service.oip")),
    ("service.pipeline", ("service.edge", "service.app")),
    ("service.api", ("service.oip", "service.edge", "service.app", "uvicorn")),
    ("service.oip", ("service.edge", "service.app", "uvicorn")),
]


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN)
def test_imports_run_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    folder = ROOT.joinpath(*package.split("."))
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert not wrong, wrong


def test_only_the_edge_touches_uvicorn_internals() -> None:
    """uvicorn's protocol classes and its request cycle (``receive.__self__``) are read in
    service/edge/ only; everywhere else sees plain ASGI."""
    edge = SERVICE / "edge"
    wrong = []
    for path in sorted(SERVICE.rglob("*.py")):
        if edge in path.parents:
            continue
        text = path.read_text()
        internal = [n for n in _imports(path) if n.startswith("uvicorn.protocols")]
        if internal or "__self__" in text:
            wrong.append(str(path.relative_to(ROOT)))
    assert not wrong, f"uvicorn internals outside service/edge/: {wrong}"


def test_the_layout_checks_can_fail(tmp_path: Path) -> None:
    """The reader above sees imports inside functions and relative ones."""
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "mod.py"
    module.write_text("def f():\n    from .other import thing\n    import torch\n")
    assert _imports(module, tmp_path) >= {"pkg.other", "pkg.other.thing", "torch"}
