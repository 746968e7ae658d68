"""What a model answers, defined once: the fields, their order, their JSON Schema, the CSV
columns, and the encoders that write them.

A runtime answers a batch as a ``ModelOutput`` (arrays, one entry per row). ``Answer``,
made from the model's signature, turns it into every form a client or the log sees:

- ``predictions``: one ``Prediction`` dict per row (the JSON answer of predict);
- ``texts``: each row's whole answer as JSON text (the log's ``full_response``), from a
  template per label rather than a dict and a ``json.dumps`` per row;
- ``responses``: the label, or the predicted number as text (the log's ``response``);
- ``row_texts`` and ``csv_rows``: a row of a batch answer, JSON or CSV cells;
- ``json_schema``, ``row_schema`` and ``csv_columns``: what those look like, for the
  OpenAPI schema and the CSV header.

``Signature.outputs`` says which fields a model has: ``label``, ``probability`` (binary
classifiers: the positive class), ``probabilities`` (every class), ``prediction``
(regressors), ``status`` (always "OK") and ``imputed`` (features the model filled in). A
logged answer adds ``ENVELOPE``: the id it is logged under, and the token that proves the
right to give its feedback (the serving layer fills them in).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, TypedDict

import numpy as np
import orjson

from apps.ml.signature import CLASSIFICATION, Signature


class Prediction(TypedDict, total=False):
    """One answer. Which fields a model has is ``Signature.outputs``."""

    label: str  # classifiers: the predicted class, as text
    probability: float  # binary classifiers: the probability of the positive class
    probabilities: dict[str, float]  # classifiers with predict_proba: every class
    prediction: float  # regressors
    status: str  # always "OK": a failure is an error answer, never a prediction
    imputed: list[str]  # features the model filled in (the Adult models: missing, unseen)


@dataclass
class ModelOutput:
    """What a runtime answers for a batch: arrays, one entry per row."""

    labels: np.ndarray | None = None  # classifiers: the class as text (object array)
    probabilities: np.ndarray | None = None  # classifiers: (rows, classes), signature order
    values: np.ndarray | None = None  # regressors: float64
    imputed: list[list[str]] | None = None  # runtimes that fill features in
    engine: str = field(default="", compare=False)  # which engine answered (for the log)

    @property
    def rows(self) -> int:
        for array in (self.labels, self.values, self.probabilities):
            if array is not None:
                return len(array)
        return len(self.imputed or ())

    def part(self, rows: slice) -> ModelOutput:
        """The rows ``rows`` of this output (views of its arrays, no copy)."""
        return ModelOutput(
            labels=None if self.labels is None else self.labels[rows],
            probabilities=None if self.probabilities is None else self.probabilities[rows],
            values=None if self.values is None else self.values[rows],
            imputed=None if self.imputed is None else self.imputed[rows],
            engine=self.engine,
        )

    @classmethod
    def join(cls, outputs: Sequence[ModelOutput]) -> ModelOutput:
        """The outputs of consecutive batches as one (the rows in order)."""
        first = outputs[0]

        def joined(name: str) -> np.ndarray | None:
            arrays = [getattr(o, name) for o in outputs]
            return None if getattr(first, name) is None else np.concatenate(arrays)

        imputed = None
        if first.imputed is not None:
            imputed = [row for o in outputs for row in o.imputed or ()]
        return cls(
            labels=joined("labels"),
            probabilities=joined("probabilities"),
            values=joined("values"),
            imputed=imputed,
            engine=first.engine,
        )


# The fields a logged answer adds, in JSON Schema: the request's id in the log, and the
# token that proves the right to give its feedback.
ENVELOPE: dict[str, dict[str, Any]] = {
    "request_id": {"type": "integer", "description": "Where the answer is logged."},
    "feedback_token": {
        "type": "string",
        "description": "Send it with the feedback: it proves the right to give this answer's.",
    },
}
# The fields a row of a batch answer carries (JSON and CSV): the answer's values, without
# "status" (always "OK") and "imputed".
ROW_FIELDS = ("label", "probability", "probabilities", "prediction")


class Answer:
    """How a model with ``signature`` answers, in every form (see the module doc). Made
    once per version and kept with its runtime: the per-label templates it caches are its
    own."""

    def __init__(self, signature: Signature, *, every_field: bool = True) -> None:
        self.signature = signature
        self.every_field = every_field  # every answer has all of ``fields`` (JSON Schema)
        self.fields = signature.outputs
        self.row_fields = tuple(f for f in self.fields if f in ROW_FIELDS)
        self.regressor = signature.task != CLASSIFICATION
        self._templates: dict[tuple[str, str, str], str] = {}  # (label, head, tail)

    # -- the JSON answer -------------------------------------------------------------------

    def predictions(self, output: ModelOutput) -> list[Prediction]:
        """One ``Prediction`` per row, with exactly the fields of ``signature.outputs``."""
        wanted = set(self.fields)
        n = output.rows
        columns: dict[str, Sequence[Any]] = {}
        if "label" in wanted and output.labels is not None:
            columns["label"] = output.labels.tolist()
        if output.probabilities is not None:
            rows = output.probabilities.tolist()
            if "probability" in wanted:
                columns["probability"] = [row[1] for row in rows]
            if "probabilities" in wanted:
                classes = self.signature.classes
                columns["probabilities"] = [dict(zip(classes, row, strict=True)) for row in rows]
        if "prediction" in wanted and output.values is not None:
            columns["prediction"] = output.values.tolist()
        if "status" in wanted:
            columns["status"] = list(repeat("OK", n))
        if "imputed" in wanted:
            columns["imputed"] = (
                output.imputed if output.imputed is not None else [[] for _ in range(n)]
            )
        order = [name for name in self.fields if name in columns]
        return [
            Prediction(**{name: columns[name][i] for name in order})  # type: ignore[typeddict-item]
            for i in range(n)
        ]

    # -- the log -------------------------------------------------------------------------

    def responses(self, output: ModelOutput) -> list[str]:
        """What the log's ``response`` column holds per row: the label, or the predicted
        number as text."""
        if output.labels is not None:
            labels: list[str] = output.labels.tolist()
            return labels
        assert output.values is not None
        return _texts(output.values)

    def texts(self, output: ModelOutput) -> list[str]:
        """Each row's whole answer as JSON text, the JSON of ``predictions(...)[i]`` (the
        log's ``full_response``): a template per distinct label, filled with the row's
        numbers (``_filled``), rather than a dict and a dumps per row."""
        tail = (',"status":"OK"' if "status" in self.fields else "") + (
            ',"imputed":[]}' if "imputed" in self.fields else "}"
        )
        texts = [template % numbers for template, numbers in self._filled(output, "", tail)]
        if "imputed" in self.fields and output.imputed is not None:
            for i, filled in enumerate(output.imputed):
                if filled:
                    texts[i] = texts[i].removesuffix("[]}") + json.dumps(filled) + "}"
        return texts

    # -- a row of a batch answer ---------------------------------------------------------

    def row_texts(
        self, output: ModelOutput, ids: Sequence[int] | None, tokens: Sequence[str] | None
    ) -> list[str]:
        """Each row of a batch's JSON answer: ``request_id``, the ``row_fields``, then
        ``feedback_token`` (without ``ids``, the fields alone)."""
        if ids is None or tokens is None:
            return [template % numbers for template, numbers in self._filled(output, "", "}")]
        head, tail = '"request_id":%d,', ',"feedback_token":"%s"}'
        pairs = self._filled(output, head, tail)
        return [
            template % (pk, *numbers, token)
            for (template, numbers), pk, token in zip(pairs, ids, tokens, strict=True)
        ]

    def csv_columns(self) -> list[str]:
        """The answer's columns in a CSV answer (after ``request_id`` when logged)."""
        if self.regressor:
            return ["prediction"]
        columns = ["label"]
        if "probability" in self.fields:
            columns.append("probability")
        elif "probabilities" in self.fields:
            columns += [f"probability_{c}" for c in self.signature.classes]
        return columns

    def csv_header(self, *, logged: bool) -> list[str]:
        """The columns a CSV answer appends to the uploaded ones."""
        if not logged:
            return self.csv_columns()
        return ["request_id", *self.csv_columns(), "feedback_token"]

    def csv_rows(self, output: ModelOutput) -> list[tuple[Any, ...]]:
        """Per row, its cells in ``csv_columns`` order."""
        if output.values is not None:
            return [(text,) for text in _texts(output.values)]
        assert output.labels is not None
        labels = output.labels.tolist()
        columns = self.csv_columns()
        probabilities = output.probabilities
        if probabilities is None or columns == ["label"]:
            return [(label,) for label in labels]
        if "probability" in columns:
            return list(zip(labels, _texts(probabilities[:, 1]), strict=True))
        numbers = [_texts(probabilities[:, j]) for j in range(probabilities.shape[1])]
        return list(zip(labels, *numbers, strict=True))

    # -- what it looks like --------------------------------------------------------------

    def field_schemas(self) -> dict[str, dict[str, Any]]:
        """The JSON Schema of each of this model's fields, in answer order (``any_model``'s
        for a signature without classes: any label, any class's probability)."""
        classes = list(self.signature.classes)
        every: dict[str, dict[str, Any]] = {
            "label": {"type": "string", "description": "Classifiers: the class."},
            "probability": {
                "type": "number",
                "description": "Binary classifiers: the probability of the positive class.",
            },
            "probabilities": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Classifiers: every class's probability.",
            },
            "prediction": {"type": "number", "description": "Regressors."},
            "status": {
                "type": "string",
                "enum": ["OK"],
                "description": 'Always "OK"; failures are errors, not predictions.',
            },
            "imputed": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Features the model filled in.",
            },
        }
        if classes:
            every["label"] = {"type": "string", "enum": classes}
            every["probabilities"] = {
                "type": "object",
                "properties": {c: {"type": "number"} for c in classes},
                "required": classes,
            }
        return {name: every[name] for name in self.fields if name in every}

    def json_schema(self, *, logged: bool = True) -> dict[str, Any]:
        """The JSON Schema of one answer (with ``ENVELOPE`` when ``logged``)."""
        properties = {**self.field_schemas(), **(ENVELOPE if logged else {})}
        return {"type": "object", "properties": properties, "required": self._required(properties)}

    def row_schema(self, *, logged: bool = True) -> dict[str, Any]:
        """The JSON Schema of one row of a batch's JSON answer."""
        fields = {k: v for k, v in self.field_schemas().items() if k in ROW_FIELDS}
        properties = (
            {
                "request_id": ENVELOPE["request_id"],
                **fields,
                "feedback_token": ENVELOPE["feedback_token"],
            }
            if logged
            else fields
        )
        return {"type": "object", "properties": properties, "required": self._required(properties)}

    def _required(self, properties: dict[str, Any]) -> list[str]:
        """Every field of a model's own answer; of ``any_model``'s, the envelope only."""
        if self.every_field:
            return list(properties)
        return [name for name in properties if name in ENVELOPE]

    @classmethod
    def any_model(cls) -> Answer:
        """The answer of a model not named yet: every field any model may have, none of
        them required (what a route documents before it knows its endpoint)."""
        outputs = ("label", "probability", "probabilities", "prediction", "status", "imputed")
        return cls(Signature((), CLASSIFICATION, outputs=outputs), every_field=False)

    # -- templates -----------------------------------------------------------------------

    def _filled(
        self, output: ModelOutput, head: str, tail: str
    ) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Per row, a JSON template and the JSON text of the numbers that fill it: ``{`` +
        ``head`` + the row's values + ``tail``, where ``head`` and ``tail`` may hold ``%``
        slots of the caller's, filled with the numbers in order. The label's own ``%`` are
        doubled, so a template is always filled, even with ``()``. One template per
        distinct label.

        The numbers are written a column at a time (``_texts``), each once even where
        the answer repeats it (a binary classifier's ``probability``): the per-row work
        is one ``%`` of ready text. On 10,000 rows of a binary classifier, 0.4 us a row
        against 1.7 when each row's floats were formatted by ``%r``
        (``bench/answer_bench.py``)."""
        if self.regressor:
            assert output.values is not None
            template = "{" + head + '"prediction":%s' + tail
            return zip(repeat(template), zip(_texts(output.values)))
        assert output.labels is not None
        labels: list[str] = output.labels.tolist()
        by_label = {}
        for label in set(labels):
            key = (label, head, tail)
            found = self._templates.get(key)
            if found is None:
                found = self._templates.setdefault(key, self._label_template(label, head, tail))
            by_label[label] = found
        return zip(map(by_label.__getitem__, labels), self._numbers(output), strict=True)

    def _label_template(self, label: str, head: str, tail: str) -> str:
        parts = ["{" + head + '"label":' + _escaped(label)]
        if "probability" in self.fields:
            parts.append(',"probability":%s')
        if "probabilities" in self.fields:
            pairs = ",".join(f"{_escaped(c)}:%s" for c in self.signature.classes)
            parts.append(',"probabilities":{' + pairs + "}")
        return "".join(parts) + tail

    def _numbers(self, output: ModelOutput) -> Iterator[tuple[str, ...]]:
        """Per row, the numbers a label template takes, in order, as JSON text."""
        fields = self.fields
        probabilities = output.probabilities
        if probabilities is None or not {"probability", "probabilities"} & set(fields):
            return repeat((), output.rows)
        if "probabilities" not in fields:
            return zip(_texts(probabilities[:, 1]), strict=True)
        columns = [_texts(probabilities[:, j]) for j in range(probabilities.shape[1])]
        if "probability" in fields:
            return zip(columns[1], *columns, strict=True)
        return zip(*columns, strict=True)


def _texts(values: np.ndarray) -> list[str]:
    """Each number of a column as JSON text: a float as the shortest text that reads back
    as the same float64 (``repr``'s digits; orjson writes "1e-7" where ``repr`` writes
    "1e-07"). orjson formats a float64 array in C at about 70 ns a number, where ``repr``
    takes about 400: most of what a batch answer's rows cost, which were 15 % of a worker's
    CPU (docs/speed.md). A float32 column (ONNX Runtime's) is written as the float64 it
    widens to, as ``tolist()`` and ``json.dumps`` would. The runtime refuses NaN and
    infinities (``runtime.py``), so every number here is finite. Other numbers (a
    regressor's ints) by ``repr``."""
    if values.dtype.kind != "f" or not len(values):
        return list(map(repr, values.tolist()))
    numbers = np.ascontiguousarray(values, dtype=np.float64)
    text = orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY)
    return text[1:-1].decode().split(",")


def _escaped(text: str) -> str:
    """``text`` as JSON text, with ``%`` doubled for a template."""
    return json.dumps(text).replace("%", "%%")
