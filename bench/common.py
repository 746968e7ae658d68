"""What the benchmarks share: the repository's paths, a timestamped progress line, a free
port for a server of their own, the processes they start (stopping them, their children,
their CPU time), and where their tables go (``save``: ``bench/out/<name>.md``
for the latest run, appended to ``bench/out/history.md`` with its time, so every table
quoted in docs/ can be traced to the run that printed it; ``bench/out/`` is not
committed)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "backend" / "server"
OUT = REPO / "bench" / "out"
ARTIFACTS = Path(os.environ.get("MODEL_ARTIFACTS_PATH") or REPO / "research" / "artifacts")
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TICK = os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 30) -> None:
    """Stop a process this benchmark started (in a session of its own) and its children."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in found.split())


def cpu_of(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads), in s; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


# A benchmark measures the service, not the bounds it sets on anonymous clients in
# production (a rate, upload sizes, jobs per client: docs/operations.md): every server and
# Django a benchmark starts runs without them, whatever the caller's environment says.
UNBOUNDED = {
    "ANONYMOUS_PREDICT_THROTTLE_RATE": "",
    "ANONYMOUS_BATCH_MAX_UPLOAD_BYTES": "0",
    "ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES": "0",
    "BATCH_JOB_MAX_ACTIVE": "0",
    "BATCH_JOB_MAX_ACTIVE_ROWS": "0",
}


def server_env(database_url: str) -> dict[str, str]:
    """The environment of the service, or of Django in this process, on that database."""
    return dict(
        os.environ,
        **UNBOUNDED,
        DATABASE_URL=database_url,
        SECRET_KEY="benchmark-only",
        MODEL_ARTIFACTS_PATH=str(ARTIFACTS),
        LOG_LEVEL="WARNING",
    )


def save(name: str, table: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    latest = OUT / f"{name}.md"
    latest.write_text(table + "\n")
    with (OUT / "history.md").open("a") as history:
        history.write(f"\n## {name}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n\n{table}\n")
    return latest


def stub_algorithm(
    *,
    endpoint: str,
    name: str,
    status: str,
    task: str = "classification",
    classes: tuple[str, ...] = ("<=50K", ">50K"),
) -> Any:
    """A catalogue row for a model the benchmark stubs out: no file, so it is written with
    the ORM rather than registered (catalogue.register_model checks a file)."""
    from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus

    parent, _ = Endpoint.objects.get_or_create(name=endpoint, defaults={"owner": "bench"})
    outputs = ["prediction", "status"] if task == "regression" else ["label", "status"]
    algorithm = MLAlgorithm.objects.create(
        parent_endpoint=parent, name=name, version="1", owner="bench", wrapper="stub",
        artifact="stub", artifact_sha256="0" * 64, sklearn_version="-", task=task,
        classes=list(classes) if task != "regression" else [], outputs=outputs,
    )  # fmt: skip
    MLAlgorithmStatus.objects.create(
        status=status, active=True, created_by="bench", parent_mlalgorithm=algorithm
    )
    return algorithm
