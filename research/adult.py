"""Loading the Adult data set shipped in ``research/data/adult`` (hash-checked)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd

RESEARCH_DIR = Path(__file__).resolve().parent
DATA_DIR = RESEARCH_DIR / "data" / "adult"
SERVER_DIR = RESEARCH_DIR.parent / "backend" / "server"

# Training and serving share one schema and one encoding: import them from the service.
if str(SERVER_DIR) not in sys.path:
    sys.path.insert(0, str(SERVER_DIR))

from apps.ml.income_classifier import schema as schema  # noqa: E402  (re-exported)


class DataIntegrityError(RuntimeError):
    pass


def verify_hashes(data_dir: Path = DATA_DIR) -> dict[str, str]:
    """Check every file listed in SHA256SUMS; raise naming the first one that differs."""
    expected: dict[str, str] = {}
    for line in (data_dir / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.lstrip("*")] = digest
    for name, digest in expected.items():
        actual = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        if actual != digest:
            raise DataIntegrityError(
                f"{data_dir / name}: sha256 {actual} does not match SHA256SUMS ({digest}). "
                "Copy the file again from the UCI distribution."
            )
    return expected


def load_split(name: str, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """``adult.data`` or ``adult.test`` as a frame: missing values NaN, labels normalised."""
    frame = pd.read_csv(
        data_dir / name,
        names=list(schema.COLUMNS),
        skipinitialspace=True,
        na_values=[schema.MISSING_MARKER],
        # adult.test starts with a line "|1x3 Cross validator".
        comment="|",
        skip_blank_lines=True,
    )
    frame[schema.LABEL] = frame[schema.LABEL].map(schema.normalise_label)
    return frame
