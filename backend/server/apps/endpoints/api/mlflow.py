"""MLflow's scoring format (``mlflow models serve``, MLflow 2.x and 3.x): what its requests
mean here and how answers are written in it. Plain translation, no I/O: ``views/mlflow.py``
wires it to the one serving path (``serving/predict.py: serve``), so a request in this
format is a batch of predictions like any other (logged, routed, copied to a shadow,
counted, throttled, authorised).

- **JSON** (``application/json``): an object with exactly one of ``dataframe_split``
  (``{"columns": [...], "data": [[...], ...]}``; an ``index`` is ignored),
  ``dataframe_records`` (a list of records), ``instances`` (a list of records, or of values
  for a model of one feature) and ``inputs`` (a column of values per feature, one record,
  or a list as ``instances``); and optionally ``params``, whose one parameter here is
  ``probabilities``.
- **CSV** (``text/csv``): a header row, then the records, read as text columns and checked
  cell by cell as a batch file is (``codecs.frame_from_text``), errors naming line and
  column.
- **Answer**: ``{"predictions": [...]}`` as MLflow writes a scikit-learn model's, the labels
  of a classifier or the numbers of a regressor; beside it, lists in the same order:
  ``probabilities`` (when asked: ``?probabilities=true`` or ``"params": {"probabilities":
  true}``), ``request_ids`` and ``feedback_tokens`` (docs/protocols.md, "MLflow's scoring format").

Stricter than MLflow where MLflow would guess: an unknown key, parameter or column is a 400
naming it (MLflow ignores an extra column), and a list of unnamed rows is refused.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from apps.core.errors import EndpointNotFound, InvalidInput
from apps.endpoints.batch import reading
from apps.endpoints.serving import pipeline
from apps.endpoints.serving.predict import Served
from apps.ml.signature import REGRESSION, Signature

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS = ("probabilities",)  # what ``params`` may hold
MAX_NAMED = 50  # names listed in an error; the rest are counted

_TRUE = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class Invocation:
    """A request in MLflow's format, read: its ``rows`` records in one of the forms the
    pipeline takes, and whether the answer lists probabilities."""

    rows: int
    records: Sequence[Mapping[str, Any]] | None = None  # JSON records
    values: Mapping[str, Sequence[Any]] | None = None  # a JSON column per feature
    single: Sequence[Any] | None = None  # plain values: the column of a model's one feature
    text: Mapping[str, Sequence[str]] | None = None  # a CSV's columns, as text
    probabilities: bool = False

    def batch(self, signatures: Callable[[], Sequence[Signature]]) -> pipeline.Batch:
        """The records as the pipeline's ``Batch``. ``signatures``: those of the versions
        that may answer (an A/B test's arms, say), asked only where the format needs them:
        to name the feature plain values are for, to check a CSV's header, and to promise
        probabilities before anything is scored or logged."""
        if self.probabilities:
            _check_probabilities(signatures())
        if self.records is not None:
            return pipeline.Batch.of_records(self.records)
        if self.values is not None:
            return pipeline.Batch.of_values(self.values, self.rows)
        if self.single is not None:
            return pipeline.Batch.of_values({_sole_feature(signatures()): self.single}, self.rows)
        assert self.text is not None
        _check_header(list(self.text), signatures())
        return pipeline.Batch(size=self.rows, columns=self.text, first_line=2)


# -- in ----------------------------------------------------------------------------------


def flag(name: str, value: str | None) -> bool:
    """A query parameter that is true or false (absent: false)."""
    if value is None or not value.strip():
        return False
    found = _TRUE.get(value.strip().lower())
    if found is None:
        raise InvalidInput(
            f"{name} must be true or false, got '{value[:40]}'.",
            details={name: ["Must be true or false."]},
        )
    return found


def read_json(body: Any, *, probabilities: bool = False) -> Invocation:
    """A JSON body: exactly one of ``FORMATS``, and optionally ``params``.
    ``probabilities``: asked by the query already."""
    expected = f"one of {', '.join(FORMATS)}"
    if not isinstance(body, Mapping):
        raise InvalidInput(f"The body must be a JSON object holding {expected}.")
    unknown = [str(key) for key in body if key not in FORMATS and key != "params"]
    if unknown:
        raise InvalidInput(
            f"Unknown key {_names(unknown)}: the body holds {expected}, and optionally params.",
            details={key: [f"Unknown key. Expected {expected}, or params."] for key in unknown},
        )
    given = [key for key in FORMATS if key in body]
    if not given:
        raise InvalidInput(
            f"The body holds none of the input formats; send {expected}.",
            details={"non_field_errors": [f"Expected {expected}."]},
        )
    if len(given) > 1:
        raise InvalidInput(
            f"The body holds {len(given)} input formats ({', '.join(given)}); send one.",
            details={key: ["Only one input format per request."] for key in given},
        )
    [form] = given
    asked = _params(body.get("params"))
    invocation = _READERS[form](body[form])
    return replace(invocation, probabilities=probabilities or asked)


def read_csv(body: bytes, *, probabilities: bool = False) -> Invocation:
    """A CSV body: a header row, then the records, every cell kept as text (a batch file's
    checks: its header, ragged rows, its encoding; ``batch/reading.py``)."""
    import pandas as pd  # here: a worker that serves JSON alone need not load pandas

    upload = io.BytesIO(body)
    header = reading.read_header(upload)
    if reading.check_field_counts(upload, len(header)) == 0:
        raise InvalidInput("The CSV has a header but no rows.")
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            dtype=str,
            na_filter=False,  # cells stay text: an empty one is missing, as in a batch file
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"The CSV is not valid: {exc}") from None
    text = {name: frame.iloc[:, j].tolist() for j, name in enumerate(header)}
    return Invocation(rows=len(frame), text=text, probabilities=probabilities)


def _params(value: Any) -> bool:
    """Whether ``params`` asks for probabilities; anything else it holds is refused."""
    if value is None:
        return False
    if not isinstance(value, Mapping):
        raise InvalidInput(
            'params must be an object, such as {"probabilities": true}.',
            details={"params": ["Must be an object."]},
        )
    unknown = [str(key) for key in value if key not in PARAMS]
    if unknown:
        raise InvalidInput(
            f"Unknown parameter {_names(unknown)}; the one parameter taken is probabilities.",
            details={f"params.{key}": ["Unknown parameter."] for key in unknown},
        )
    asked = value.get("probabilities", False)
    if not isinstance(asked, bool):
        raise InvalidInput(
            "params.probabilities must be true or false.",
            details={"params.probabilities": ["Must be true or false."]},
        )
    return asked


def _split(value: Any) -> Invocation:
    where = "dataframe_split"
    if not isinstance(value, Mapping):
        raise _wrong(where, 'an object {"columns": [...], "data": [[...], ...]}')
    unknown = [str(key) for key in value if key not in ("columns", "data", "index")]
    if unknown:
        raise InvalidInput(
            f"Unknown key {_names(unknown)} in {where}: it holds columns, data and index.",
            details={f"{where}.{key}": ["Unknown key."] for key in unknown},
        )
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _wrong(f"{where}.columns", "a list of the columns' names")
    # Counted once each: columns.count per name is n² (50,000 names took 30 s; a 32 MB body
    # holds millions).
    repeated = sorted(name for name, n in Counter(columns).items() if n > 1)
    if repeated:
        raise InvalidInput(
            f"Columns named more than once in {where}.columns: {_names(repeated)}.",
            details={f"{where}.columns": [f"'{c}' appears more than once." for c in repeated]},
        )
    if not isinstance(data, list) or not data:
        raise _wrong(f"{where}.data", "a list of rows, one or more")
    width = len(columns)
    bad = {
        f"{where}.data[{i}]": [_row_problem(row, width)]
        for i, row in enumerate(data)
        if not isinstance(row, list) or len(row) != width
    }
    if bad:
        first = next(iter(bad))
        raise InvalidInput(f"{first}: {bad[first][0]}", details=bad)
    values = {name: [row[j] for row in data] for j, name in enumerate(columns)}
    return Invocation(rows=len(data), values=values)


def _row_problem(row: Any, width: int) -> str:
    if not isinstance(row, list):
        return f"A row must be a list of {width} values, one per column."
    return f"{len(row)} values, but columns names {width}."


def _records(value: Any, where: str = "dataframe_records") -> Invocation:
    if not isinstance(value, list) or not value:
        raise _wrong(where, "a list of records, one or more")
    bad = {
        f"{where}[{i}]": ["Expected an object of feature names and values."]
        for i, record in enumerate(value)
        if not isinstance(record, Mapping)
    }
    if bad:
        first = next(iter(bad))
        raise InvalidInput(f"{first}: {bad[first][0]}", details=bad)
    return Invocation(rows=len(value), records=value)


def _instances(value: Any, where: str = "instances") -> Invocation:
    """A list of records, or of plain values (the column of a model of one feature)."""
    if not isinstance(value, list) or not value:
        raise _wrong(where, "a list of records (or, for a model of one feature, of values)")
    records = [isinstance(item, Mapping) for item in value]
    if all(records):
        return _records(value, where)
    if any(records):
        raise InvalidInput(
            f"{where} mixes records and plain values; send records.",
            details={where: ["Either records or values, not both."]},
        )
    if any(isinstance(item, list) for item in value):
        raise InvalidInput(
            f"{where} holds rows of values without names; send records "
            f'({{"{where}": [{{"<feature>": <value>, ...}}]}}) or dataframe_split with '
            "its columns.",
            details={where: ["Rows need the names of their values."]},
        )
    return Invocation(rows=len(value), single=value)


def _inputs(value: Any) -> Invocation:
    """A column of values per feature, one record (every value plain), or a list."""
    where = "inputs"
    if isinstance(value, list):
        return _instances(value, where)
    if not isinstance(value, Mapping) or not value:
        raise _wrong(where, "an object of a list of values per feature, or a list of records")
    columns = {str(name): isinstance(item, list) for name, item in value.items()}
    if not any(columns.values()):  # every value plain: one record
        return Invocation(rows=1, records=[value])
    plain = [name for name, is_list in columns.items() if not is_list]
    if plain:
        raise InvalidInput(
            f"{where} mixes lists and plain values ({_names(plain)}); send a list of values "
            "per feature, one per record.",
            details={f"{where}.{name}": ["Expected a list of values."] for name in plain},
        )
    lengths = {str(name): len(item) for name, item in value.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in list(lengths.items())[:MAX_NAMED])
        raise InvalidInput(
            f"The features of {where} need as many values each, one per record; they have "
            f"{listed}.",
            details={f"{where}.{name}": [f"{n} values."] for name, n in lengths.items()},
        )
    rows = next(iter(lengths.values()))
    if rows == 0:
        raise _wrong(where, "lists of one value or more per feature")
    return Invocation(rows=rows, values=value)


_READERS: dict[str, Callable[[Any], Invocation]] = {
    "dataframe_split": _split,
    "dataframe_records": _records,
    "instances": _instances,
    "inputs": _inputs,
}


def _wrong(where: str, expected: str) -> InvalidInput:
    return InvalidInput(f"{where} must be {expected}.", details={where: [f"Expected {expected}."]})


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{name[:200]}'" for name in names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return shown + more


# -- checked against the versions that may answer ----------------------------------------


def _check_probabilities(signatures: Sequence[Signature]) -> None:
    for signature in signatures:
        if "probabilities" in signature.outputs:
            continue
        why = (
            "a regressor answers numbers"
            if signature.task == REGRESSION
            else "its classifier has no predict_proba"
        )
        raise InvalidInput(
            f"This endpoint's model has no probabilities ({why}); leave probabilities out.",
            details={"probabilities": ["Not available for this model."]},
        )


def _sole_feature(signatures: Sequence[Signature]) -> str:
    names = {signature.names for signature in signatures}
    if len(names) == 1:
        [only] = names
        if len(only) == 1:
            return only[0]
    takes = sorted({name for signature in signatures for name in signature.names})
    raise InvalidInput(
        "Plain values fit a model of one feature; this one takes "
        f"{len(takes)} ({', '.join(takes[:MAX_NAMED])}): send records, or dataframe_split "
        "with its columns.",
        details={"features": takes[:MAX_NAMED]},
    )


def _check_header(header: list[str], signatures: Sequence[Signature]) -> None:
    """Every column a feature of a version that may answer; every feature one of them
    requires, a column (an optional one may be left out: missing in every row)."""
    known = {name for signature in signatures for name in signature.names}
    unknown = [name for name in header if name not in known]
    required = dict.fromkeys(
        f.name for signature in signatures for f in signature.features if f.required
    )
    missing = [name for name in required if name not in header]
    if not unknown and not missing:
        return
    expected = ", ".join(sorted(known)[:MAX_NAMED])
    parts = [f"unknown column {_names(unknown)}"] if unknown else []
    parts += [f"missing feature column {_names(missing)}"] if missing else []
    details = {name: [f"Unknown column. Expected: {expected}."] for name in unknown}
    details.update({name: ["This feature is required: add its column."] for name in missing})
    raise InvalidInput(f"The CSV's header: {'; '.join(parts)}.", details=details)


# -- out ---------------------------------------------------------------------------------


def answer(served: Served, *, probabilities: bool) -> dict[str, Any]:
    """``{"predictions": [...]}`` as MLflow answers, and beside it, in the same order, each
    record's ``probabilities`` (when asked), ``request_ids`` and ``feedback_tokens``."""
    output = served.output
    predictions = output.labels if output.labels is not None else output.values
    assert predictions is not None
    body: dict[str, Any] = {"predictions": predictions.tolist()}
    if probabilities:
        assert output.probabilities is not None  # promised by Invocation.batch's check
        classes = served.answer.signature.classes
        body["probabilities"] = [
            dict(zip(classes, row, strict=True)) for row in output.probabilities.tolist()
        ]
    body["request_ids"] = served.request_ids
    body["feedback_tokens"] = served.feedback_tokens()
    return body


def sole_endpoint(names: Sequence[str]) -> str:
    """The endpoint ``/invocations`` at the server's root serves: the only one. ``names``:
    the endpoints', up to ``MAX_NAMED`` + 1 of them."""
    if len(names) == 1:
        return names[0]
    if not names:
        raise EndpointNotFound("There are no endpoints yet.")
    listed = ", ".join(names[:MAX_NAMED]) + (", ..." if len(names) > MAX_NAMED else "")
    raise InvalidInput(
        f"/invocations serves a service of one endpoint, and this one has several ({listed}): "
        "POST /api/v1/<endpoint_name>/invocations instead.",
        details={"endpoints": list(names[:MAX_NAMED])},
    )
