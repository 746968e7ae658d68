"""The demo models every fresh install serves, one endpoint per task.

``research/train.py`` writes their files into ``MODEL_ARTIFACTS_PATH``; they are registered
through ``register_model``, the path every model takes, after ``migrate`` and at
the latest on the first prediction a process serves (``ensure_registered``). A model whose
file is not there yet (still training) is tried again later.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from apps.core.errors import Conflict, ServiceError
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.catalogue.selectors import find_algorithm
from apps.endpoints.models import DriftReference, MLAlgorithmStatus

logger = logging.getLogger(__name__)
Status = MLAlgorithmStatus.Status
OWNER = "ML_PipeLine"


@dataclass(frozen=True)
class DemoModel:
    endpoint: str
    name: str
    version: str
    status: str
    file: str  # in MODEL_ARTIFACTS_PATH
    description: str
    example: str = ""  # its input example, beside the file
    target_column: str = ""
    reference: str = ""  # its training data, beside the file: drift's reference


DEMO_MODELS = (
    DemoModel(
        endpoint="income_classifier",
        name="random forest",
        version="0.0.1",
        status=Status.PRODUCTION,
        file="random_forest.joblib",
        description="Random forest (100 trees, min 10 samples a leaf) on Adult census data.",
        target_column="income",
        reference="adult_reference.csv",
    ),
    DemoModel(
        endpoint="income_classifier",
        name="extra trees",
        version="0.0.1",
        status=Status.TESTING,
        file="extra_trees.joblib",
        description="Extra trees (100 trees, min 5 samples a leaf) on Adult census data.",
        target_column="income",
        reference="adult_reference.csv",
    ),
    DemoModel(
        endpoint="diabetes_progression",
        name="gradient boosting",
        version="0.0.1",
        status=Status.PRODUCTION,
        file="diabetes.joblib",
        example="diabetes_example.csv",
        target_column="progression",
        reference="diabetes_reference.csv",
        description="A regressor: disease progression a year after baseline, from "
        "scikit-learn's diabetes data set (gradient boosting after scaling).",
    ),
    DemoModel(
        endpoint="wine_cultivar",
        name="logistic regression",
        version="0.0.1",
        status=Status.PRODUCTION,
        file="wine.skops",
        example="wine_example.csv",
        target_column="cultivar",
        reference="wine_reference.csv",
        description="A multiclass classifier: which of three cultivars a wine comes from, "
        "from scikit-learn's wine data set (saved with skops).",
    ),
)


# After a failed try, the next waits this long: every prediction asks, and a demo whose file
# is missing would otherwise cost a few queries and a warning in the log per request.
RETRY_SECONDS = 5.0
_clock = time.monotonic  # replaced in tests


class _State:
    done = False
    next_try = 0.0  # the _clock() before which no new try is made
    lock = threading.Lock()


def ensure_registered() -> bool:
    """Register the demo models that are not in the catalogue yet (``ML_DEMO_MODELS``);
    whether all of them are. Cheap once they are: a flag per process."""
    if _State.done or not settings.ML_DEMO_MODELS:
        return True
    if _clock() < _State.next_try:
        return False
    with _State.lock:
        if not _State.done and _clock() >= _State.next_try:
            try:
                _State.done = all([register(spec) for spec in DEMO_MODELS])
            except DatabaseError as exc:  # the tables may not exist yet
                logger.warning("Demo models not registered yet (database not ready: %s).", exc)
            if not _State.done:
                _State.next_try = _clock() + RETRY_SECONDS
    return _State.done


def register(spec: DemoModel) -> bool:
    """Register one demo model unless it is there; whether it is there now."""
    if find_algorithm(endpoint_name=spec.endpoint, name=spec.name, version=spec.version):
        return True
    root = Path(settings.MODEL_ARTIFACTS_PATH)
    if not (root / spec.file).is_file():
        logger.warning(
            "Demo model %s: no file %s yet; run `make train`.", spec.name, root / spec.file
        )
        return False
    example = (root / spec.example).read_bytes() if spec.example else None
    # Trained before drift monitoring existed, a folder may lack it: served without one.
    reference = root / spec.reference if spec.reference else None
    try:
        register_model(
            artifact=root / spec.file,
            endpoint_name=spec.endpoint,
            name=spec.name,
            version=spec.version,
            status=spec.status,
            description=spec.description,
            owner=OWNER,
            example=example,
            target_column=spec.target_column,
            allow_pickle=True,  # this project's own files, on this host
            reference=reference.read_bytes() if reference and reference.is_file() else None,
            reference_name=spec.reference,
            reference_source=DriftReference.Source.TRAINING,
        )
    except Conflict:
        return True  # another process registered it first
    except ServiceError as exc:
        logger.error("Demo model %s not registered: %s", spec.name, exc.message)
        return False
    return True


def forget() -> None:
    """Start over (tests)."""
    _State.done = False
    _State.next_try = 0.0
