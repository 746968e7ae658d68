"""A local nginx in front of a local gunicorn, configured by ``ml_pipeline.conf`` as
shipped: ``make proxy`` runs it, and so does apps/ops/tests/test_slow_clients.py.

    python3 deploy/nginx/local.py --port 8080 --upstream-port 8000 [--upstream-port 8001 ...]
        [--prefix DIR]

Writes into DIR (a new temporary folder unless given) ``ml_pipeline.conf`` with three
lines changed: where it listens (127.0.0.1:port), the upstream (a server line per port)
and the access log (DIR/logs/access.log). Around it goes an ``nginx.conf`` that keeps the
pid file and the temporary files in DIR and logs errors to stderr, so nginx runs without
root. Then runs nginx in the foreground (this process becomes nginx's master: stop it with
Ctrl-C or SIGTERM). Standard library only, so any Python 3.11 runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

SHIPPED = Path(__file__).with_name("ml_pipeline.conf")

# Debian puts nginx in /usr/sbin, which is not on the PATH of users other than root.
_SBIN = ("/usr/sbin", "/usr/local/sbin")

_MAIN = """\
# Written by deploy/nginx/local.py: a local nginx around ml_pipeline.conf.
{user}worker_processes 1;
pid logs/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 512;
}}
http {{
    default_type application/octet-stream;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    include ml_pipeline.conf;
}}
"""


def find_nginx() -> str | None:
    """The nginx executable, or None when it is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which("nginx", path=path)


def render(prefix: Path, *, port: int, upstream_ports: list[int]) -> Path:
    """Writes the configuration into ``prefix``; answers the path of its nginx.conf. One
    upstream server line per port, with the shipped line's parameters."""
    text = SHIPPED.read_text()
    shipped = re.search(r"^    server 127\.0\.0\.1:8000( [^;]*)?;$", text, re.MULTILINE)
    parameters = (shipped.group(1) or "") if shipped else ""
    servers = "\n".join(f"    server 127.0.0.1:{p}{parameters};" for p in upstream_ports)
    for pattern, line in [
        (r"^    listen 80;$", f"    listen 127.0.0.1:{port};"),
        (r"^    server 127\.0\.0\.1:8000( [^;]*)?;$", servers),
        (r"^    access_log /var/log/nginx/\S+ ", "    access_log logs/access.log "),
    ]:
        text, found = re.subn(pattern, line, text, flags=re.MULTILINE)
        if found != 1:  # the shipped file changed: the local one must not quietly differ
            raise SystemExit(f"{SHIPPED}: expected one line matching {pattern!r}, found {found}")
    for folder in ("logs", "tmp"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    (prefix / "ml_pipeline.conf").write_text(text)
    # nginx started by root runs its workers as nobody, who may not reach a private
    # folder (pytest's, mktemp's) to write request bodies into: here they run as root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(_MAIN.format(user=user))
    return main


def command(nginx: str, prefix: Path) -> list[str]:
    """Runs nginx in the foreground with the configuration ``render`` wrote. ``-e stderr``:
    nothing goes to /var/log/nginx/error.log, not even before the configuration is read."""
    conf = str(prefix / "nginx.conf")
    return [nginx, "-p", str(prefix), "-e", "stderr", "-c", conf, "-g", "daemon off;"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="where nginx listens")
    parser.add_argument(
        "--upstream-port",
        type=int,
        action="append",
        help="gunicorn's port (8000); once per app host to balance over several",
    )
    parser.add_argument("--prefix", type=Path, help="a folder for nginx's files")
    args = parser.parse_args(argv)
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx is not installed: apt-get install nginx")
    prefix = (args.prefix or Path(tempfile.mkdtemp(prefix="ml_pipeline_nginx_"))).resolve()
    upstreams = args.upstream_port or [8000]
    render(prefix, port=args.port, upstream_ports=upstreams)
    print(
        f"nginx on http://127.0.0.1:{args.port} in front of "
        + ", ".join(f"127.0.0.1:{p}" for p in upstreams)
        + f" (files in {prefix})",
        file=sys.stderr,
        flush=True,
    )
    argv_nginx = command(nginx, prefix)
    os.execv(argv_nginx[0], argv_nginx)


if __name__ == "__main__":
    main()
