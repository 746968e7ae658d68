"""Serving from several hosts: one-row predictions through the shipped nginx balancer, over
one app host and over two, against one host without the balancer.

    .venv/bin/python bench/lb_bench.py [--seconds 10] [--rounds 2]

Needs wrk and nginx (Debian: ``apt-get install wrk nginx``). Two "hosts" on this machine:
two gunicorn servers with the production configuration (``server/gunicorn.conf.py``: 2
workers of 4 threads each), sharing one PostgreSQL database, as app hosts of one
deployment share theirs. nginx runs as ``make proxy`` runs it (``deploy/nginx/local.py``:
the shipped file but for its ports), with a server line per host. Variants, alternated in
``--rounds`` rounds (the machine drifts), each at 1 and 8 connections:

  (a) host 1 directly;
  (b) the balancer over host 1;
  (c) the balancer over hosts 1 and 2.

On two cores, (c) cannot show scaling: both hosts share the cores that one host already
fills. What it shows is what the balancer costs ((b)/(a)) and that spreading the load
over two hosts' processes costs nothing more ((c)/(b)). docs/deployment.md puts
down on paper what N hosts on N machines would give.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from predict_bench import _PG_CREATED, Server, _pg, lua_script, records, wrk

from common import PG_ADMIN, REPO, free_port, log, save

VARIANTS = ("(a) host 1 directly", "(b) balancer over host 1", "(c) balancer over hosts 1, 2")


@contextmanager
def balancer(upstream_ports: list[int], folder: Path) -> Iterator[str]:
    """nginx in front of ``upstream_ports`` until the block ends; answers its URL."""
    port = free_port()
    command = [sys.executable, str(REPO / "deploy" / "nginx" / "local.py"), "--port", str(port)]
    for upstream in upstream_ports:
        command += ["--upstream-port", str(upstream)]
    command += ["--prefix", str(folder)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {shlex.join(command)}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    command = "python bench/lb_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for tool in ("wrk",):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    script = lua_script(records(), tmp)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        database = _pg(1)
        with ExitStack() as hosts:
            first = hosts.enter_context(Server(database, True))
            second = hosts.enter_context(Server(database, True))
            log(f"hosts on {first.url} and {second.url}, one database")
            for round_ in range(args.rounds):
                for variant in VARIANTS:
                    with ExitStack() as stack:
                        if variant.startswith("(a)"):
                            url = first.url
                        else:
                            ports = [first.port] + ([second.port] if "2" in variant else [])
                            folder = tmp / f"nginx-{round_}-{variant[1]}"
                            url = stack.enter_context(balancer(ports, folder))
                        wrk(url, script, 8, 3)  # warm: every worker loaded its model
                        for connections in (1, 8):
                            log(f"round {round_ + 1}: {variant}, {connections} connection(s)")
                            results.setdefault((variant, connections), []).append(
                                wrk(url, script, connections, args.seconds)
                            )
    finally:
        for name in _PG_CREATED:
            subprocess.run(
                ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]
            )

    def median(variant: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(variant, connections)])

    rows = []
    for variant in VARIANTS:
        for connections in (1, 8):
            rps = median(variant, connections, "rps")
            base = median(VARIANTS[0], connections, "rps")
            rows.append(
                f"| {variant} | {connections} | {rps:,.0f} | {rps / base:.2f} |"
                f" {median(variant, connections, 'p50'):.2f} |"
                f" {median(variant, connections, 'p99'):.2f} |"
                f" {median(variant, connections, 'errors'):.0f} |"
            )
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, PostgreSQL,"
            f" wrk; median of {args.rounds} alternating rounds)",
            "",
            "| variant | connections | req/s | / (a) | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print("\n" + table)
    save("lb_results", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
