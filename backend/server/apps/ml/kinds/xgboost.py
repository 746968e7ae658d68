"""The ``xgboost`` kind: XGBoost's gradient-boosted trees.

- From a joblib file: ``XGBClassifier``, ``XGBRegressor`` and pipelines ending in them,
  served through scikit-learn's API as the ``sklearn`` kind serves any model (by command,
  or uploaded where pickle uploads are allowed).
- In XGBoost's own format, JSON or UBJSON (``model.save_model("model.json")`` or
  ``"model.ubj"``): read without pickle, so it may be uploaded over HTTP, and served by
  XGBoost's ``Booster``. The feature names are the input example's (a model fitted on a
  DataFrame keeps them too, and they must agree); the classes are the upload form's.

Either form is compiled where onnxmltools' converter reproduces XGBoost within the generic
tolerances (``compiled.compile_generic``); otherwise XGBoost serves it, and the card says
why.
"""

from __future__ import annotations

import functools
import json
from copy import deepcopy
from typing import Any

from apps.core.errors import ModelRejected
from apps.ml import artifacts, compiled
from apps.ml.kinds.base import (
    CARD_EXAMPLE_ROWS,
    VERIFIED_ROWS,
    BoosterRuntime,
    Intake,
    Request,
    Source,
    booster_signature,
    check_predicts,
    compiled_card,
    recorded_form,
    rows_to_check,
)
from apps.ml.kinds.sklearn import SklearnKind, final_estimator
from apps.ml.runtime import Runtime
from apps.ml.signature import CLASSIFICATION, REGRESSION, Signature

ENGINE = "xgboost"
ONNX_OPSET = 15  # what onnxmltools' XGBoost converter writes at most


class XGBoostKind(SklearnKind):
    key = ENGINE
    library = "XGBoost"
    native_suffixes = (".json", ".ubj")
    summary = (
        "XGBoost: XGBClassifier/XGBRegressor or a pipeline ending in one (joblib), or a "
        "model's own JSON or UBJSON (.json, .ubj)"
    )

    def claims(self, model: Any) -> bool:
        return type(final_estimator(model)).__module__.startswith("xgboost.")

    def prepare_conversion(self) -> None:
        _register_converters()

    def convertible(self, model: Any) -> Any:
        """A copy whose booster names no features: the converter reads them as f0, f1..."""
        copy = deepcopy(model)
        final_estimator(copy).get_booster().feature_names = None
        return copy

    def inspect(self, model: Any, request: Request) -> Intake:
        if model is not None:
            return super().inspect(model, request)
        data, _ = artifacts.read_verified(request.path.parent, request.path.name, request.sha256)
        booster = _booster(data)
        config = json.loads(booster.save_config())
        task, classes, probabilities = _task(config)
        sig = booster_signature(
            request,
            names=booster.feature_names,
            features=booster.num_features(),
            task=task,
            classes=classes,
            probabilities=probabilities,
        )
        runtime = _runtime(booster, sig, probabilities)
        rows, what = rows_to_check(request.example, sig)
        check_predicts(runtime, rows[:VERIFIED_ROWS], what)
        card = compiled_card(
            booster,
            runtime,
            rows,
            # softmax answers indices alone, which the converter's form does not
            wanted=request.compile and (task == REGRESSION or probabilities),
            engine=ENGINE,
            library=self.library,
            convert=_converter(data, sig),
        )
        version = ".".join(str(n) for n in config.get("version", ())) or "?"
        return Intake(
            kind=self.key,
            runtime=runtime,
            signature=sig,
            example=rows[:CARD_EXAMPLE_ROWS],
            serving=card,
            sklearn_version=f"xgboost {version}",
            metrics={},
            notes=request.notes,
        )

    def load(self, source: Source) -> Runtime:
        if not self.claims_file(source.path):
            return super().load(source)
        version = source.version
        data, _ = artifacts.read_verified(source.root, version.artifact, version.artifact_sha256)
        booster = _booster(data)
        sig = source.signature
        probabilities = bool({"probability", "probabilities"} & set(sig.outputs))
        runtime = _runtime(booster, sig, probabilities)
        if sig.task == CLASSIFICATION and not probabilities:
            return runtime
        return recorded_form(source, runtime, booster, _converter(data, sig))


def _booster(data: bytes) -> Any:
    import xgboost

    booster = xgboost.Booster(params={"nthread": 1})
    try:
        booster.load_model(bytearray(data))
    except xgboost.core.XGBoostError as exc:
        raise ModelRejected(f"The file is not an XGBoost model: {str(exc)[:200]}") from exc
    return booster


def _task(config: dict[str, Any]) -> tuple[str, int, bool]:
    """(task, how many classes, whether it answers probabilities) from its objective."""
    learner = config.get("learner", {})
    name = str(learner.get("objective", {}).get("name", ""))
    classes = int(learner.get("learner_model_param", {}).get("num_class", "0") or 0)
    if name == "binary:logistic":
        return CLASSIFICATION, 2, True
    if name in ("multi:softprob", "multi:softmax"):
        return CLASSIFICATION, classes, name == "multi:softprob"
    if name.startswith(("reg:", "count:", "survival:")) and name != "reg:logistic":
        return REGRESSION, 0, False
    raise ModelRejected(f"An XGBoost model with objective {name!r} is not served here.")


def _runtime(booster: Any, sig: Signature, probabilities: bool) -> BoosterRuntime:
    # inplace_predict is documented as safe on several threads at once (XGBoost 1.4+).
    return BoosterRuntime(
        booster.inplace_predict,
        sig,
        engine=ENGINE,
        probabilities=probabilities,
        parallel_rows=True,
    )


def _converter(data: bytes, sig: Signature) -> compiled.Convert:
    def convert(layout: str, dtype: str) -> bytes:
        import onnxmltools
        from onnxmltools.convert.common.data_types import DoubleTensorType, FloatTensorType

        # The converter reads features as f0, f1...: a copy without the names it kept.
        booster = _booster(data)
        booster.feature_names = None
        number = FloatTensorType if dtype == "float32" else DoubleTensorType
        onx = onnxmltools.convert_xgboost(
            booster,
            initial_types=[("input", number([None, len(sig.features)]))],
            target_opset=ONNX_OPSET,
        )
        return bytes(onx.SerializeToString())

    return convert


@functools.cache
def _register_converters() -> None:
    """XGBoost's scikit-learn estimators, for skl2onnx (a pipeline ending in one)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )
