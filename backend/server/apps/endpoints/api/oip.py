"""The Open Inference Protocol (KServe's V2 protocol), REST: what its requests mean here and
how answers are written in it. Plain translation, no I/O: ``views/oip.py`` wires it to the
one serving path (``serving/predict.py: serve``), so a V2 prediction is a prediction like
any other (logged, routed, copied to a shadow, counted for drift, throttled, authorised).

- **Inputs**: one named tensor per feature, of any length n (shape ``[n]`` or ``[n, 1]``;
  ``data`` flat in row-major order or nested), read as a column per feature: what MLServer
  calls the pandas content type (``"parameters": {"content_type": "pd"}``), which is also
  what a request without it means here. ``BYTES`` for strings and categories; ``FP64``,
  ``FP32``, the ``INT``/``UINT`` types and ``BOOL`` for the rest.
- **Outputs**: ``label`` (``BYTES``, ``[n]``) and ``probabilities`` (``FP64``, ``[n, k]``,
  columns in the order of the card's classes) for a classifier, ``prediction`` (``FP64``,
  ``[n]``) for a regressor; and each row's ``request_id`` (``INT64``) and
  ``feedback_token`` (``BYTES``), since the protocol's ``parameters`` hold single values,
  not lists. A request's ``outputs`` list keeps only those named.
- **Parameters** of a request: ``status`` (as ``?status=``) and ``assignment_key`` (as the
  ``X-Assignment-Key`` header, for A/B routing); ``content_type`` ``pd`` (or none).
- **Errors**: ``{"error": "<message>"}``, with our API's status codes.

Not supported (docs/protocols.md): Triton's binary tensor extension (send JSON tensors,
``binary_data=False`` in ``tritonclient``), MLServer's ``np`` content type, gRPC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apps.core.errors import InvalidInput
from apps.ml.answer import ModelOutput
from apps.ml.signature import REGRESSION, Feature, Signature

PROTOCOL = "v2"
NUMBER_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
    | {"UINT8", "UINT16", "UINT32", "UINT64"}
)
DATATYPES = NUMBER_TYPES | {"BOOL", "BYTES"}
CONTENT_TYPES = frozenset({"pd"})  # what a request may say it is; none means the same


def datatype_of(feature: Feature) -> str:
    """The tensor type a feature is described with (model metadata)."""
    if feature.type == "number":
        return "FP64"
    if feature.type == "boolean":
        return "BOOL"
    if feature.type == "category" and feature.numeric_categories:
        return "INT64" if all(float(c).is_integer() for c in feature.categories or ()) else "FP64"
    return "BYTES"


def output_names(signature: Signature) -> list[str]:
    """The outputs a model answers: its answer's fields as tensors, then the log's."""
    if signature.task == REGRESSION:
        answers = ["prediction"]
    else:
        answers = ["label", *(["probabilities"] if "probabilities" in signature.outputs else [])]
    return [*answers, "request_id", "feedback_token"]


def model_metadata(
    *, name: str, versions: Sequence[str], signature: Signature, platform: str
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{version}]``, as the specification defines it."""
    outputs = []
    for output in output_names(signature):
        if output == "probabilities":
            outputs.append(_tensor(output, "FP64", [-1, len(signature.classes)]))
        elif output == "request_id":
            outputs.append(_tensor(output, "INT64", [-1]))
        elif output == "prediction":
            outputs.append(_tensor(output, "FP64", [-1]))
        else:
            outputs.append(_tensor(output, "BYTES", [-1]))
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [_tensor(f.name, datatype_of(f), [-1]) for f in signature.features],
        "outputs": outputs,
    }


def _tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    """An infer request, checked as far as the protocol goes (the values are checked by
    the model's signature when they are scored)."""

    id: str | None
    values: dict[str, list[Any]]  # a column per input tensor
    rows: int
    status: str | None
    assignment_key: str | None
    outputs: list[str] | None  # names asked for, in order; None: all


def parse_infer(body: Any) -> InferRequest:
    """Read an infer request's JSON body. Raises ``InvalidInput`` (400) naming what is
    wrong: not an object, no inputs, a tensor without name, shape, datatype or data, a
    shape that is not ``[n]`` or ``[n, 1]``, data of another length than its shape, data
    of another type than its datatype, tensors of different lengths, a name twice."""
    if not isinstance(body, Mapping):
        raise InvalidInput("The body must be a JSON object with an 'inputs' list.")
    parameters = _parameters(body.get("parameters"), "request")
    content_type = parameters.get("content_type")
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise InvalidInput(
            f"Content type {content_type!r} is not supported: send one tensor per feature "
            "(the pandas content type, 'pd', or none)."
        )
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InvalidInput("'inputs' must be a non-empty list of tensors.")
    values: dict[str, list[Any]] = {}
    lengths: dict[str, int] = {}
    for index, tensor in enumerate(tensors):
        name, data = _input(tensor, index)
        if name in values:
            raise InvalidInput(f"Input '{name}' is given twice.")
        values[name] = data
        lengths[name] = len(data)
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise InvalidInput(f"The inputs must have one length (one value per row): {described}.")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string.")
    return InferRequest(
        id=request_id,
        values=values,
        rows=next(iter(lengths.values())),
        status=_text_parameter(parameters, "status"),
        assignment_key=_text_parameter(parameters, "assignment_key"),
        outputs=_requested_outputs(body.get("outputs")),
    )


