"""server/gunicorn.conf.py: what it does to the process that loads it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CONF = Path(__file__).with_name("gunicorn.conf.py")

# Eight threads allocate at once, then glibc's malloc_stats() lists the arenas on stderr.
_ARENAS = """
import ctypes, runpy, sys, threading
if sys.argv[1] == "conf":
    runpy.run_path(sys.argv[2])
def work():
    for _ in range(200):
        blocks = [bytearray(4096) for _ in range(200)]
        del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(tmp_path: Path, *args: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environ |= {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env}
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_configuration_caps_malloc_arenas_at_two(tmp_path: Path) -> None:
    """Threads allocating at once get arenas of their own; the configuration caps them so
    a worker's peak memory does not jump from one upload to the next."""
    assert _arenas(tmp_path, "bare") > 2  # the control: glibc's default
    assert _arenas(tmp_path, "conf", str(CONF)) <= 2
    # An operator's MALLOC_ARENA_MAX wins.
    assert _arenas(tmp_path, "conf", str(CONF), MALLOC_ARENA_MAX="4") > 2


def test_a_libc_without_mallopt_does_not_stop_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: on a libc.so.6 without mallopt (musl's glibc compatibility layer)
    loading the configuration raised AttributeError, and gunicorn would not start."""
    import ctypes
    import runpy

    class NoMallopt:
        def __getattr__(self, name: str) -> None:
            raise AttributeError(f"undefined symbol: {name}")

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoMallopt())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    config = runpy.run_path(str(CONF))
    assert config["worker_class"] == "gthread"


def test_native_thread_pools_get_one_thread_unless_the_environment_says_otherwise() -> None:
    script = (
        "import os, runpy, sys; runpy.run_path(sys.argv[1]);"
        "print(os.environ['OMP_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'])"
    )
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}

    def run(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, str(CONF)],
            env={**environ, "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert run() == "1 1"
    assert run(OMP_NUM_THREADS="4") == "4 1"


def test_gunicorn_listens_on_the_loopback_unless_host_says_otherwise(tmp_path: Path) -> None:
    """Production runs behind a proxy on the same host (deploy/nginx/ml_pipeline.conf);
    listening on every interface would let slow clients go around it."""
    script = "import runpy, sys; print(*runpy.run_path(sys.argv[1])['bind'])"
    environ = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}

    def bind(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, str(CONF)],
            env={**environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert bind() == "127.0.0.1:8000"
    assert bind(HOST="0.0.0.0", PORT="9000") == "0.0.0.0:9000"


_ACCESS = """
import runpy, sys
from unittest import mock
from gunicorn.config import Config
settings = runpy.run_path(sys.argv[1])
config = Config()
for name in ("accesslog", "logconfig_dict", "logger_class"):
    config.set(name, settings[name])
logger = config.logger_class(config)
for accesslog in (None, "-"):  # unset, as configured; asked for (the control)
    config.set("accesslog", accesslog)
    with mock.patch.object(type(logger), "atoms", autospec=True, return_value={}) as atoms:
        logger.access(mock.Mock(), mock.Mock(), {}, mock.Mock())
    print(atoms.call_count)
"""


def test_gunicorn_builds_no_access_line_of_its_own(tmp_path: Path) -> None:
    """Django writes the access line (with the request id); gunicorn's logger, given a
    logging configuration, built one per request and dropped it. In a process of its own:
    loading the configuration sets up the metrics folder."""
    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _ACCESS, str(CONF)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["0", "1"]


_FREEZE = """
import gc, os, runpy, sys
from gunicorn.config import Config
settings = runpy.run_path(sys.argv[1])
config = Config()  # the hook as gunicorn takes it from the configuration file
config.set("pre_fork", settings["pre_fork"])
import django.db.models, pandas, sklearn.ensemble  # some of what the master preloads
print(gc.get_freeze_count())
config.pre_fork(None, None)  # gunicorn's arbiter calls it before each fork
pid = os.fork()
if pid == 0:  # the worker
    print(gc.get_freeze_count(), len(gc.get_objects(generation=2)))
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_workers_start_with_what_the_master_loaded_out_of_the_collectors_reach(
    tmp_path: Path,
) -> None:
    """Every full collection in a worker walked the objects the master had imported
    (150-190 ms each; docs/speed.md): gunicorn's pre_fork hook freezes them, and a forked
    worker inherits them frozen."""
    done = subprocess.run(
        [sys.executable, "-c", _FREEZE, str(CONF)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, frozen, oldest = map(int, done.stdout.split())
    assert before == 0
    assert frozen > 100_000, done.stdout  # Django, pandas and scikit-learn's objects
    assert oldest < frozen / 10, done.stdout  # what a full collection still walks
