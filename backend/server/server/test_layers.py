"""Imports run one way, ``apps.endpoints -> apps.ml -> apps.core``, without cycles.

Read from the source (module-level imports), so a violation fails here rather than as an
import error that depends on which module happens to load first."""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

APPS = Path(settings.BASE_DIR) / "apps"


def module_name(path: Path) -> str:
    parts = path.relative_to(APPS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in APPS.rglob("*.py")
        if "tests" not in path.parts and "migrations" not in path.parts
    }


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports at module level (not inside functions, where a
    late import is a deliberate choice, e.g. to keep pandas out of a worker; nor under
    ``if TYPE_CHECKING:``, types only). ``from package import module`` depends on the
    module; ``from module import name``, on the module."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    modules = production_modules()
    names = set(modules)
    return {
        name: {target for target in imports_of(path, names) if target != name}
        for name, path in modules.items()
    }


def test_the_ml_layer_imports_nothing_of_the_endpoints_or_operations() -> None:
    wrong = {
        name: sorted(t for t in targets if t.startswith(("apps.endpoints", "apps.ops")))
        for name, targets in graph().items()
        if name.startswith("apps.ml")
    }
    assert {name: targets for name, targets in wrong.items() if targets} == {}


def test_core_imports_no_other_layer() -> None:
    wrong = {
        name: sorted(targets)
        for name, targets in graph().items()
        if name.startswith("apps.core")
        and targets - {n for n in targets if n.startswith("apps.core")}
    }
    assert wrong == {}


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []
