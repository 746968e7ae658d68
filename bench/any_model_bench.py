"""Any model as an endpoint: what serving costs beside the model itself, and registering.

    .venv/bin/python bench/any_model_bench.py [--seconds 15]

Needs wrk (Debian: ``apt-get install wrk``). In one run, on a fresh SQLite database and a
temporary artifacts folder:

  (a) two generic models, saved with skops as a data scientist would, registered with
      ``manage.py register_model`` (the path every model takes):
      - "onnx": StandardScaler + LogisticRegression on the breast cancer data, which
        skl2onnx converts and the registration verifies, so ONNX Runtime serves it;
      - "sklearn": StandardScaler + HistGradientBoostingClassifier, which skl2onnx does
        not convert, so scikit-learn serves it;
  (b) per model, in process: the bare model call on one row (what an answer needs: the
      label and the probabilities, so scikit-learn's predict and predict_proba on a
      one-row DataFrame, or one ONNX session run), and the whole runtime call (JSON record
      in, answer out); both with one native thread, as the server's workers run;
  (c) per model, POST /api/v1/<endpoint>/predict under gunicorn with the production
      configuration (2 workers of 4 threads), 1 and 8 connections: req/s, p50, p99;
  (d) registering a random forest of about 20 MB (``register_model``: hash,
      load, signature, a check on its example, the ONNX conversion and its verification).

The targets (issue #12): the ONNX-served model answers one row at p50 <= 2 ms at one
connection; the scikit-learn-served one at p50 <= its bare call + 1.5 ms; registering 20 MB
takes <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from predict_bench import lua_script, wrk
from threadpoolctl import threadpool_limits

from common import SERVER, UNBOUNDED, free_port, log, save

sys.path[:0] = [str(SERVER)]


def train(folder: Path) -> dict[str, Any]:
    """The two models and their examples; returns {name: (model, records)}."""
    import skops.io
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    models = {
        "onnx": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        "sklearn": make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=50)),
    }
    out: dict[str, Any] = {}
    for name, model in models.items():
        model.fit(x, y)
        skops.io.dump(model, folder / f"{name}.skops")
        x.head(20).to_csv(folder / f"{name}_example.csv", index=False)
        out[name] = (model, json.loads(x.head(200).to_json(orient="records")))
    return out


def bare_and_runtime(model: Any, records: list[dict[str, Any]], name: str) -> tuple[float, float]:
    """Median microseconds of the bare one-row model call and of the runtime's whole call."""
    import pandas as pd

    from apps.ml import codecs, compiled, signature
    from apps.ml.kinds.sklearn import SklearnRuntime

    sig = signature.infer(model, pd.DataFrame(records[:20]))
    runtime: Any = SklearnRuntime(model, sig)
    frames = [pd.DataFrame([r]) for r in records]
    if name == "onnx":
        frame = codecs.frame_from_records(records, sig)
        onnx, card = compiled.compile_generic(model, sig, frame, runtime.predict(frame))
        assert onnx is not None, card
        runtime = onnx
        single = [codecs.frame_from_records([r], sig) for r in records]
        feeds = [onnx._feed(f) for f in single]

        def bare(i: int) -> None:
            onnx.session.run(None, feeds[i])
    else:

        def bare(i: int) -> None:
            model.predict(frames[i])
            model.predict_proba(frames[i])

    def timed(call: Any) -> float:
        runs = []
        for _ in range(3):
            for i in range(len(records)):
                started = time.perf_counter()
                call(i)
                runs.append(time.perf_counter() - started)
        return statistics.median(runs) * 1e6

    return timed(bare), timed(lambda i: runtime.compute_prediction(records[i]))


