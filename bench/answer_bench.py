"""The batch answer's JSON text per row: how the numbers are written, variant against
variant in one run.

    .venv/bin/python bench/answer_bench.py [--rows 10000] [--repeat 25]

A binary classifier's answer (the Adult models': label, probability, both classes'
probabilities; float32 probabilities, as ONNX Runtime gives them) for ``--rows`` rows, as
the three texts a batch writes: the unlogged answer's rows, the logged answer's rows (with
``request_id`` and ``feedback_token``) and the log's ``full_response``. CPU time of this
thread, the best of ``--repeat``, in µs a row:

  row by row   what ``apps/ml/answer.py`` did before: each row's floats formatted by
               ``%r`` in its label's template (``repr``, as ``json.dumps`` writes them);
  columns      each column of numbers written once, ``repr`` mapped over it, the template
               filled with ready text (a binary probability once, not twice);
  served       the same, the columns written by orjson (``Answer``, what is served).

Every variant's texts are checked to read back as the same answers before timing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable

from common import REPO, SERVER, save

sys.path[:0] = [str(SERVER), str(REPO / "research")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    import numpy as np

    from apps.ml.answer import Answer, ModelOutput
    from apps.ml.signature import Feature, Signature

    classes = ("<=50K", ">50K")
    fields = ("label", "probability", "probabilities", "status", "imputed")
    signature = Signature((Feature("age", "number"),), "classification", classes, fields)
    rng = np.random.default_rng(0)
    positive = rng.random(args.rows).astype(np.float32)
    output = ModelOutput(
        labels=np.where(positive > 0.5, ">50K", "<=50K").astype(object),
        probabilities=np.stack([1 - positive, positive], axis=1),
    )
    ids = list(range(1, args.rows + 1))
    tokens = [f"{i:032x}" for i in ids]
    answer = Answer(signature)

    def by_row(head: str, tail: str) -> Callable[[], list[str]]:
        """Before: a template per label with ``%r`` slots, filled row by row."""
        templates = {
            c: "{" + head + f'"label":"{c}","probability":%r,'
            f'"probabilities":{{"<=50K":%r,">50K":%r}}' + tail
            for c in classes
        }

        def texts() -> list[str]:
            rows = output.probabilities.tolist()  # type: ignore[union-attr]
            labels = output.labels.tolist()  # type: ignore[union-attr]
            if not head:
                return [templates[c] % (r[1], *r) for c, r in zip(labels, rows, strict=True)]
            return [
                templates[c] % (pk, r[1], *r, t)
                for c, r, pk, t in zip(labels, rows, ids, tokens, strict=True)
            ]

        return texts

    def by_column(texts: Callable[[], list[str]]) -> Callable[[], list[str]]:
        """Columns written by ``repr``: the served code with orjson swapped out."""
        import apps.ml.answer as module

        def run() -> list[str]:
            served = module._texts
            module._texts = lambda values: list(map(repr, values.tolist()))
            try:
                return texts()
            finally:
                module._texts = served

        return run

    envelope = ('"request_id":%d,', ',"feedback_token":"%s"}')
    log_tail = ',"status":"OK","imputed":[]}'
    cases: dict[str, dict[str, Callable[[], list[str]]]] = {
        "answer row, unlogged": {
            "row by row": by_row("", "}"),
            "columns": by_column(lambda: answer.row_texts(output, None, None)),
            "served": lambda: answer.row_texts(output, None, None),
        },
        "answer row, logged": {
            "row by row": by_row(*envelope),
            "columns": by_column(lambda: answer.row_texts(output, ids, tokens)),
            "served": lambda: answer.row_texts(output, ids, tokens),
        },
        "log's full_response": {
            "row by row": by_row("", log_tail),
            "columns": by_column(lambda: answer.texts(output)),
            "served": lambda: answer.texts(output),
        },
    }
    lines = [
        f"`{shlex.join(['python', 'bench/answer_bench.py', *sys.argv[1:]])}`",
        "",
        f"{args.rows:,} rows, best of {args.repeat}, CPU µs a row of this thread",
        "",
        "| text | row by row | columns | served | row by row / served |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, variants in cases.items():
        expected = [json.loads(t) for t in variants["row by row"]()]
        for name, make in variants.items():
            got = [json.loads(t) for t in make()]
            assert got == expected, f"{case}: {name} answers differently"
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeat):
            for name, make in variants.items():  # in turn: the machine drifts
                started = time.thread_time()
                make()
                best[name] = min(best[name], time.thread_time() - started)
        us = {name: seconds * 1e6 / args.rows for name, seconds in best.items()}
        lines.append(
            f"| {case} | {us['row by row']:.2f} | {us['columns']:.2f} | {us['served']:.2f} "
            f"| {us['row by row'] / us['served']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    save("answer_bench", table)


if __name__ == "__main__":
    main()
