"""How often does an A/B test declare a winner? Many synthetic tests through the service layer.

Each simulated test runs the real lifecycle against a fresh SQLite database made by this
script: ``ab_testing.create``, then per request ``serving.predict(status="ab_testing")``
(routed by the test, 50/50), feedback, and finally ``ab_testing.stop``. By default the
requests of a test are routed by ``ab_testing.pick_arm`` and written in one INSERT (see
``serve_in_bulk``); ``--full`` sends each one through ``serving.predict`` and
``feedback.give`` instead. Only the models are stubs, so the truth is what we set and we
know whether a declared winner is real:

- classifiers answer ">50K"; the feedback is ">50K" with probability equal to the arm's
  true accuracy;
- regressors answer 0; the feedback is drawn from a normal distribution whose spread is
  the arm's, so each arm's mean absolute error is that spread times sqrt(2/pi).

It reports, per scenario, how often the difference was significant (with equal arms this is
the false-positive rate and should be close to alpha; with a gap it is the power) and how
often the challenger (arm 2) was promoted.

    .venv/bin/python bench/ab_simulation.py            # the docs/ab-tests.md table, a few minutes
    .venv/bin/python bench/ab_simulation.py --reps 50  # quicker, noisier
    .venv/bin/python bench/ab_simulation.py --full --reps 5  # every request via predict

``--sequential`` asks another question: what if the test is watched, looked at after every
20 feedbacks? It simulates the confidence sequence of ``experiments/sequential.py`` and the
fixed-horizon tests under such peeking, with numpy and without the service (see
sequential_simulation.py):

    .venv/bin/python bench/ab_simulation.py --sequential   # 10,000 tests a row
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from common import REPO, UNBOUNDED, save, stub_algorithm

sys.path.insert(0, str(REPO / "backend" / "server"))


@dataclass(frozen=True)
class Scenario:
    task: str  # "classification" or "regression"
    arm_1: float  # a classifier's true accuracy, or a regressor's error spread
    arm_2: float
    requests: int  # per test, both arms together
    require_significance: bool = False
    reps: int | None = None  # tests in this row (default: --reps)

    def describe(self) -> str:
        if self.task == "classification":
            return f"accuracy {self.arm_1:.2f} / {self.arm_2:.2f}"
        return f"error spread {self.arm_1:g} / {self.arm_2:g}"


SCENARIOS = [
    # Classifiers: equal arms (false positives) and a 5-point gap (power).
    Scenario("classification", 0.80, 0.80, 400),
    Scenario("classification", 0.80, 0.80, 400, require_significance=True),
    Scenario("classification", 0.80, 0.80, 1600),
    Scenario("classification", 0.80, 0.85, 400),
    Scenario("classification", 0.80, 0.85, 1600),
    Scenario("classification", 0.80, 0.85, 1600, require_significance=True),
    # Regressors: 1000 equal-arm tests each (the false-winner rate must stay within alpha),
    # and a 10 % smaller error on arm 2 (power).
    Scenario("regression", 10.0, 10.0, 400, reps=1000),
    Scenario("regression", 10.0, 10.0, 400, require_significance=True, reps=1000),
    Scenario("regression", 10.0, 9.0, 400),
    Scenario("regression", 10.0, 9.0, 1600),
    Scenario("regression", 10.0, 9.0, 1600, require_significance=True),
]


def setup_django(folder: str) -> None:
    os.environ.update(
        UNBOUNDED,
        DJANGO_SETTINGS_MODULE="server.settings",
        DATABASE_URL=f"sqlite:///{folder}/simulation.sqlite3",
        SECRET_KEY="simulation-only",
        ML_DEMO_MODELS="0",
        LOG_LEVEL="WARNING",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


class StubModel:
    def __init__(self, task: str) -> None:
        self.task = task

    def compute_predictions(self, records: list[Any]) -> list[dict[str, Any]]:
        if self.task == "regression":
            return [{"prediction": 0.0, "status": "OK"} for _ in records]
        return [{"label": ">50K", "status": "OK"} for _ in records]


class StubRegistry:
    """What ``serving.predict`` needs from a registry; every algorithm is a stub."""

    def get(self, algorithm: Any) -> StubModel:
        return StubModel(algorithm.task)


def arms(task: str) -> tuple[Any, Any]:
    made = [
        stub_algorithm(endpoint=f"simulation-{task}", name=name, status="testing", task=task)
        for name in ("incumbent", "challenger")
    ]
    return made[0], made[1]


def truth(scenario: Scenario, arm: int, rng: random.Random) -> str:
    """The feedback of one request served by ``arm`` (1 or 2)."""
    level = scenario.arm_1 if arm == 1 else scenario.arm_2
    if scenario.task == "regression":
        return repr(rng.gauss(0.0, level))
    return ">50K" if rng.random() < level else "<=50K"


def run_test(
    scenario: Scenario, arm_1: Any, arm_2: Any, rng: random.Random, *, full: bool
) -> dict[str, Any]:
    from apps.endpoints.experiments import ab_testing

    abtest = ab_testing.create(
        title="simulation",
        created_by="simulation",
        parent_mlalgorithm_1=arm_1,
        parent_mlalgorithm_2=arm_2,
        require_significance=scenario.require_significance,
        # This mode measures the fixed-horizon rule (one look, at the stop); --sequential
        # simulates the sequence.
        mode="fixed",
    )
    (serve_one_by_one if full else serve_in_bulk)(abtest, scenario, rng)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="simulation", force=True)
    assert stopped.summary_json is not None
    summary: dict[str, Any] = stopped.summary_json
    return summary


def serve_one_by_one(abtest: Any, scenario: Scenario, rng: random.Random) -> None:
    """Every request through serving.predict and feedback.give, with the token that
    predict answered (--full)."""
    from django.contrib.auth.models import AnonymousUser
    from django.db import transaction

    from apps.endpoints import policy
    from apps.endpoints.serving import feedback
    from apps.endpoints.serving import predict as serving

    client = policy.Actor(user=AnonymousUser(), address="127.0.0.1")
    endpoint = abtest.parent_mlalgorithm_1.parent_endpoint.name
    with transaction.atomic():  # one commit per test instead of one per request: speed only
        for _ in range(scenario.requests):
            [served] = serving.predict(
                endpoint_name=endpoint, records=[{}], status="ab_testing", rng=rng
            )
            arm = 1 if served["algorithm"]["id"] == abtest.parent_mlalgorithm_1_id else 2
            feedback.give(
                request_id=served["request_id"],
                value=truth(scenario, arm, rng),
                token=served["feedback_token"],
                actor=client,
            )


def serve_in_bulk(abtest: Any, scenario: Scenario, rng: random.Random) -> None:
    """The same rows written with one executemany: each request is routed by
    ``ab_testing.pick_arm`` (what predict uses) and logged with its feedback. Some 100
    times faster than --full; only the stub model call and the per-row ORM work are
    skipped, and they do not change the numbers the test is evaluated on."""
    from django.db import connection, transaction
    from django.utils import timezone

    from apps.endpoints.experiments import ab_testing
    from apps.endpoints.models import MLRequest

    now = connection.ops.adapt_datetimefield_value(timezone.now())
    answer = "0.0" if scenario.task == "regression" else ">50K"
    rows = []
    for i in range(scenario.requests):
        arm = ab_testing.pick_arm(abtest, assignment_key=None, rng=rng)
        number = 1 if arm.pk == abtest.parent_mlalgorithm_1_id else 2
        given = truth(scenario, number, rng)
        # Every request's feedback from a client of its own: as many clients as requests.
        rows.append(("{}", "{}", answer, given, f"client-{i}", now, arm.pk, abtest.pk))
    table = MLRequest._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (input_data, full_response, response, feedback, feedback_by, "
            "created_at, parent_mlalgorithm_id, ab_test_id) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def simulate(
    scenario: Scenario, reps: int, arm_1: Any, arm_2: Any, seed: int, *, full: bool
) -> dict[str, float]:
    rng = random.Random(seed)
    significant = promoted_2 = 0
    for _ in range(reps):
        summary = run_test(scenario, arm_1, arm_2, rng, full=full)
        comparison = summary["comparison"]
        significant += bool(comparison and comparison["significant"])
        promoted_2 += summary["outcome"] == "arm_2_promoted"
    return {"significant": significant / reps, "promoted_2": promoted_2 / reps}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--reps",
        type=int,
        help="simulated tests per scenario (default 400; 10,000 with --sequential)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--full",
        action="store_true",
        help="every request through serving.predict (slow: use --reps 10)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="watch the tests: the confidence sequence against fixed-horizon tests under "
        "peeking, simulated with numpy (no service)",
    )
    args = parser.parse_args()
    if args.sequential:
        from sequential_simulation import run

        run(args.reps or 10_000, args.seed)
        return
    args.reps = args.reps or 400
    with tempfile.TemporaryDirectory() as folder:
        setup_django(folder)
        from apps.ml.registry import set_registry

        set_registry(StubRegistry())  # type: ignore[arg-type]  # a stub with get() only
        pairs = {task: arms(task) for task in ("classification", "regression")}
        started = time.monotonic()
        lines = [
            f"`{shlex.join(['python', 'bench/ab_simulation.py', *sys.argv[1:]])}`",
            f"alpha 0.05, traffic 50/50, seed {args.seed}",
            "",
            "| task | true arm 1 / arm 2 | requests per test | require_significance | tests "
            "| significant | arm 2 promoted |",
            "| --- | --- | --- | --- | ---: | ---: | ---: |",
        ]
        print("\n".join(lines), flush=True)
        for i, scenario in enumerate(SCENARIOS):
            reps = scenario.reps if scenario.reps and not args.full else args.reps
            result = simulate(scenario, reps, *pairs[scenario.task], args.seed + i, full=args.full)
            line = (
                f"| {scenario.task} | {scenario.describe()} | {scenario.requests} "
                f"| {'yes' if scenario.require_significance else 'no'} | {reps} "
                f"| {result['significant']:.3f} | {result['promoted_2']:.3f} |"
            )
            print(line, flush=True)
            lines.append(line)
        lines.append(f"\n{time.monotonic() - started:.0f} s")
        print(lines[-1])
        save("ab_simulation", "\n".join(lines))


if __name__ == "__main__":
    main()
