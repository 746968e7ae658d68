"""Imports run one way, down the rooms of ``LAYERS``, and never in a circle.

Read from the source, so a violation fails here rather than as an import error that depends
on which module happens to load first. Every import counts: at module level, inside a
function (a late import is still a dependency, only a cheaper one), and under
``if TYPE_CHECKING:`` (a circle of types is a circle of ideas). A package that is in no
layer fails too: a new room is placed on purpose, with this list edited.
"""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

APPS = Path(settings.BASE_DIR) / "apps"

# Top to bottom: a module may import its own layer and the layers below it, never one
# above. Entries are package or module prefixes; the longest that matches places a module.
# docs/decisions.md ("Layout") draws the same order.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("apps.ops",),  # observes everything; nothing imports it
    (  # the edge: wiring and the operator's screens
        "apps.endpoints.apps",
        "apps.endpoints.urls",
        "apps.endpoints.admin",
        "apps.endpoints.management",
    ),
    ("apps.endpoints.views",),  # one module per concern: parse, call one service, answer
    ("apps.endpoints.serializers",),
    ("apps.endpoints.api",),  # throttling, login lockouts, OpenAPI, the error shape
    ("apps.endpoints.batch",),  # batch-predict and batch jobs
    ("apps.endpoints.serving",),  # predict, the request log, feedback, retention
    ("apps.endpoints.shadows",),  # a candidate on a copy of live traffic, compared in pairs
    ("apps.endpoints.experiments",),  # A/B tests, statistics, evaluation, reports
    ("apps.endpoints.catalogue",),  # endpoints, versions, statuses, registration
    ("apps.endpoints.monitoring",),  # drift: reference profiles and the current window
    ("apps.endpoints.policy",),  # who may do what
    ("apps.endpoints.models", "apps.endpoints"),
    # models without a database, in rooms of their own:
    ("apps.ml.apps", "apps.ml.registry", "apps.ml.intake"),  # loading and registering
    ("apps.ml.kinds",),  # the table of kinds, and one module per kind
    ("apps.ml.income_classifier",),  # the Adult bundles' runtime
    ("apps.ml.compiled", "apps.ml.shared_store", "apps.ml.artifacts"),
    # the one interface every kind implements; a large batch's call over the cores
    ("apps.ml.runtime", "apps.ml.parallel"),
    ("apps.ml.codecs", "apps.ml.answer"),  # requests in, answers out
    ("apps.ml.signature", "apps.ml"),
    ("apps.core",),  # errors, telemetry, per-process state (remembered reads, one per process)
)


def module_name(path: Path) -> str:
    parts = path.relative_to(APPS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> dict[str, Path]:
    """Every module of ``apps`` but its tests and migrations (and the empty ``apps``)."""
    return {
        module_name(path): path
        for path in APPS.rglob("*.py")
        if "tests" not in path.parts and "migrations" not in path.parts and path.parent != APPS
    }


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports anywhere in it. ``from package import module``
    depends on the module; ``from module import name``, on the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def layer_of(module: str) -> int | None:
    """The index of the layer whose longest prefix matches ``module``; None if none does."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted(name for name in production_modules() if layer_of(name) is None)
    assert unplaced == [], "place each new package in server/test_layers.py's LAYERS"


def test_no_import_runs_back_up() -> None:
    upward = {
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if (layer_of(target) or 0) < (layer_of(name) or 0)  # None: the test above fails
    }
    assert sorted(upward) == []


def test_nothing_imports_operations() -> None:
    importers = sorted(
        name
        for name, targets in graph().items()
        if not name.startswith("apps.ops") and any(t.startswith("apps.ops") for t in targets)
    )
    assert importers == [], "apps.ops observes; counters the product updates live in core"


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


def test_the_layer_test_sees_a_late_and_a_type_checking_import(tmp_path: Path) -> None:
    """The reader itself: an import inside a function or under TYPE_CHECKING counts."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from apps.core.errors import NotFound\n"
        "def f():\n    from apps.ml import codecs\n"
    )
    assert imports_of(source, {"apps.core.errors", "apps.ml.codecs", "apps.ml"}) == {
        "apps.core.errors",
        "apps.ml.codecs",
    }
