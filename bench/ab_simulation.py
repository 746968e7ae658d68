"""How often does an A/B test declare a winner? Many synthetic tests through the service layer.

Each simulated test runs the real lifecycle against a fresh SQLite database made by this
script: ``ab_testing.create``, then per request ``services.predict(status="ab_testing")``
(routed by the test, 50/50), ``feedback.give`` with the right label with
probability equal to the arm's true accuracy, and finally ``ab_testing.stop``. By default
the requests of a test are routed by ``ab_testing.pick_arm`` and written in one INSERT (see
``serve_in_bulk``); ``--full`` sends each one through ``services.predict`` instead. Only the
model is a stub (it always answers ">50K"): the true accuracies are what we set, so we
know whether a declared winner is real.

It reports, per scenario, how often the difference was significant (with equal accuracies
this is the false-positive rate and should be close to alpha; with a gap it is the power)
and how often the challenger (arm 2) was promoted.

    .venv/bin/python bench/ab_simulation.py            # the README table, about 1-2 minutes
    .venv/bin/python bench/ab_simulation.py --reps 50  # quicker, noisier
    .venv/bin/python bench/ab_simulation.py --full --reps 5  # every request via predict
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "backend" / "server"))


@dataclass(frozen=True)
class Scenario:
    accuracy_1: float
    accuracy_2: float
    requests: int  # per test, both arms together
    require_significance: bool = False


# Equal arms (false positives) and a 5-point gap (power) at two sample sizes.
SCENARIOS = [
    Scenario(0.80, 0.80, 400),
    Scenario(0.80, 0.80, 400, require_significance=True),
    Scenario(0.80, 0.80, 1600),
    Scenario(0.80, 0.85, 400),
    Scenario(0.80, 0.85, 1600),
    Scenario(0.80, 0.85, 1600, require_significance=True),
]


def setup_django(folder: str) -> None:
    os.environ.update(
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
    def compute_predictions(self, records: list[Any]) -> list[dict[str, Any]]:
        return [
            {"probability": 0.9, "label": ">50K", "status": "OK", "imputed": []} for _ in records
        ]


class StubRegistry:
    """What ``services.predict`` needs from a registry; every algorithm is the stub."""

    def ensure_declared(self) -> None:
        pass

    def get(self, algorithm: Any) -> StubModel:
        return StubModel()


def arms() -> tuple[Any, Any]:
    from apps.endpoints import services

    made = []
    for name in ("incumbent", "challenger"):
        algorithm, _ = services.register_algorithm(
            endpoint_name="simulation",
            name=name,
            version="1",
            status="testing",
            owner="simulation",
            description="",
            code="",
            wrapper="stub",
            artifact="stub",
            artifact_sha256="0" * 64,
            sklearn_version="-",
            classes=["<=50K", ">50K"],
        )
        made.append(algorithm)
    return made[0], made[1]


def run_test(
    scenario: Scenario, arm_1: Any, arm_2: Any, rng: random.Random, *, full: bool
) -> dict[str, Any]:
    from apps.endpoints import ab_testing

    accuracy = {arm_1.pk: scenario.accuracy_1, arm_2.pk: scenario.accuracy_2}
    abtest = ab_testing.create(
        title="simulation",
        created_by="simulation",
        parent_mlalgorithm_1=arm_1,
        parent_mlalgorithm_2=arm_2,
        require_significance=scenario.require_significance,
    )
    (serve_one_by_one if full else serve_in_bulk)(abtest, scenario.requests, accuracy, rng)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="simulation", force=True)
    summary: dict[str, Any] | None = stopped.summary_json
    assert summary is not None  # every stop saves one
    return summary


def serve_one_by_one(
    abtest: Any, requests: int, accuracy: dict[int, float], rng: random.Random
) -> None:
    """Every request through services.predict and feedback.give, with the token that
    predict answered (--full)."""
    from django.contrib.auth.models import AnonymousUser
    from django.db import transaction

    from apps.endpoints import feedback, services

    client = feedback.Actor(user=AnonymousUser(), address="127.0.0.1")

    with transaction.atomic():  # one commit per test instead of one per request: speed only
        for _ in range(requests):
            [served] = services.predict(
                endpoint_name="simulation", records=[{}], status="ab_testing", rng=rng
            )
            right = rng.random() < accuracy[served["algorithm"]["id"]]
            feedback.give(
                request_id=served["request_id"],
                value=served["label"] if right else "<=50K",
                token=served["feedback_token"],
                actor=client,
            )


def serve_in_bulk(
    abtest: Any, requests: int, accuracy: dict[int, float], rng: random.Random
) -> None:
    """The same rows written with one executemany: each request is routed by
    ``ab_testing.pick_arm`` (what predict uses) and logged with its feedback. Some 100
    times faster than --full (about 3 ms a request on SQLite, and the ORM's bulk_create
    still 0.15 ms a row); only the stub model call and the per-row ORM work are skipped,
    and they do not change the numbers the test is evaluated on."""
    from django.db import connection, transaction
    from django.utils import timezone

    from apps.endpoints import ab_testing
    from apps.endpoints.models import MLRequest

    now = connection.ops.adapt_datetimefield_value(timezone.now())
    rows = []
    for _ in range(requests):
        arm = ab_testing.pick_arm(abtest, assignment_key=None, rng=rng)
        right = rng.random() < accuracy[arm.pk]
        rows.append(("{}", "{}", ">50K", ">50K" if right else "<=50K", now, arm.pk, abtest.pk))
    table = MLRequest._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (input_data, full_response, response, feedback, created_at, "
            "parent_mlalgorithm_id, ab_test_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=400, help="simulated tests per scenario")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--full",
        action="store_true",
        help="every request through services.predict (slow: use --reps 10)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        setup_django(folder)
        from apps.ml.registry import set_registry

        set_registry(StubRegistry())  # type: ignore[arg-type]
        arm_1, arm_2 = arms()
        started = time.monotonic()
        print(f"$ {shlex.join(['python', 'bench/ab_simulation.py', *sys.argv[1:]])}")
        print(f"{args.reps} simulated tests per row, alpha 0.05, traffic 50/50, seed {args.seed}\n")
        print(
            "| true accuracy arm 1 / arm 2 | requests per test | require_significance "
            "| significant | arm 2 promoted |"
        )
        print("| --- | --- | --- | --- | --- |")
        for i, scenario in enumerate(SCENARIOS):
            result = simulate(scenario, args.reps, arm_1, arm_2, args.seed + i, full=args.full)
            print(
                f"| {scenario.accuracy_1:.2f} / {scenario.accuracy_2:.2f} | {scenario.requests} "
                f"| {'yes' if scenario.require_significance else 'no'} "
                f"| {result['significant']:.3f} | {result['promoted_2']:.3f} |",
                flush=True,
            )
        print(f"\n{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
