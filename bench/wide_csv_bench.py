"""Wide CSV uploads: peak memory and time of a batch file of thousands of ignored columns.

    .venv/bin/python bench/wide_csv_bench.py [--rows 6000] [--columns 16500]

The attack behind commit e3f5f26: ``POST /api/v1/batch-predict`` with 6,000 rows of the
14 Adult features, ``income`` and 16.5k columns of "0". Before it, the file was parsed in
10k-row chunks whatever their width and every cell became a Python string (a worker's
peak RSS reached 2.4 GB), and the header's duplicate check was quadratic.

The file (rows sampled with replacement from ``adult.test``, seeded, and ``--columns``
extra columns of "0" with names as short as can be, so that the header fits the 64 KiB the
old code read) is written once; a narrow file of the same rows without the extra columns
is the baseline. Each variant runs ``apps.endpoints.batch.score.score_upload`` in a fresh
subprocess (settings ``server.settings_test``, a temporary SQLite database, migrated, and
a tiny Adult forest registered as the demo "random forest"), after a 50-row warm-up that
loads the model, so that its peak RSS (``ru_maxrss``) is that variant's alone:

  narrow     the file without the extra columns (the baseline of the RSS ratio);
  fix        the wide file, BATCH_MAX_COLUMNS raised above its width, otherwise the
             defaults: chunks of about BATCH_CHUNK_BYTES, only the needed columns read;
  rows       the same with BATCH_CHUNK_BYTES = 2**62: BATCH_CHUNK_ROWS-row chunks as before
             the byte bound (``usecols`` still on);
  (the "before" of e3f5f26 was run in place of the batch module until the rooms redesign
  moved every module it imports; its numbers stay in docs/speed.md)
  refused    the wide file with the default BATCH_MAX_COLUMNS: a 413 ``too_large``
             before any row is read.

Plus, in this process, the duplicate-column check alone on the wide header: the old
``header.count`` loop against the ``Counter`` of the fix (CPU seconds).
"Chunk rows used" is measured (the largest chunk the parser yielded, and how many).
Ratios within one run are what to compare: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, product
from pathlib import Path
from typing import Any

from common import OUT, REPO, SERVER, UNBOUNDED, log, save

sys.path[:0] = [str(SERVER), str(REPO / "research")]

WARM_UP_ROWS = 50
MODEL_FILE = "random_forest.joblib"  # the demo random forest's file name (demo.DEMO_MODELS)


# -- the files ---------------------------------------------------------------------------


def short_names(how_many: int, taken: set[str]) -> list[str]:
    """``how_many`` distinct column names, shortest first (a, b, ..., aa, ab, ...),
    none of them in ``taken``."""
    alphabet = string.ascii_letters + string.digits
    names: list[str] = []
    for length in count(1):
        for letters in product(alphabet, repeat=length):
            name = "".join(letters)
            if name not in taken and not name[0].isdigit():
                names.append(name)
                if len(names) == how_many:
                    return names
    raise AssertionError("unreachable")


def write_files(folder: Path, rows: int, columns: int) -> tuple[Path, Path, Path, list[str]]:
    """The wide file, the narrow one and the warm-up one; and the wide file's header."""
    from adult import load_split, schema

    frame = load_split("adult.test").sample(n=rows, replace=True, random_state=rows)
    adult = list(schema.COLUMNS)
    assert list(frame.columns) == adult, frame.columns
    lines = frame.to_csv(index=False, header=False, lineterminator="\n").splitlines()
    extra = short_names(columns, set(adult))
    header = adult + extra
    wide, narrow, warm_up = folder / "wide.csv", folder / "narrow.csv", folder / "warm_up.csv"
    suffix = ",0" * columns
    with wide.open("w", newline="") as out:
        out.write(",".join(header) + "\n")
        for line in lines:
            out.write(line + suffix + "\n")
    narrow.write_text("\n".join([",".join(adult), *lines]) + "\n")
    warm_up.write_text("\n".join([",".join(adult), *lines[:WARM_UP_ROWS]]) + "\n")
    return wide, narrow, warm_up, header


