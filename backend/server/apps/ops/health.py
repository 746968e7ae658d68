"""Liveness and readiness, as a load balancer or an orchestrator asks for them.

Liveness says only that the process answers. Readiness says this process can serve every
algorithm in the catalogue: the database answers, and each algorithm with an active status
is loaded (loading it now if needed, which also warms a fresh worker up) from an artifact
that still has its recorded sha256; versions without a status are unloaded.

What the checks found is the operator's, not the public's (/readyz answers anyone who
reaches it, before the Host check: ``views.readyz`` shows it only with METRICS_TOKEN), so
a worker also logs why it is not ready, once each time that changes (``log_change``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from apps.core.errors import ModelUnavailable
from apps.endpoints.api import throttling
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import algorithms_with_current_status, current_status
from apps.endpoints.models import MLAlgorithm
from apps.ml import artifacts
from apps.ml.registry import MLRegistry

logger = logging.getLogger(__name__)


@dataclass
class Readiness:
    problems: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.problems


def readiness(registry: MLRegistry) -> Readiness:
    result = Readiness()
    # Reported, never a reason to be unready: throttling fails open (endpoints/throttling.py).
    result.checks["cache"] = throttling.cache_state()
    try:
        _ping_database()
    except DatabaseError as exc:
        result.checks["database"] = f"unavailable: {exc}".strip()
        result.checks["algorithms"] = "not checked: the database is unavailable"
        result.problems.append(f"database unavailable: {exc}".strip())
        return result
    result.checks["database"] = "ok"
    if not demo.ensure_registered():
        result.problems.append("the demo models are not registered (artifacts missing?)")
    servable = _servable()
    # What no longer serves (its status was taken away) is unloaded here, by the probe a
    # load balancer sends every few seconds to every worker.
    registry.retain(a.pk for a in servable)
    result.checks["algorithms"] = [_check(registry, a) for a in servable]
    for check in result.checks["algorithms"]:
        if not check["ok"]:
            result.problems.append(
                f"algorithm {check['id']} ({check['name']} {check['version']}): {check['error']}"
            )
    return result


_logged: tuple[str, ...] = ()  # the problems this process last logged
_logged_lock = threading.Lock()


def log_change(result: Readiness) -> None:
    """Log the problems when they differ from the ones last logged, and being ready
    again: a probe every few seconds must not repeat the same line."""
    global _logged
    problems = tuple(result.problems)
    with _logged_lock:
        if problems == _logged:
            return
        _logged = problems
    if problems:
        logger.warning("Not ready: %s", "; ".join(problems))
    else:
        logger.info("Ready again.")


def _ping_database() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def _servable() -> list[MLAlgorithm]:
    return [
        a for a in algorithms_with_current_status().order_by("id") if current_status(a) is not None
    ]


def _check(registry: MLRegistry, algorithm: MLAlgorithm) -> dict[str, Any]:
    status = current_status(algorithm)
    check: dict[str, Any] = {
        "id": algorithm.pk,
        "name": algorithm.name,
        "version": algorithm.version,
        "status": status.status if status else None,
        "ok": True,
    }
    try:
        runtime = registry.get(algorithm)
        # Which engine serves, and news about it (a compiled cache rebuilt because it was
        # not sealed with this service's key, say): a swapped cache shows here.
        check["engine"] = runtime.engine
        if runtime.engine_note:
            check["engine_note"] = runtime.engine_note
        # Loaded earlier, the model still serves from memory; but a worker that restarts
        # must find the same file, so the file on disk is checked too (fetched again from
        # the shared model storage, where there is one, if this host's copy went away).
        registry.ensure_local(algorithm)
        _verify_on_disk(registry.artifacts_root, algorithm)
    except ModelUnavailable as exc:
        check.update(ok=False, error=exc.message)
    loaded = registry.loaded_at.get(algorithm.pk)
    check["loaded_at"] = loaded.isoformat() if loaded else None
    return check


# (path, sha256) -> the file's (inode, size, mtime) when it last hashed to that sha256, so
# a probe every few seconds re-reads an 18 MB artifact only after the file changed.
_verified: dict[tuple[Path, str], tuple[int, int, int]] = {}
_verified_lock = threading.Lock()


def _verify_on_disk(root: Path, algorithm: MLAlgorithm) -> None:
    path = artifacts.resolve(root, algorithm.artifact)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelUnavailable(
            f"Artifact '{algorithm.artifact}' cannot be read: {exc.strerror}."
        ) from exc
    key, signature = (
        (path, algorithm.artifact_sha256),
        (stat.st_ino, stat.st_size, stat.st_mtime_ns),
    )
    with _verified_lock:
        if _verified.get(key) == signature:
            return
    if artifacts.sha256_of(path) != algorithm.artifact_sha256:
        raise ModelUnavailable(
            f"Artifact '{algorithm.artifact}' no longer matches its recorded sha256 "
            f"({algorithm.artifact_sha256[:12]}...)."
        )
    with _verified_lock:
        _verified[key] = signature
