"""Which versions serve: the design's selection rules, and an A/B test's routing.

A request or a file is served by ``Arms``: one version, or the two arms of the endpoint's
running A/B test with each one's share of the rows. A single prediction takes one arm for
the whole request (``for_request``: drawn at random, or by the client's assignment key);
a file's rows are split between the arms at the test's traffic split (``for_file``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apps.core.errors import AmbiguousAlgorithm, InvalidInput
from apps.endpoints.catalogue.selectors import algorithms_for_prediction
from apps.endpoints.catalogue.statuses import check_status
from apps.endpoints.experiments import ab_testing
from apps.endpoints.experiments.selectors import running_abtest
from apps.endpoints.models import ABTest, MLAlgorithm, MLAlgorithmStatus
from apps.ml import registry as ml_registry
from apps.ml.runtime import Runtime

Status = MLAlgorithmStatus.Status
ChooseArm = Callable[[Sequence[MLAlgorithm]], MLAlgorithm]


@dataclass(frozen=True)
class Arms:
    """The versions that serve a batch, each one's share of its rows, and the A/B test
    that routed them (None when no test chose)."""

    endpoint: str
    status: str
    algorithms: tuple[MLAlgorithm, ...]
    shares: tuple[float, ...]
    abtest: ABTest | None = None

    def runtimes(self) -> list[Runtime]:
        """Each version's runtime in this process, loaded on first use."""
        registry = ml_registry.get_registry()
        return [registry.get(algorithm) for algorithm in self.algorithms]


def candidate_algorithms(
    *, endpoint_name: str, status: str, version: str | None
) -> list[MLAlgorithm]:
    """The design's selection rules: the algorithms with this active status (and version).
    Exactly one serves; several are an error unless they are the arms of an A/B test, in
    which case all of them are returned and the caller picks per request (or per row)."""
    check_status(status)
    if status == Status.SHADOW:
        raise InvalidInput(
            "A version in shadow never answers clients: it scores a copy of production's "
            "traffic (GET /api/v1/shadows).",
            details={"status": ["A shadow does not answer."]},
        )
    candidates = algorithms_for_prediction(
        endpoint_name=endpoint_name, status=status, version=version
    )
    if len(candidates) == 1 or status == Status.AB_TESTING:
        return candidates
    raise AmbiguousAlgorithm(
        f"{len(candidates)} algorithms of '{endpoint_name}' have status '{status}'; "
        "pass ?version= to choose one.",
        details={
            "candidates": [{"id": a.pk, "name": a.name, "version": a.version} for a in candidates]
        },
    )


def for_request(
    *,
    endpoint_name: str,
    status: str,
    version: str | None,
    assignment_key: str | None = None,
    rng: random.Random | None = None,
) -> Arms:
    """The one version that serves a request. With status ``ab_testing`` (and no version)
    the endpoint's running test routes it (``ab_testing.route``, by ``assignment_key`` when
    given); ``rng`` draws the arm (injectable for tests)."""
    if status == Status.AB_TESTING and version is None:
        algorithm, abtest = ab_testing.route(
            endpoint_name=endpoint_name, assignment_key=assignment_key, rng=rng
        )
        return Arms(endpoint_name, status, (algorithm,), (1.0,), abtest)
    candidates = candidate_algorithms(endpoint_name=endpoint_name, status=status, version=version)
    chosen = candidates[0] if len(candidates) == 1 else (rng or random).choice(candidates)
    return Arms(endpoint_name, status, (chosen,), (1.0,))


def for_file(*, endpoint_name: str, status: str, version: str | None) -> Arms:
    """The versions that serve a file and each one's share of its rows: with status
    ``ab_testing``, the arms of the endpoint's running test at its traffic split (as
    ``for_request`` routes single predictions); otherwise as predict selects."""
    if status == Status.AB_TESTING and version is None:
        abtest = running_abtest(endpoint_name=endpoint_name)
        if abtest is not None:
            share = abtest.arm_2_share
            return Arms(endpoint_name, status, abtest.arms, (1 - share, share), abtest)
    algorithms = candidate_algorithms(endpoint_name=endpoint_name, status=status, version=version)
    share = 1 / len(algorithms)
    return Arms(endpoint_name, status, tuple(algorithms), (share,) * len(algorithms))
