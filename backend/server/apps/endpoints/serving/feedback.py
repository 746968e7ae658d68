"""Feedback: the ground truth of logged predictions, and who may give it.

A/B tests are decided on feedback, so feedback is a right that comes with the prediction:

- Every answer carries the ``request_id`` and a ``feedback_token``, a MAC of the id under a
  key derived from ``SECRET_KEY``. Nothing is stored: the token is computed again to check
  it, in constant time, before the database is touched (docs/api.md, "Feedback").
- Giving feedback needs the token, or an operator (a staff user with the permission to
  change requests). A request made by an authenticated user takes feedback only from that
  user; with ``PREDICT_ACCESS=token``, every request does.
- ``FEEDBACK_ACCESS`` narrows who may give it at all: ``token`` (whoever holds the token),
  ``authenticated`` (a logged-in holder) or ``staff`` (operators only). The view's
  permission class checks that part (``policy.py``).
- The value must be one of the algorithm's classes (a finite number for a regressor).
- The audit: when, by whom and how (``token``, ``staff`` or ``upload``); a value replaced
  by another is kept as a ``FeedbackRevision``.
- The tally (``tally.py``), what /metrics shows, changes in the same transaction.

Feedback arrives one request at a time (``give``) or as a CSV file (``give_many``).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from django.utils.crypto import salted_hmac

from apps.core.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from apps.endpoints import policy
from apps.endpoints.models import FeedbackRevision, MLAlgorithm, MLRequest, ShadowAnswer, Task
from apps.endpoints.policy import Actor
from apps.endpoints.serving import tally

if TYPE_CHECKING:
    pass

# -- the token ---------------------------------------------------------------------------

_KEY_SALT = "ml_pipeline.feedback_token"
TOKEN_LENGTH = 32  # hex characters: a 128-bit MAC


@lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    # Derived from SECRET_KEY as Django derives its own keys (salted_hmac), so that the
    # token key is not SECRET_KEY itself and changes when it does.
    return salted_hmac(_KEY_SALT, "key", secret=secret, algorithm="sha256").digest()


def _mac(key: bytes, request_id: int) -> str:
    # Keyed BLAKE2b is a MAC by design, and three times as fast as HMAC-SHA256 here
    # (0.6 against 1.8 us a token, bench/feedback_bench.py): a million-row batch answer
    # computes a million.
    return hashlib.blake2b(b"%d" % request_id, key=key, digest_size=16).hexdigest()


def token_for(request_id: int) -> str:
    """The feedback token of logged request ``request_id``."""
    return _mac(_key(settings.SECRET_KEY), request_id)


def tokens_for(request_ids: Iterable[int]) -> list[str]:
    key = _key(settings.SECRET_KEY)
    return [_mac(key, pk) for pk in request_ids]


def token_matches(request_id: int, token: str) -> bool:
    """Whether ``token`` is the token of ``request_id`` under SECRET_KEY or one of
    SECRET_KEY_FALLBACKS (a rotated key keeps its tokens valid until it is dropped).

    Every key is compared, with ``hmac.compare_digest``, whatever the earlier ones gave:
    a wrong token takes as long as a right one, so timing cannot guess it byte by byte."""
    given = token.encode("utf-8", "replace")
    matched = False
    for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        expected = _mac(_key(secret), request_id).encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def _via(actor: Actor, request_id: int, token: str | None) -> str:
    """How ``actor`` may give feedback on ``request_id`` ("staff" or "token"), checked
    without touching the database; raises ``Forbidden`` when it may not (``policy``)."""
    valid = bool(token) and token_matches(request_id, token or "")
    via = policy.feedback_via(actor, token=token, token_valid=valid)
    if via is None:
        raise Forbidden(policy.feedback_refusal_for(token=token))
    return via


# -- the value ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a feedback value is checked against: the algorithm's task and classes."""

    task: str
    classes: tuple[str, ...]

    @classmethod
    def of(cls, algorithm: MLAlgorithm) -> Target:
        return cls(task=algorithm.task, classes=tuple(str(c) for c in algorithm.classes or ()))


def check_value(target: Target, value: Any) -> str:
    """``value`` as stored: one of the classes (a label with adult.test's trailing full
    stop, ">50K.", is that class), or for a regressor a finite number. Raises
    ``InvalidInput`` otherwise."""
    if value is None or isinstance(value, (bool, list, dict)):
        raise _bad_value("Feedback must be one value (a class, or a number for a regressor).")
    text = str(value).strip()
    if not text:
        raise _bad_value("Feedback is empty.")
    if "\x00" in text:  # PostgreSQL's text cannot hold it
        raise _bad_value("Feedback may not contain a NUL character.")
    if target.task == Task.REGRESSION:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise _bad_value(f"'{_shown(text)}' is not a finite number; this model is a regressor.")
        return repr(number)
    if not target.classes or text in target.classes:
        return text
    if text.rstrip(".") in target.classes:
        return text.rstrip(".")
    raise _bad_value(
        f"'{_shown(text)}' is not a class of this model; expected one of: "
        f"{', '.join(target.classes)}."
    )


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def _bad_value(message: str) -> InvalidInput:
    return InvalidInput(message, details={"feedback": [message]})


# -- one request -------------------------------------------------------------------------


def give(*, request_id: int, value: Any, token: str | None, actor: Actor) -> MLRequest:
    """Record ``value`` as the feedback of logged request ``request_id``.

    Refused with ``Forbidden`` (403) before anything is read when the token is missing or
    wrong, so that nothing about the request shows; ``NotFound`` (404) only for a caller
    who may give it feedback; ``InvalidInput`` (400) for a value the model cannot have."""
    via = _via(actor, request_id, token)
    with transaction.atomic():
        # Locked, so that two feedbacks at once both end up in the history.
        row = (
            MLRequest.objects.select_for_update(of=("self",))
            .select_related("parent_mlalgorithm")
            .filter(pk=request_id)
            .first()
        )
        if row is None:
            raise NotFound(f"No logged request {request_id}.")
        problem = policy.feedback_owner_refusal(actor, via, row.user_id)
        if problem:
            raise Forbidden(problem)
        if value is None:
            raise _bad_value("Send the ground truth as 'feedback'.")
        target = Target.of(row.parent_mlalgorithm)
        checked = check_value(target, value)
        counts = tally.Changes()
        tasks = {row.parent_mlalgorithm_id: target.task}
        _apply([(row, checked)], by=actor.label, via=via, tasks=tasks, counts=counts)
        tally.save(counts)
    return row


def _apply(
    changes: Sequence[tuple[MLRequest, str]],
    *,
    by: str,
    via: str,
    tasks: Mapping[int, str],
    counts: tally.Changes,
) -> int:
    """Write the new values; returns how many changed. Each replaced value becomes a
    revision. Re-sending the value a request already has changes nothing (and keeps the
    audit of whoever gave it first). What changed is added to ``counts`` (``tasks``: each
    algorithm's task), for the caller to save in its transaction (tally.py)."""
    now = timezone.now()
    changed = [(row, value) for row, value in changes if row.feedback != value]
    for row, value in changed:
        algorithm_id = row.parent_mlalgorithm_id
        counts.replace(
            request_id=row.pk,
            algorithm_id=algorithm_id,
            response=row.response,
            old=row.feedback,
            new=value,
            task=tasks[algorithm_id],
            ab_test_id=row.ab_test_id,
        )
    FeedbackRevision.objects.bulk_create(
        FeedbackRevision(
            request_id=row.pk,
            feedback=row.feedback,
            given_at=row.feedback_at,
            given_by=row.feedback_by or "",
            given_via=row.feedback_via or "",
        )
        for row, _ in changed
        if row.feedback is not None
    )
    by_value: dict[str, list[int]] = {}
    for row, value in changed:
        row.feedback, row.feedback_at, row.feedback_by, row.feedback_via = value, now, by, via
        by_value.setdefault(value, []).append(row.pk)
    if len(by_value) <= _MAX_GROUPED_UPDATES:  # classes: one UPDATE per distinct value
        for value, pks in by_value.items():
            MLRequest.objects.filter(pk__in=pks).update(
                feedback=value, feedback_at=now, feedback_by=by, feedback_via=via
            )
    else:  # a regressor's numbers: few rows share a value
        MLRequest.objects.bulk_update(
            [row for row, _ in changed],
            ["feedback", "feedback_at", "feedback_by", "feedback_via"],
            batch_size=500,
        )
    return len(changed)


_MAX_GROUPED_UPDATES = 20


def delete_requests(requests: QuerySet[MLRequest]) -> int:
    """Delete logged requests (the admin's delete), taking their feedback out of the tally;
    returns how many were deleted. The rows are locked first, so that feedback given to
    one of them meanwhile is either counted and taken out here or never written."""
    with transaction.atomic():
        rows = list(
            requests.select_for_update(of=("self",))
            .order_by()
            .values_list(
                "pk",
                "parent_mlalgorithm_id",
                "parent_mlalgorithm__task",
                "response",
                "feedback",
                "ab_test_id",
            )
        )
        counts = tally.Changes()
        for pk, algorithm_id, task, response, value, ab_test_id in rows:
            counts.replace(
                request_id=pk,
                algorithm_id=algorithm_id,
                response=response,
                old=value,
                new=None,
                task=task,
                ab_test_id=ab_test_id,
            )
        ids = [row[0] for row in rows]
        # The tally first: it reads the shadow's answers of these requests (count_pairs).
        tally.save(counts)
        delete_revisions(ids)
        for part in _in_parts(ids):
            ShadowAnswer.objects.filter(request_id__in=part).delete()
        for part in _in_parts(ids):
            # Their revisions gone, the rows are deleted by one statement: Django's own
            # delete fetches every row first (a model that others reference).
            MLRequest.objects.filter(pk__in=part)._raw_delete(MLRequest.objects.db)
    return len(rows)


