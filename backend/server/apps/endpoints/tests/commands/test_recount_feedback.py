"""``manage.py recount_feedback``: the tally rebuilt from the log, and what it corrected."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.endpoints.models import FeedbackTally
from apps.endpoints.serving import bulk
from apps.endpoints.serving.selectors import feedback_counts, feedback_counts_by_scan
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


def recount() -> str:
    out = io.StringIO()
    call_command("recount_feedback", stdout=out)
    return out.getvalue()


def test_it_corrects_a_tally_changed_behind_its_back_and_says_so(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    right = bulk.LogRow("{}", "{}", "<=50K", "<=50K", alg.pk, None, None, "test")
    wrong = bulk.LogRow("{}", "{}", "<=50K", ">50K", alg.pk, None, None, "test")
    with transaction.atomic():
        bulk.insert_requests([right, right, wrong])
    assert "it was right" in recount()
    FeedbackTally.objects.update(given=1, correct=0)  # as if rows were loaded by hand
    assert "corrected the counts of 1 algorithm or running A/B test arm." in recount()
    assert feedback_counts() == feedback_counts_by_scan()
    assert [(c.given, c.correct) for c in feedback_counts()] == [(3, 2)]
