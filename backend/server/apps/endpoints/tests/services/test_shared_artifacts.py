"""Several app hosts, one catalogue: a model registered on one host is stored in the shared
model storage, and another host, whose own folder lacks it, fetches it on first use,
checking its sha256 (apps/ml/shared_store.py). Each "host" here is a registry over a
folder of its own."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.core.errors import InvalidInput, ModelUnavailable
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.models import MLAlgorithm
from apps.endpoints.tests.factories import use_folder_storage
from apps.endpoints.tests.services.test_catalogue import upload
from apps.ml import shared_store
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(settings: Any, tmp_path: Path) -> Path:
    return use_folder_storage(settings, shared_store.ALIAS, tmp_path / "shared")


def host(tmp_path: Path, name: str) -> MLRegistry:
    return MLRegistry(tmp_path / name, fetch=shared_store.fetch)


def register_wine(registry: MLRegistry, name: str = "lr", file_name: str = "wine.skops") -> Any:
    model = models.wine_classifier()
    algorithm = register_model(
        artifact=upload(model, file_name),
        file_name=file_name,
        endpoint_name="wine",
        name=name,
        version="1",
        status="production",
    ).algorithm
    return model, algorithm


def test_a_model_registered_on_one_host_serves_from_another_that_fetches_it(
    registry: MLRegistry, artifacts_dir: Path, store: Path, tmp_path: Path
) -> None:
    model, algorithm = register_wine(registry)  # host A: MODEL_ARTIFACTS_PATH
    assert [p.name for p in store.iterdir()] == [f"{algorithm.artifact_sha256}.skops"]
    b = host(tmp_path, "host-b")
    assert not (b.artifacts_root / algorithm.artifact).exists()
    x, _ = models.wine()
    served = b.get(MLAlgorithm.objects.get(pk=algorithm.pk)).compute_predictions(
        x.iloc[:5].to_dict("records")
    )
    assert [p["label"] for p in served] == list(model.predict(x.iloc[:5]).astype(str))
    fetched = b.artifacts_root / algorithm.artifact
    assert fetched.read_bytes() == (artifacts_dir / algorithm.artifact).read_bytes()
    assert not [p for p in fetched.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_shared_copy_that_does_not_hash_to_the_record_is_refused_and_not_kept(
    registry: MLRegistry, store: Path, tmp_path: Path
) -> None:
    _, algorithm = register_wine(registry)
    shared = store / f"{algorithm.artifact_sha256}.skops"
    shared.write_bytes(shared.read_bytes() + b"tampered")
    c = host(tmp_path, "host-c")
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        c.get(MLAlgorithm.objects.get(pk=algorithm.pk))
    assert not [p for p in c.artifacts_root.rglob("*") if p.is_file()]
    shared.unlink()
    with pytest.raises(ModelUnavailable, match="has no copy of it"):
        c.get(MLAlgorithm.objects.get(pk=algorithm.pk))


def test_one_name_is_one_file_across_hosts(
    registry: MLRegistry, store: Path, tmp_path: Path, settings: Any
) -> None:
    # Host A registered wine.skops from a path; host B, whose folder does not have it, is
    # given another file under the same name: B would serve its own file for A's version.
    first = models.save(models.wine_classifier(), tmp_path / "a-files", "wine.skops")
    register_model(artifact=first, endpoint_name="wine", name="a", version="1")
    settings.MODEL_ARTIFACTS_PATH = tmp_path / "host-b"
    other = models.save(models.cancer_classifier(), tmp_path / "b-files", "wine.skops")
    with pytest.raises(InvalidInput, match=r"registered as 'wine\.skops'"):
        register_model(artifact=other, endpoint_name="cancer", name="b", version="1")
    assert not (tmp_path / "host-b" / "wine.skops").exists()  # what it placed, removed
    assert len(list(store.iterdir())) == 1


def test_without_a_shared_storage_nothing_is_copied_or_fetched(
    registry: MLRegistry, tmp_path: Path
) -> None:
    assert not shared_store.configured()
    _, algorithm = register_wine(registry)
    lonely = MLRegistry(tmp_path / "host-d")  # no fetch: one host
    with pytest.raises(ModelUnavailable, match="cannot be read"):
        lonely.get(MLAlgorithm.objects.get(pk=algorithm.pk))


def test_upload_bytes_are_stored_once_whatever_their_name(
    registry: MLRegistry, store: Path
) -> None:
    data = upload(models.wine_classifier(), "wine.skops").getvalue()
    for name in ("a", "b"):
        register_model(
            artifact=io.BytesIO(data), file_name=f"{name}.skops", endpoint_name="wine",
            name=name, version="1",
        )  # fmt: skip
    assert len(list(store.iterdir())) == 1
    assert np.array_equal(
        np.frombuffer(next(store.iterdir()).read_bytes(), np.uint8), np.frombuffer(data, np.uint8)
    )
