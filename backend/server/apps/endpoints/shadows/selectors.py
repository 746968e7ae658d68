"""Reads of shadows: the endpoint's running shadow (for the predict path), and the
requests a report lists."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.core.per_process import Remembered
from apps.endpoints.models import MLRequest, Shadow, ShadowAnswer

# endpoint name -> its running shadow or None
_running: Remembered[str, Shadow | None] = Remembered()


def running_shadow(*, endpoint_name: str) -> Shadow | None:
    """The endpoint's running shadow with its candidate (there is at most one).

    Asked by every prediction, so remembered for ``PREDICT_CACHE_SECONDS`` per process, as
    the catalogue's selections are: a shadow started or ended in another process is seen
    within that time. A copy made for a shadow that ended meanwhile is discarded by the
    writer, which checks the row (``copying``)."""
    return _running.get(
        endpoint_name,
        settings.PREDICT_CACHE_SECONDS,
        lambda: (
            Shadow.objects.select_related("candidate")
            .filter(endpoint__name=endpoint_name, state=Shadow.State.RUNNING)
            .first()
        ),
    )


def forget() -> None:
    _running.forget()


def discordant_pairs(shadow: Shadow, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest requests with feedback on which production and the shadow answered
    differently (a classifier's discordant pairs are among them), newest first."""
    answers = (
        ShadowAnswer.objects.filter(shadow=shadow)
        .order_by("-request_id")
        .values_list("request_id", "response")
    )
    rows: list[dict[str, Any]] = []
    # In pages of the shadow's answers: most requests never get feedback.
    for start in range(0, 20 * limit, 4 * limit):
        page = dict(answers[start : start + 4 * limit])
        if not page:
            break
        logged = MLRequest.objects.filter(pk__in=page, feedback__isnull=False).order_by("-pk")
        for pk, response, truth, at in logged.values_list(
            "pk", "response", "feedback", "created_at"
        ):
            if page[pk] != response:
                rows.append(
                    {
                        "request_id": pk,
                        "created_at": at,
                        "production": response,
                        "shadow": page[pk],
                        "feedback": truth,
                    }
                )
        if len(rows) >= limit:
            break
    return rows[:limit]


def paired_differences(shadow: Shadow) -> list[float]:
    """|e_production| - |e_shadow| of every request of a regressor's shadow with feedback
    (one scan of the shadow's answers; for the Wilcoxon test at the end)."""
    rows = (
        ShadowAnswer.objects.filter(shadow=shadow, request__feedback__isnull=False)
        .order_by()
        .values_list("response", "request__response", "request__feedback")
    )
    return [
        abs(float(truth) - float(production)) - abs(float(truth) - float(mine))
        for mine, production, truth in rows.iterator(chunk_size=10_000)
        if truth is not None  # the filter's; for the type checker
    ]
