"""Where a benchmark's table goes: ``bench/out/<name>.md`` (the latest run) and appended to
``bench/out/history.md`` with its time, so every table quoted in the README can be traced
to the run that printed it. ``bench/out/`` is not committed."""

from __future__ import annotations

import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def save(name: str, table: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    latest = OUT / f"{name}.md"
    latest.write_text(table + "\n")
    with (OUT / "history.md").open("a") as history:
        history.write(f"\n## {name}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n\n{table}\n")
    return latest