def delete_revisions(request_ids: list[int]) -> None:
    """The replaced feedback values of these requests, deleted with them in the caller's
    transaction. The database does not do it: the revisions' link to the request has no
    foreign key there (models.FeedbackRevision), so every delete of log rows calls this."""
    for part in _in_parts(request_ids):
        FeedbackRevision.objects.filter(request_id__in=part).delete()


def delete_orphaned_revisions(after: int, up_to: int) -> None:
    """The revisions of requests with ids in ``(after, up_to]`` that no longer exist, in the
    caller's transaction: retention's way, after it deleted a batch of that range.

    One statement of fixed size whatever the batch: by the ids, a 10k-row batch bound 10k
    parameters in two statements, and pruning ran at 40 % of its rate. It walks the
    revisions' index over the range (few rows) and keeps those of rows still there (a
    running A/B test's). A revision committed while the batch waited for a row's lock is
    seen: this statement starts after that commit."""
    FeedbackRevision.objects.filter(request_id__gt=after, request_id__lte=up_to).exclude(
        Exists(MLRequest.objects.filter(pk=OuterRef("request_id")))
    ).delete()
    # A shadow's answers to them, the same way (their counters keep what they counted).
    ShadowAnswer.objects.filter(request_id__gt=after, request_id__lte=up_to).exclude(
        Exists(MLRequest.objects.filter(pk=OuterRef("request_id")))
    ).delete()


def _in_parts(ids: list[int], size: int = 5_000) -> Iterator[list[int]]:
    """``ids`` in parts for ``IN (...)``: well under SQLite's limit of bound parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# -- a file of them ----------------------------------------------------------------------

COLUMNS = ("request_id", "feedback_token", "feedback")
_CHUNK_ROWS = 2_000
MAX_LISTED_REFUSALS = 1_000


@dataclass
class Refusal:
    line: int
    request_id: str
    reason: str


@dataclass
class BulkResult:
    applied: int = 0  # rows whose feedback is now the value sent (changed or not)
    changed: int = 0  # of those, rows whose feedback changed
    refused: list[Refusal] = field(default_factory=list)  # the first MAX_LISTED_REFUSALS
    refused_count: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    def refuse(self, line: int, request_id: str, reason: str) -> None:
        self.refused_count += 1
        if len(self.refused) < MAX_LISTED_REFUSALS:
            self.refused.append(Refusal(line, _shown(request_id), reason))


@dataclass
class _Line:
    line: int
    request_id: str
    pk: int
    value: str
    via: str


def give_many(*, upload: IO[bytes], actor: Actor, atomic: bool = False) -> BulkResult:
    """Apply a CSV file of ``request_id,feedback_token,feedback`` rows, in one transaction.

    Each row is checked as ``give`` checks one request; a refused row is reported with its
    line and reason and the others are applied. With ``atomic``, one refused row refuses
    the whole file (``InvalidInput`` listing the refusals) and nothing is written."""
    rows, header = _read(upload)
    result = BulkResult(ignored_columns=[c for c in header if c not in COLUMNS])
    seen: dict[int, int] = {}  # request id -> the line that gave it
    targets: dict[int, Target] = {}
    counts = tally.Changes()
    with transaction.atomic():
        for chunk in _chunked(rows, _CHUNK_ROWS):
            lines = [_checked_line(line, cells, actor, seen, result) for line, cells in chunk]
            good = [x for x in lines if x is not None]
            _apply_lines(good, actor, targets, result, atomic, counts)
        if result.applied + result.refused_count == 0:
            raise InvalidInput("The file has a header but no rows.")
        result.refused.sort(key=lambda refusal: refusal.line)
        if atomic and result.refused_count:
            raise InvalidInput(
                f"{result.refused_count} of {result.applied + result.refused_count} rows were "
                "refused, so nothing was applied (atomic=true). The first: line "
                f"{result.refused[0].line}: {result.refused[0].reason}",
                details={"refused": [r.__dict__ for r in result.refused]},
            )
        # Once, at the end: the tally's rows stay locked until the file's transaction
        # commits, and other feedback for these algorithms waits for them.
        tally.save(counts)
    return result


def _checked_line(
    line: int, cells: dict[str, str], actor: Actor, seen: dict[int, int], result: BulkResult
) -> _Line | None:
    """What can be checked without the database: the id, duplicates and the token."""
    text = cells.get("request_id", "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        result.refuse(line, text, "request_id must be a whole number.")
        return None
    pk = int(text)
    if pk in seen:
        result.refuse(line, text, f"Request {pk} appears earlier in the file (line {seen[pk]}).")
        return None
    seen[pk] = line
    try:
        via = _via(actor, pk, cells.get("feedback_token", "").strip() or None)
    except Forbidden as exc:
        result.refuse(line, text, exc.message)
        return None
    return _Line(line, text, pk, cells.get("feedback", ""), via)


_FEEDBACK_FIELDS = (
    "id",
    "user_id",
    "parent_mlalgorithm_id",
    "response",  # for the tally
    "ab_test_id",  # for the test's tally
    "feedback",
    "feedback_at",
    "feedback_by",
    "feedback_via",
)


def _apply_lines(
    lines: list[_Line],
    actor: Actor,
    targets: dict[int, Target],
    result: BulkResult,
    atomic: bool,
    counts: tally.Changes,
) -> None:
    found = {
        row.pk: row
        for row in MLRequest.objects.select_for_update()
        .filter(pk__in=[x.pk for x in lines])
        .only(*_FEEDBACK_FIELDS)
    }
    missing = {r.parent_mlalgorithm_id for r in found.values()} - targets.keys()
    for algorithm in MLAlgorithm.objects.filter(pk__in=missing).only("id", "task", "classes"):
        targets[algorithm.pk] = Target.of(algorithm)
    changes: dict[str, list[tuple[MLRequest, str]]] = {}
    for x in lines:
        row = found.get(x.pk)
        if row is None:
            result.refuse(x.line, x.request_id, f"No logged request {x.pk}.")
            continue
        problem = policy.feedback_owner_refusal(actor, x.via, row.user_id)
        if problem:
            result.refuse(x.line, x.request_id, problem)
            continue
        try:
            value = check_value(targets[row.parent_mlalgorithm_id], x.value)
        except InvalidInput as exc:
            result.refuse(x.line, x.request_id, exc.message)
            continue
        changes.setdefault(x.via, []).append((row, value))
        result.applied += 1
    if atomic and result.refused_count:
        return  # the file will be refused: no point writing what is rolled back
    tasks = {pk: target.task for pk, target in targets.items()}
    for via, rows in changes.items():
        result.changed += _apply(rows, by=actor.label, via=via, tasks=tasks, counts=counts)


def _read(upload: IO[bytes]) -> tuple[Iterator[tuple[int, dict[str, str]]], list[str]]:
    """The rows of the file as (line, cells by column) and its header."""
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(exc, 1) from None
    if not header:
        raise InvalidInput("The file is empty.")
    if len(header) > settings.BATCH_MAX_COLUMNS:  # each row becomes a dict of them
        raise PayloadTooLarge(
            f"The file has more than {settings.BATCH_MAX_COLUMNS} columns "
            f"({len(header)}; BATCH_MAX_COLUMNS); it needs {', '.join(COLUMNS)}."
        )
    missing = [c for c in ("request_id", "feedback") if c not in header]
    if missing:
        raise InvalidInput(
            f"Missing columns: {', '.join(missing)}. The header must name {', '.join(COLUMNS)}.",
            details={"missing_columns": missing},
        )
    if len(set(header)) != len(header):
        raise InvalidInput("A column appears more than once in the header.")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        count = 0
        try:
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                count += 1
                if count > settings.BATCH_MAX_ROWS:
                    raise PayloadTooLarge(
                        f"The file has more than {settings.BATCH_MAX_ROWS} rows "
                        "(BATCH_MAX_ROWS); split it."
                    )
                if len(cells) != len(header):
                    raise InvalidInput(
                        f"Line {reader.line_num} has {len(cells)} fields; the header has "
                        f"{len(header)}."
                    )
                yield reader.line_num, dict(zip(header, cells, strict=True))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _unreadable(exc, reader.line_num) from None

    return rows(), header


def _unreadable(exc: Exception, line: int) -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput(f"The file is not UTF-8 text (line {line}).")
    return InvalidInput(f"Line {line} is not valid CSV: {exc}.")


def _chunked(
    rows: Iterator[tuple[int, dict[str, str]]], size: int
) -> Iterator[list[tuple[int, dict[str, str]]]]:
    chunk: list[tuple[int, dict[str, str]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
