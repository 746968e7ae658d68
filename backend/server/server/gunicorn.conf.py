"""gunicorn settings for production: ``gunicorn -c server/gunicorn.conf.py server.wsgi``
from backend/server (``bin/serve`` does that after migrating). Everything from the
environment; see docs/operations.md, "Production"."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from gunicorn import glogging

# Nothing from prometheus_client here at the top: it picks its value storage (files or
# memory) when first imported, so PROMETHEUS_MULTIPROC_DIR must be set before that.


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate at the same time malloc arenas of their own, up to
    eight per core, and memory freed into one serves no other. With gthread workers and
    batch uploads (a model thread and a writer thread beside the request's), a worker's
    peak RSS after the same 10k-row upload varied from 225 to 340 MB; with two arenas it
    stayed at 216-228 (bench/batch_bench.py). Set here, in the master before it forks the
    workers, so every way of starting the server gets it. MALLOC_ARENA_MAX in the
    environment wins: glibc reads it itself."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    try:  # a libc.so.6 without mallopt (musl's compatibility layer) must not stop gunicorn
        mallopt = getattr(ctypes.CDLL("libc.so.6"), "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        m_arena_max = -8  # from glibc's malloc.h
        mallopt(m_arena_max, arenas)


_cap_malloc_arenas()

# One native thread per worker for OpenMP and BLAS, unless the environment says otherwise:
# the workers already use the cores, and the threads scikit-learn's histogram boosting or
# numpy's BLAS start for each call fight over them. Set before the app is preloaded (the
# libraries read these when they load). Measured with bench/any_model_bench.py: a one-row
# HistGradientBoosting predict answered 240 req/s instead of 170 at one connection, p99
# 6 ms instead of 18.
_NATIVE_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _name in _NATIVE_THREADS:
    os.environ.setdefault(_name, "1")

# The loopback unless HOST says otherwise: production runs behind a proxy on the same host
# (deploy/nginx/ml_pipeline.conf) that reads each request whole before it takes one of the
# threads here. On every interface, slow clients could go around it and hold all of them
# (apps/ops/tests/test_slow_clients.py). HOST=0.0.0.0 listens on all interfaces: in a
# container, say, whose proxy is outside it.
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
# WEB_CONCURRENCY is the convention of Heroku-style platforms; gunicorn reads it too.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads overlap a request's database wait with another's model call; the model calls
# themselves hold the GIL for most of their time, so processes bring the parallelism.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# A keep-alive connection stays with the worker that accepted it for its life: 8 clients'
# connections split 7:1 between two workers now and then, and one worker did 20 CPU-s to
# the other's 7 (issue 30). As nginx's keepalive_requests does, a connection is closed
# (``Connection: close``) after KEEPALIVE_REQUESTS answers (0: never); the client opens
# another, which goes to whichever worker accepts it first. bench/workers_bench.py, 10
# rounds at 8 connections: the larger worker's share of the CPU was at most 60 % in 6
# rounds of 10 pinned (worst 76 %), 9 with reuse_port (worst 100 %: the kernel's hash put
# every connection on one worker), 10 when closed after 25 (worst 54 %), at no cost seen
# at 1 connection (docs/decisions.md).
keepalive_requests = int(os.environ.get("KEEPALIVE_REQUESTS", "25"))


def pre_request(worker: Any, req: Any) -> None:
    if keepalive_requests and req.req_number >= keepalive_requests:
        req.must_close = True  # the answer says Connection: close, and the worker closes it


timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))  # a large batch may take seconds
graceful_timeout = 30
# Import Django (and pandas, scikit-learn) once in the master and fork the workers from it:
# they start in a fraction of the time and share those pages. Safe because importing the
# app opens no database connection and loads no model (MlConfig.ready() touches neither);
# each worker connects and loads the models it serves on first use or first /readyz.
preload_app = True
# gunicorn's runtime control socket (gunicornc) is not used here, and its default path is
# one per user: a second server on the same host would take it over.
control_socket_disable = True

# Logs: our own access line with the request id comes from Django (server/request_id.py);
# gunicorn's access log would repeat it without the id.
accesslog = None


class AccessLineFromDjango(glogging.Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger, minus its access line unless ``accesslog`` (or syslog) asks for
    one. gunicorn builds that line for every request whenever a logging configuration is
    given (as ``logconfig_dict`` below is), then drops it for want of a handler: 4.7 % of a
    worker's time holding the GIL under load (py-spy --gil, 8 connections)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        to_syslog = self.cfg.syslog and not self.cfg.disable_redirect_access_to_syslog
        if self.cfg.accesslog or to_syslog:
            super().access(resp, req, environ, request_time)


logger_class = AccessLineFromDjango
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [-] gunicorn: %(message)s"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "plain",
        },
    },
    # Django configures the root logger in each worker (settings.LOGGING).
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False}
    },
}

# Prometheus multiprocess mode: each worker writes its counters to files in this folder and
# /metrics adds them up. It must be set before a worker imports prometheus_client, and be
# emptied of its metric files at each start, or counts of an earlier run would be added in.
# The default is one folder per port, removed again when the server stops.
_default_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
_metrics_dir = Path(
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR",
        str(Path(tempfile.gettempdir()) / f"ml_pipeline_metrics_{os.environ.get('PORT', '8000')}"),
    )
)
_metrics_dir.mkdir(parents=True, exist_ok=True)
for _stale in _metrics_dir.glob("*.db"):
    _stale.unlink()


def pre_fork(server: Any, worker: Any) -> None:
    """Everything the master has loaded (Django, pandas, scikit-learn: about 250,000
    objects the collector tracks) is moved out of the collector's reach before a worker is
    forked from it. Those objects live as long as the process, yet every full collection
    in a worker walked them all: 150-190 ms each, two to four of them during a 100,000-row
    upload, and the same pause for any request that happened to trigger one (docs/speed.md,
    "Files: where the time goes, and four changes"). Frozen, a full collection walks only
    what the worker made since, and the collector no longer writes to the pages a worker
    shares with the master (reference counts still do). The Python docs give this advice
    for servers that fork. Called again before each respawn, it freezes what the master
    made since; the master makes little."""
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream


def on_exit(server: Any) -> None:
    if _default_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def _release() -> None:
    """``manage.py release`` (migrations, static files) when ``bin/serve`` asks for it
    (``RELEASE_ON_START``: ``all``, or ``static`` with SKIP_MIGRATE=1), as gunicorn's master
    reads this file: a Python process of its own imported Django, pandas and scikit-learn
    again (2.5 s here) on every start. Before the app is preloaded, because whitenoise
    lists STATIC_ROOT's files when the app is made; after the metrics folder is set above,
    because the app's imports read it.

    The master imports Django (which preloading does anyway), then forks a child for the
    release itself: migrating registers and checks the demo models with ONNX Runtime,
    whose thread pools must not be in the process the workers are forked from (a worker
    forked from such a master hung at exit for the whole graceful timeout). A failed
    release stops the server."""
    what = os.environ.get("RELEASE_ON_START", "")
    if not what:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    import django

    django.setup()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            from django.core.management import call_command

            call_command("release", no_migrate=what == "static")
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("The release failed (above): the server does not start.")


_release()