def train_model(folder: Path) -> None:
    """A tiny forest (5 trees of depth 6) under the demo random forest's file name: the
    point is parsing memory, not the model's."""
    from apps.ml.tests.factories import train_tiny_artifact

    train_tiny_artifact(folder, MODEL_FILE)


# -- one variant, in a fresh process -----------------------------------------------------


@dataclass
class Variant:
    name: str
    csv: str
    columns: int
    settings: dict[str, int]
    refusal: bool = False  # expects PayloadTooLarge


def child(spec: dict[str, Any], warm_up: str) -> dict[str, Any]:
    """Runs in the subprocess: set up Django on a fresh database, warm up, score the file
    once; what was measured, as a dict."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from apps.core.errors import PayloadTooLarge
    from apps.endpoints.catalogue import demo

    call_command("migrate", verbosity=0)
    assert demo.register(demo.DEMO_MODELS[0])
    for key, value in spec["settings"].items():
        setattr(settings, key, value)
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints.batch import reading
    from apps.endpoints.batch.score import score_upload
    from apps.endpoints.policy import Actor

    sizes: list[int] = []
    batches = reading.CsvFile.batches

    def counted(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in batches(self, *args, **kwargs):
            sizes.append(batch.size)
            yield batch

    reading.CsvFile.batches = counted  # type: ignore[method-assign]

    def score(path: str) -> Any:
        with open(path, "rb") as upload:
            return score_upload(
                upload=upload,
                endpoint_name="income_classifier",
                status=settings.PREDICT_DEFAULT_STATUS,  # as the view, without ?status=
                actor=Actor(user=AnonymousUser(), address="127.0.0.1"),
            )

    score(warm_up)
    sizes.clear()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    refused: str | None = None
    scored = 0
    try:
        scored = score(spec["csv"]).count
    except PayloadTooLarge as exc:
        if not spec["refusal"]:
            raise
        refused = f"{exc.status_code} {exc.code}"
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if spec["refusal"] and refused is None:
        raise RuntimeError("the wide file was not refused")
    return {
        "scored": scored,
        "refused": refused,
        "max_columns": settings.BATCH_MAX_COLUMNS,
        "chunk_rows": max(sizes, default=0),
        "chunks": len(sizes),
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_variant(variant: Variant, tmp: Path, env: dict[str, str], warm_up: Path) -> dict[str, Any]:
    database = tmp / f"{variant.name}.sqlite3"
    spec = {
        "csv": variant.csv,
        "settings": variant.settings,
        "refusal": variant.refusal,
    }
    script = str(Path(__file__).resolve())
    try:
        done = subprocess.run(
            [sys.executable, script, "--child", json.dumps(spec), "--warm-up", str(warm_up)],
            env=env | {"DATABASE_URL": f"sqlite:///{database}"},
            cwd=SERVER,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        for leftover in tmp.glob(f"{variant.name}.sqlite3*"):
            leftover.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"variant {variant.name} failed:\n{done.stderr[-4000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


# -- the duplicate-column check alone ----------------------------------------------------


def header_check_cpu(header: list[str]) -> tuple[float, float]:
    """CPU seconds of the old duplicate check (``header.count`` per name: quadratic) and of
    the fix's (``Counter``), best of 3 and of 20, on the same header."""

    def old() -> list[str]:
        return sorted({name for name in header if header.count(name) > 1})

    def new() -> list[str]:
        return sorted(name for name, n in Counter(header).items() if n > 1)

    def best(check: Any, times: int) -> float:
        fastest = float("inf")
        for _ in range(times):
            started = time.process_time()
            assert check() == []
            fastest = min(fastest, time.process_time() - started)
        return fastest

    return best(old, 3), best(new, 20)


# -- the table ---------------------------------------------------------------------------


def row(
    variant: str, rows: int, columns: int, file_mb: float, m: dict[str, Any], base: float
) -> str:
    chunks = f"{m['chunk_rows']:,} x {m['chunks']}" if m["chunks"] else "-"
    return (
        f"| {variant} | {rows:,} | {columns:,} | {file_mb:.1f} | {chunks} | {m['wall_s']:.3f}"
        f" | {m['cpu_s']:.3f} | {m['peak_rss_mb']:,.0f} | {m['peak_rss_mb'] / base:.2f}"
        f" | {m['rss_before_mb']:,.0f} | {m['peak_rss_mb'] - m['rss_before_mb']:,.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--columns", type=int, default=16_500, help="extra columns of '0'")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.warm_up)))
        return 0
    command = " ".join(["python bench/wide_csv_bench.py", *map(shlex.quote, sys.argv[1:])])
    tmp = Path(tempfile.mkdtemp(prefix="wide-csv-bench-"))
    try:
        return measure(args, command, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, command: str, tmp: Path) -> int:
    artifacts = tmp / "artifacts"
    env = dict(
        os.environ,
        **UNBOUNDED,
        DJANGO_SETTINGS_MODULE="server.settings_test",
        SECRET_KEY="benchmark-only",
        MODEL_ARTIFACTS_PATH=str(artifacts),
        DATABASE_URL=f"sqlite:///{tmp / 'unused.sqlite3'}",
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(SERVER), str(REPO / "research")]),
    )
    os.environ.update(env)
    import django

    django.setup()
    log("training a tiny forest")
    train_model(artifacts)
    log(f"writing {args.rows:,} rows x {args.columns:,} extra columns")
    wide, narrow, warm_up, header = write_files(tmp, args.rows, args.columns)
    wide_mb, narrow_mb = wide.stat().st_size / 2**20, narrow.stat().st_size / 2**20
    header_bytes = len(",".join(header)) + 1
    width = len(header)
    log(f"wide file {wide_mb:.1f} MiB, header {header_bytes:,} bytes, {width:,} columns")

    raised = {"BATCH_MAX_COLUMNS": width + 1}
    variants = [
        ("narrow file (baseline)", Variant("narrow", str(narrow), 15, {})),
        ("fix: bytes-bounded chunks + usecols", Variant("fix", str(wide), width, raised)),
        (
            "BATCH_CHUNK_BYTES=2**62: row chunks + usecols",
            Variant("rows", str(wide), width, raised | {"BATCH_CHUNK_BYTES": 2**62}),
        ),
    ]
    notes: list[str] = []
    variants.append(
        ("defaults: BATCH_MAX_COLUMNS={max_columns} → {refused}", Variant(
            "refused", str(wide), width, {}, refusal=True
        ))
    )  # fmt: skip

    lines: list[str] = []
    base = float("nan")
    for label, variant in variants:
        log(f"variant {variant.name}")
        m = run_variant(variant, tmp, env, warm_up)
        if not variant.refusal and m["scored"] != args.rows:
            raise RuntimeError(f"variant {variant.name} scored {m['scored']} rows")
        if variant.name == "narrow":
            base = m["peak_rss_mb"]
        label = label.format(**m)
        if variant.refusal:
            label += f" in {m['wall_s'] * 1000:.1f} ms"
        mb = narrow_mb if variant.name == "narrow" else wide_mb
        lines.append(row(label, args.rows, variant.columns, mb, m, base))
        log(lines[-1])

    log("duplicate-column check alone")
    old_cpu, new_cpu = header_check_cpu(header)
    for label, cpu in (
        (f"header check, old `header.count` loop ({old_cpu / new_cpu:,.0f}x the Counter)", old_cpu),
        ("header check, fix: `Counter`", new_cpu),
    ):
        lines.append(f"| {label} | - | {width:,} | - | - | - | {cpu:.4f} | - | - | - | - |")

    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
            "",
            "| variant | rows | columns | file MiB | chunk rows used (x chunks) | wall s | CPU s |"
            " peak RSS MB | RSS ratio to narrow | RSS before scoring MB | peak - before MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *lines,
            *(["", *notes] if notes else []),
        ]
    )
    print("\n" + table)
    OUT.mkdir(parents=True, exist_ok=True)
    save("wide_csv_results", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