class Server:
    def __init__(self, folder: Path) -> None:
        self.env = dict(
            os.environ,
            **UNBOUNDED,
            DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
            SECRET_KEY="benchmark-only",
            MODEL_ARTIFACTS_PATH=str(folder),
            ML_COMPILED_INFERENCE="1",
            ML_DEMO_MODELS="0",
            WEB_CONCURRENCY="2",
            GUNICORN_THREADS="4",
            LOG_LEVEL="WARNING",
        )
        self.manage("migrate", "-v0")
        self.port = free_port()
        self.env.update(HOST="127.0.0.1", PORT=str(self.port))
        self.url = f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=SERVER,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi"],
            cwd=SERVER,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


REGISTER_20MB = """
import time, pandas as pd, joblib
from pathlib import Path
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from apps.endpoints.catalogue.register import register_model
x, y = make_classification(n_samples=20000, n_features=20, random_state=0)
x = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
model = RandomForestClassifier(n_estimators=90, random_state=0, n_jobs=2).fit(x, y)
path = Path(%r) / "forest20.joblib"
joblib.dump(model, path)
started = time.perf_counter()
done = register_model(artifact=path, endpoint_name="forest", name="rf", version="1",
    example=x.head(20).to_csv(index=False).encode(), allow_pickle=True)
print(path.stat().st_size, time.perf_counter() - started, done.algorithm.serving["engine"])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    command = shlex.join(["python", "bench/any_model_bench.py", *sys.argv[1:]])
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="any-model-bench-"))
    try:
        trained = train(folder)
        rows, targets = [], []
        with Server(folder) as server:
            for name in trained:
                out = server.manage(
                    "register_model", str(folder / f"{name}.skops"), "--endpoint", name,
                    "--name", name, "--version", "1", "--status", "production",
                    "--input-example", str(folder / f"{name}_example.csv"),
                )  # fmt: skip
                log(f"(a) {name}: {out.strip().splitlines()[0]}")
            for name, (model, records) in trained.items():
                # As the server's workers run (gunicorn.conf.py: one native thread each).
                with threadpool_limits(1):
                    bare, whole = bare_and_runtime(model, records, name)
                script = lua_script(records, folder, f"{name}.lua")
                path = f"/api/v1/{name}/predict"
                wrk(server.url, script, 8, 3, path=path)  # warm-up: each worker loads it
                measured = {}
                for connections in (1, 8):
                    log(f"(c) {name}, {connections} connection(s), {args.seconds} s")
                    measured[connections] = wrk(
                        server.url, script, connections, args.seconds, path=path
                    )
                one, eight = measured[1], measured[8]
                rows.append(
                    f"| {name} | {bare / 1e3:.3f} | {whole / 1e3:.3f} | {one['p50']:.2f} | "
                    f"{one['p99']:.2f} | {one['rps']:,.0f} | {eight['rps']:,.0f} | "
                    f"{eight['p50']:.2f} | {one['errors'] + eight['errors']:.0f} |"
                )
                limit = 2.0 if name == "onnx" else bare / 1e3 + 1.5
                targets.append(
                    f"{name}: p50 at 1 connection {one['p50']:.2f} ms, target <= {limit:.2f} ms: "
                    + ("met" if one["p50"] <= limit else "NOT met")
                )
        log("(d) registering a random forest of about 20 MB")
        printed = server.manage("shell", "-c", REGISTER_20MB % str(folder))
        size, seconds, engine = printed.split()[-3:]
        mb = int(size) / 1e6
        targets.append(
            f"registering {mb:.1f} MB ({engine} serves it): {float(seconds):.2f} s, target <= 5 s: "
            + ("met" if float(seconds) <= 5 else "NOT met")
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, gunicorn 2 "
            "workers x 4 threads, SQLite, load generator: wrk)",
            "",
            "| served by | bare one-row call ms | runtime call ms | p50 ms (1 conn.) | "
            "p99 ms (1 conn.) | req/s (1 conn.) | req/s (8 conn.) | p50 ms (8 conn.) | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *[f"- {t}" for t in targets],
        ]
    )
    print(table)
    save("any_model_bench", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
