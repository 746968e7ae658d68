"""The ``lightgbm`` kind: LightGBM's gradient-boosted trees.

- From a joblib file: ``LGBMClassifier``, ``LGBMRegressor`` and pipelines ending in them,
  served through scikit-learn's API as the ``sklearn`` kind serves any model (by command,
  or uploaded where pickle uploads are allowed).
- In LightGBM's own text format (``model.booster_.save_model("model.txt")``): read without
  pickle, so it may be uploaded over HTTP, and served by LightGBM's ``Booster``. The file
  spells a feature as LightGBM does (``mean radius`` as ``mean_radius``): clients send the
  input example's names. It knows no class names: the upload form gives them.

Either form is compiled where onnxmltools' converter reproduces LightGBM within the
generic tolerances (``compiled.compile_generic``); otherwise LightGBM serves it, and the
card says why.
"""

from __future__ import annotations

import functools
import re
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

ENGINE = "lightgbm"
# onnxmltools' LightGBM converter writes this opset at most.
ONNX_OPSET = 15


class LightGBMKind(SklearnKind):
    key = ENGINE
    library = "LightGBM"
    native_suffixes = (".txt",)
    summary = (
        "LightGBM: LGBMClassifier/LGBMRegressor or a pipeline ending in one (joblib), or a "
        "booster's own text (.txt)"
    )

    def claims(self, model: Any) -> bool:
        return type(final_estimator(model)).__module__.startswith("lightgbm.")

    def prepare_conversion(self) -> None:
        _register_converters()

    def inspect(self, model: Any, request: Request) -> Intake:
        if model is not None:
            return super().inspect(model, request)
        data, _ = artifacts.read_verified(request.path.parent, request.path.name, request.sha256)
        booster = _booster(data)
        task, classes = _task(booster)
        sig = booster_signature(
            request,
            names=booster.feature_name(),
            features=booster.num_feature(),
            task=task,
            classes=classes,
            spelled=_spelled,
        )
        runtime = _runtime(booster, sig)
        rows, what = rows_to_check(request.example, sig)
        check_predicts(runtime, rows[:VERIFIED_ROWS], what)
        card = compiled_card(
            booster,
            runtime,
            rows,
            wanted=request.compile,
            engine=ENGINE,
            library=self.library,
            convert=_converter(booster, sig),
        )
        return Intake(
            kind=self.key,
            runtime=runtime,
            signature=sig,
            example=rows[:CARD_EXAMPLE_ROWS],
            serving=card,
            sklearn_version=f"lightgbm {_file_version(data)}",
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
        return recorded_form(source, _runtime(booster, sig), booster, _converter(booster, sig))


def _booster(data: bytes) -> Any:
    import lightgbm

    try:
        # One thread is asked for at each predict: a booster read from a model string
        # takes its parameters from the string.
        return lightgbm.Booster(model_str=data.decode("utf-8"))
    except (UnicodeDecodeError, lightgbm.basic.LightGBMError) as exc:
        raise ModelRejected(f"The file is not a LightGBM model: {str(exc)[:200]}") from exc


def _task(booster: Any) -> tuple[str, int]:
    """(task, how many classes) from the booster's objective."""
    objective = str(booster.dump_model(num_iteration=0).get("objective", "")).split()
    name = objective[0] if objective else ""
    if name in ("binary", "cross_entropy"):
        return CLASSIFICATION, 2
    if name in ("multiclass", "multiclassova"):
        return CLASSIFICATION, int(booster.num_model_per_iteration())
    if name.startswith(("lambdarank", "rank_xendcg")) or not name:
        raise ModelRejected(f"A LightGBM model with objective {name!r} is not served here.")
    return REGRESSION, 0  # regression, huber, quantile, poisson, tweedie ...


def _runtime(booster: Any, sig: Signature) -> BoosterRuntime:
    return BoosterRuntime(lambda matrix: booster.predict(matrix, num_threads=1), sig, engine=ENGINE)


def _spelled(name: str) -> str:
    """A feature's name as LightGBM writes it into its file: white space as ``_``."""
    return re.sub(r"\s", "_", name)


def _file_version(data: bytes) -> str:
    """The format version the file states (``version=v4``), or ``?``."""
    found = re.search(rb"^version=(\S+)$", data[:4096], re.MULTILINE)
    return found.group(1).decode() if found else "?"


def _converter(booster: Any, sig: Signature) -> compiled.Convert:
    def convert(layout: str, dtype: str) -> bytes:
        import onnxmltools
        from onnxmltools.convert.common.data_types import DoubleTensorType, FloatTensorType

        number = FloatTensorType if dtype == "float32" else DoubleTensorType
        onx = onnxmltools.convert_lightgbm(
            booster,
            initial_types=[("input", number([None, len(sig.features)]))],
            zipmap=False,
            target_opset=ONNX_OPSET,
        )
        return bytes(onx.SerializeToString())

    return convert


@functools.cache
def _register_converters() -> None:
    """LightGBM's scikit-learn estimators, for skl2onnx (a pipeline ending in one)."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
    )
