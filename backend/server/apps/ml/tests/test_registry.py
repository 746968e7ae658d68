"""The registry: versions in, loaded runtimes out, no database."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.core.errors import ModelUnavailable
from apps.ml import artifacts, compiled, intake
from apps.ml.compiled import OnnxRuntime
from apps.ml.income_classifier import IncomeClassifier
from apps.ml.kinds.sklearn import SklearnRuntime
from apps.ml.registry import MLRegistry, get_registry
from apps.ml.tests import models
from apps.ml.tests.factories import SAMPLE_RECORD


@dataclass
class Version:
    """A catalogue row as the registry sees one (an MLAlgorithm has these attributes)."""

    pk: int
    wrapper: str
    artifact: str
    artifact_sha256: str
    name: str = "m"
    version: str = "1"
    features: list[dict[str, Any]] = field(default_factory=list)
    task: str = "classification"
    classes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    serving: dict[str, Any] = field(default_factory=dict)
    example: list[dict[str, Any]] = field(default_factory=list)


def checked(
    folder: Path, name: str, *, compile: bool = False, trusted: tuple[str, ...] = ()
) -> Version:
    """What the catalogue would record for the model file ``folder/name``."""
    sha = artifacts.sha256_of(folder / name)
    found = intake.inspect(
        folder / name, sha256=sha, trusted=trusted, allow_pickle=True, compile=compile
    )
    serving = dict(found.serving)
    onnx_bytes = serving.pop("onnx_bytes", None)
    if onnx_bytes is not None:
        compiled.write_generic(folder / name, sha, onnx_bytes)
    return Version(
        pk=1, wrapper=found.kind, artifact=name, artifact_sha256=sha,
        example=found.example, serving=serving, **found.signature.card(),
    )  # fmt: skip


def test_the_app_builds_a_registry_without_touching_the_database() -> None:
    # Built in MlConfig.ready(); this test has no database access at all.
    assert isinstance(get_registry(), MLRegistry)


def test_an_adult_version_is_loaded_on_first_use_and_once(artifacts_dir: Path) -> None:
    version = checked(artifacts_dir, "random_forest.joblib")
    registry = MLRegistry(artifacts_dir)
    runtime = registry.get(version)
    assert runtime.compute_prediction(SAMPLE_RECORD)["label"] in {"<=50K", ">50K"}
    assert registry.get(version) is runtime
    assert registry.loaded_at[version.pk]


@pytest.mark.parametrize("stored", ["random_forest", "extra_trees", "income_classifier"])
def test_the_keys_earlier_releases_stored_still_load_an_adult_version(
    artifacts_dir: Path, stored: str
) -> None:
    """The demo models were stored under the keys of the classes that served them; the
    Adult kind is one entry of the table now, and its old keys are aliases."""
    version = checked(artifacts_dir, "random_forest.joblib")
    assert version.wrapper == "income_classifier"
    version.wrapper = stored
    runtime = MLRegistry(artifacts_dir).get(version)
    assert isinstance(runtime, IncomeClassifier)
    assert runtime.compute_prediction(SAMPLE_RECORD)["label"] in {"<=50K", ">50K"}


@pytest.mark.parametrize("name", ["wine.joblib", "wine.skops"])
def test_any_sklearn_version_is_loaded_from_joblib_or_skops(tmp_path: Path, name: str) -> None:
    model = models.wine_classifier()
    models.save(model, tmp_path, name)
    version = checked(tmp_path, name)
    runtime = MLRegistry(tmp_path).get(version)
    x, _ = models.wine()
    answer = runtime.compute_prediction(x.iloc[0].to_dict())
    assert isinstance(runtime, SklearnRuntime)
    assert answer["label"] == model.predict(x.head(1))[0]


def test_a_tampered_artifact_is_refused_with_a_clear_error(artifacts_dir: Path) -> None:
    version = checked(artifacts_dir, "random_forest.joblib")
    path = artifacts_dir / version.artifact
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        MLRegistry(artifacts_dir).get(version)


def test_a_missing_artifact_or_unknown_kind_is_unavailable(artifacts_dir: Path) -> None:
    version = checked(artifacts_dir, "random_forest.joblib")
    (artifacts_dir / version.artifact).unlink()
    with pytest.raises(ModelUnavailable, match="cannot be read"):
        MLRegistry(artifacts_dir).get(version)
    version.wrapper = "os.system"
    with pytest.raises(ModelUnavailable, match=r"Unknown kind of model 'os\.system'"):
        MLRegistry(artifacts_dir).get(version)


def test_a_skops_file_needing_a_type_the_operator_dropped_is_unavailable(tmp_path: Path) -> None:
    models.save(models.mixed_classifier(), tmp_path, "mixed.skops")
    trusted = ("numpy.dtype", "sklearn.tree._tree.Tree")
    version = checked(tmp_path, "mixed.skops", trusted=trusted)
    assert MLRegistry(tmp_path, trusted=trusted).get(version)
    with pytest.raises(ModelUnavailable, match=r"not trusted: .*sklearn\.tree\._tree\.Tree"):
        MLRegistry(tmp_path, trusted=("numpy.dtype",)).get(version)


def test_retain_unloads_the_versions_that_no_longer_serve(artifacts_dir: Path) -> None:
    registry = MLRegistry(artifacts_dir)
    first = checked(artifacts_dir, "random_forest.joblib")
    second = checked(artifacts_dir, "extra_trees.joblib")
    second.pk = 2
    registry.get(first), registry.get(second)
    assert registry.retain([2]) == [1]
    assert set(registry.runtimes) == {2} and set(registry.loaded_at) == {2}


def test_a_version_recorded_as_onnx_serves_its_cached_form_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models.save(models.wine_classifier(), tmp_path, "wine.skops")
    version = checked(tmp_path, "wine.skops", compile=True)
    assert version.serving["engine"] == "onnx", version.serving

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the artifact was loaded")

    monkeypatch.setattr(artifacts, "load_verified", no_unpickling)
    runtime = MLRegistry(tmp_path, compile=True).get(version)
    assert isinstance(runtime, OnnxRuntime)
    x, _ = models.wine()
    assert runtime.compute_prediction(x.iloc[0].to_dict())["label"] == "barolo"


def test_a_swapped_onnx_cache_is_never_served(tmp_path: Path) -> None:
    # The cache lies beside the artifact; anyone who can write there could replace it. A
    # form whose bytes do not have the sha256 recorded at registration is not used: the
    # model is converted again from its (hash-checked) artifact and verified again.
    model = models.wine_classifier()
    models.save(model, tmp_path, "wine.skops")
    version = checked(tmp_path, "wine.skops", compile=True)
    cache = compiled.cache_path(tmp_path / "wine.skops", version.artifact_sha256)
    other = models.save(models.cancer_classifier(), tmp_path / "x", "other.skops")
    forged = checked(other.parent, "other.skops", compile=True)
    cache.write_bytes(compiled.cache_path(other, forged.artifact_sha256).read_bytes())
    runtime = MLRegistry(tmp_path, compile=True).get(version)
    x, _ = models.wine()
    labels = [runtime.compute_prediction(r)["label"] for r in x.head(20).to_dict(orient="records")]
    assert labels == model.predict(x.head(20)).tolist()
    restored = hashlib.sha256(cache.read_bytes()).hexdigest()
    assert restored == version.serving["onnx_sha256"]
    # what /readyz shows for this worker (ops.health reads the runtime's note)
    assert runtime.engine_note.startswith("rebuilt from the artifact: ")
    assert "did not match its recorded sha256" in runtime.engine_note
    assert MLRegistry(tmp_path, compile=True).get(version).engine_note == ""  # cache restored


def test_a_regressor_fitted_on_an_array_takes_x0_to_xn(tmp_path: Path) -> None:
    model = models.ridge_on_arrays()
    models.save(model, tmp_path, "ridge.joblib")
    version = checked(tmp_path, "ridge.joblib")
    assert [f["name"] for f in version.features] == [f"x{i}" for i in range(10)]
    runtime = MLRegistry(tmp_path).get(version)
    x, _ = models.diabetes()
    record = {f"x{i}": float(v) for i, v in enumerate(x.iloc[3])}
    answer = runtime.compute_prediction(record)
    assert answer["prediction"] == pytest.approx(model.predict(x.iloc[[3]].to_numpy())[0])
    assert set(answer) == {"prediction", "status"}
    assert np.isfinite(answer["prediction"])