def _parameters(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"The {where}'s 'parameters' must be an object.")
    return value


def _text_parameter(parameters: Mapping[str, Any], name: str) -> str | None:
    value = parameters.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidInput(f"Parameter '{name}' must be a string of 1 to 256 characters.")
    return value


def _input(tensor: Any, index: int) -> tuple[str, list[Any]]:
    if not isinstance(tensor, Mapping):
        raise InvalidInput(f"Input {index} must be a tensor object (name, shape, datatype, data).")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"Input {index} has no 'name'.")
    where = f"Input '{name[:200]}'"
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(n) is int and n >= 0 for n in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise InvalidInput(f"{where}: 'shape' must be [n] or [n, 1] (one value per row).")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: 'datatype' must be one of {', '.join(sorted(DATATYPES))}.")
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: 'data' must be a list.")
    _parameters(tensor.get("parameters"), where.lower())
    flat = _flatten(data, where)
    if len(flat) != shape[0]:
        raise InvalidInput(f"{where}: {len(flat)} values for shape {shape}.")
    _check_type(flat, datatype, where)
    return name, flat


def _flatten(data: list[Any], where: str) -> list[Any]:
    """A tensor's values in row-major order: as given, or from rows of one value."""
    if not any(isinstance(v, list) for v in data):
        return data
    flat = []
    for item in data:
        if isinstance(item, list):
            if len(item) != 1 or isinstance(item[0], list):
                raise InvalidInput(f"{where}: 'data' must hold one value per row.")
            flat.append(item[0])
        else:
            flat.append(item)
    return flat


def _check_type(values: list[Any], datatype: str, where: str) -> None:
    """Data must be of its tensor's datatype (null is a missing value, for any type)."""
    if datatype == "BYTES":
        ok = all(v is None or isinstance(v, str) for v in values)
        expected = "strings"
    elif datatype == "BOOL":
        ok = all(v is None or isinstance(v, bool) for v in values)
        expected = "true or false"
    elif datatype.startswith(("INT", "UINT")):
        ok = all(v is None or (type(v) is int) for v in values)
        expected = "integers"
    else:
        ok = all(
            v is None or ((type(v) is int or type(v) is float) and math.isfinite(v)) for v in values
        )
        expected = "finite numbers"
    if not ok:
        raise InvalidInput(f"{where}: datatype {datatype} needs {expected} in 'data'.")


def _requested_outputs(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in value
    ):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'.")
    return [str(o["name"]) for o in value]


def check_outputs(request: InferRequest, signature: Signature) -> None:
    """The outputs a request names must be this model's (before anything is scored)."""
    available = output_names(signature)
    unknown = [name for name in request.outputs or () if name not in available]
    if unknown:
        raise InvalidInput(
            f"Unknown output(s) {', '.join(unknown)}; this model answers {', '.join(available)}."
        )


# -- answers -----------------------------------------------------------------------------


def infer_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    signature: Signature,
    output: ModelOutput,
    request_ids: list[int],
    feedback_tokens: list[str],
) -> dict[str, Any]:
    """The answer's outputs as named tensors (see the module doc)."""
    n = len(request_ids)
    wanted = request.outputs if request.outputs is not None else output_names(signature)
    tensors = []
    for name in wanted:
        if name == "label":
            assert output.labels is not None
            tensors.append(_out(name, "BYTES", [n], [str(v) for v in output.labels.tolist()]))
        elif name == "probabilities":
            if output.probabilities is None:  # a classifier without predict_proba
                continue
            k = output.probabilities.shape[1]
            tensors.append(_out(name, "FP64", [n, k], output.probabilities.reshape(-1).tolist()))
        elif name == "prediction":
            assert output.values is not None
            tensors.append(_out(name, "FP64", [n], output.values.tolist()))
        elif name == "request_id":
            tensors.append(_out(name, "INT64", [n], request_ids))
        else:
            tensors.append(_out(name, "BYTES", [n], feedback_tokens))
    answer: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if request.id is not None:
        answer["id"] = request.id
    return answer


def _out(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}
