"""Train the demo models and write their artifacts.

    python research/train.py [--out DIR] [--only adult|sklearn]

The Adult income classifiers: verifies the data against SHA256SUMS, fits the shared
preprocessing on ``adult.data``, trains a random forest and an extra trees classifier
with fixed seeds, reports accuracy on the official ``adult.test`` split, and writes
``<name>.joblib`` bundles. Their ONNX forms are built by the service, when it registers or
first loads them: it seals each with its own SECRET_KEY (``apps/ml/compiled.py``), which a
training script does not hold.

Two models of other tasks, from data sets scikit-learn ships, saved as any data scientist
would save them (no import from this project): a regressor (``diabetes.joblib``,
``joblib.dump`` of a pipeline) and a multiclass classifier (``wine.skops``,
``skops.io.dump``), each with a CSV input example beside it.

Everything goes into DIR (default: the ``MODEL_ARTIFACTS_PATH`` environment variable, else
``research/artifacts``), with ``manifest.json`` (sha256, scikit-learn version, metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn import ensemble

from adult import (
    RESEARCH_DIR,
    load_split,
    schema,
    verify_hashes,
)  # also puts the service on sys.path
from apps.ml import artifacts
from apps.ml.income_classifier.base import make_bundle
from apps.ml.income_classifier.preprocessing import Preprocessing

SEED = 1996  # Becker & Kohavi's year; any fixed value makes the runs reproducible.
VERIFICATION_ROWS = 2000  # rows a compiled (ONNX) form must reproduce before it serves

# Leaves of at least 5 (extra trees) or 10 (forest) samples: more accuracy on adult.test
# than fully grown trees, and artifacts a sixth of the size (11 MB instead of 77 MB for the
# forest), which load faster and take less memory in every worker (research/README.md).
MODELS: dict[str, tuple[str, Any]] = {
    "random_forest": (
        "random_forest.joblib",
        ensemble.RandomForestClassifier(n_estimators=100, min_samples_leaf=10, random_state=SEED),
    ),
    "extra_trees": (
        "extra_trees.joblib",
        ensemble.ExtraTreesClassifier(n_estimators=100, min_samples_leaf=5, random_state=SEED),
    ),
}


def labels(frame: Any) -> np.ndarray:
    positive: np.ndarray = (frame[schema.LABEL] == schema.POSITIVE_LABEL).to_numpy(dtype=np.int64)
    return positive


def write_atomically(path: Path, write: Any) -> None:
    """Write via a temporary file and rename, so a server never reads half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def fit_with_progress(
    estimator: Any, x: np.ndarray, y: np.ndarray, label: str, *, chunks: int = 5
) -> Any:
    """Fit, printing a line per fifth of the trees for a tree ensemble, so a long fit shows
    progress instead of silence. Growing the ensemble with ``warm_start`` draws the same
    per-tree seeds as one ``fit`` call, so the model is the same either way."""
    total = estimator.get_params().get("n_estimators")
    if not total or "warm_start" not in estimator.get_params():
        return estimator.fit(x, y)
    started = time.perf_counter()
    estimator.set_params(warm_start=True)
    for step in range(1, chunks + 1):
        estimator.set_params(n_estimators=max(1, total * step // chunks)).fit(x, y)
        print(
            f"      {label}: {estimator.n_estimators}/{total} trees "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    return estimator.set_params(warm_start=False)


def train(out_dir: Path, *, only: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    if only != "sklearn":
        manifest["artifacts"].update(train_adult(out_dir))
    if only != "adult":
        manifest["artifacts"].update(train_sklearn_demos(out_dir))
    manifest["sklearn_version"] = sklearn.__version__
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    write_atomically(out_dir / "manifest.json", lambda tmp: tmp.write_text(text))
    print(f"done in {time.perf_counter() - started:.1f} s", flush=True)
    return manifest


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest.setdefault("artifacts", {})
    return manifest


def train_adult(out_dir: Path) -> dict[str, Any]:
    print(f"[1/4] verifying data hashes in {RESEARCH_DIR / 'data' / 'adult'}", flush=True)
    verify_hashes()
    train_frame, test_frame = load_split("adult.data"), load_split("adult.test")
    print(f"[2/4] loaded {len(train_frame)} training and {len(test_frame)} test rows", flush=True)
    preprocessing = Preprocessing.fit(train_frame)
    x_train, y_train = preprocessing.encode_frame(train_frame), labels(train_frame)
    x_test, y_test = preprocessing.encode_frame(test_frame), labels(test_frame)

    sample = x_train[
        np.random.default_rng(SEED).choice(len(x_train), VERIFICATION_ROWS, replace=False)
    ]
    # The training data's features, as a client sends them: drift monitoring's reference
    # for both models (apps/endpoints/monitoring/references.py).
    _write_example(out_dir / "adult_reference.csv", train_frame)
    written: dict[str, Any] = {}
    for step, (key, (file_name, estimator)) in enumerate(MODELS.items(), start=3):
        tick = time.perf_counter()
        fit_with_progress(estimator.set_params(n_jobs=-1), x_train, y_train, key)
        accuracy = float((estimator.predict(x_test) == y_test).mean())
        metrics = {
            "accuracy_adult_test": round(accuracy, 4),
            "n_train": len(y_train),
            "n_test": len(y_test),
        }
        estimator.set_params(n_jobs=1)
        bundle = make_bundle(estimator, preprocessing, metrics=metrics, sample=sample)
        path = out_dir / file_name
        write_atomically(path, partial(joblib.dump, bundle))
        print(
            f"[{min(step, 4)}/4] {key}: accuracy on adult.test {accuracy:.4f} "
            f"({time.perf_counter() - tick:.1f} s) -> {path}",
            flush=True,
        )
        written[key] = {
            "file": file_name,
            "sha256": artifacts.sha256_of(path),
            "wrapper": key,
            "estimator": type(estimator).__name__,
            "params": {k: v for k, v in estimator.get_params().items() if k != "n_jobs"},
            "metrics": metrics,
        }
    return written


def train_sklearn_demos(out_dir: Path) -> dict[str, Any]:
    """The regressor and the multiclass classifier, with their input examples."""
    import skops.io
    from sklearn.datasets import load_diabetes, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    written: dict[str, Any] = {}
    diabetes = load_diabetes(as_frame=True)
    x, y = diabetes.data, diabetes.target.rename("progression")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    regressor = make_pipeline(
        StandardScaler(), ensemble.GradientBoostingRegressor(max_depth=2, random_state=SEED)
    ).fit(x_train, y_train)
    error = float(np.mean(np.abs(regressor.predict(x_test) - y_test)))
    path = out_dir / "diabetes.joblib"
    write_atomically(path, partial(joblib.dump, regressor))
    _write_example(
        out_dir / "diabetes_example.csv", x_test.head(5).assign(progression=y_test.head(5))
    )
    _write_example(out_dir / "diabetes_reference.csv", x_train)  # drift's reference
    written["diabetes"] = _entry(path, {"mae_holdout": round(error, 2), "n_train": len(y_train)})
    print(
        f"      diabetes: mean absolute error on a held-out quarter {error:.1f} -> {path}",
        flush=True,
    )

    wine = load_wine(as_frame=True)
    names = np.array([f"cultivar_{i + 1}" for i in range(len(wine.target_names))])
    x, y = wine.data, names[wine.target]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        x_train, y_train
    )
    accuracy = float(np.mean(classifier.predict(x_test) == y_test))
    path = out_dir / "wine.skops"
    write_atomically(path, lambda tmp: skops.io.dump(classifier, tmp))
    _write_example(out_dir / "wine_example.csv", x_test.head(6).assign(cultivar=y_test[:6]))
    _write_example(out_dir / "wine_reference.csv", x_train)  # drift's reference
    written["wine"] = _entry(
        path, {"accuracy_holdout": round(accuracy, 4), "n_train": len(y_train)}
    )
    print(f"      wine: accuracy on a held-out quarter {accuracy:.3f} -> {path}", flush=True)
    return written


def _write_example(path: Path, frame: Any) -> None:
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))


def _entry(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"file": path.name, "sha256": artifacts.sha256_of(path), "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.environ.get("MODEL_ARTIFACTS_PATH") or str(RESEARCH_DIR / "artifacts")
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument(
        "--only", choices=["adult", "sklearn"], help="train only the Adult or the other demos"
    )
    args = parser.parse_args(argv)
    train(args.out.resolve(), only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
