"""Batch jobs: a CSV file scored in the background, in pieces that are tasks of their own.

- ``submit``: the file is checked as batch-predict checks it (endpoint, algorithm, header
  against the model's features, ragged rows, limits) before anything is queued, stored in
  the ``batch_jobs`` storage, and cut into pieces of ``BATCH_JOB_CHUNK_ROWS`` records: byte
  ranges, found without parsing (a newline outside quotes ends a record). The algorithms
  are chosen now and kept with the job. A task per piece is sent when the job commits.
- ``run_piece``: a piece is read from the storage with the header line, scored by
  ``score_csv`` (the synchronous path's code), and its output (the input rows plus
  the answer columns) written to the storage. The piece is marked done in the transaction
  that writes its output name and, with ``log_requests``, its log rows: a task delivered
  twice (a worker killed before it acknowledged) finds it done and changes nothing, and
  the output written twice is one file under one name.
- ``finish``: when every piece is done, their outputs are joined into the result, in
  order, and the metrics added up.
- ``fail`` and ``cancel``: the job ends with its reason, and what it wrote (piece outputs,
  the upload, log rows) is removed: a job's log rows are all there or none.
- ``resume_stalled``: pieces of unfinished jobs sent again (a broker that lost its queue).
- ``delete_jobs`` and ``delete_old``: jobs deleted with their files (the admin's delete;
  retention, ``manage.py delete_old_jobs`` or the beat's ``delete_old_jobs`` task).

Who may see a job, and cancel it, is ``policy``'s to say (``may_see_job``,
``may_cancel_job``); for anyone who may not see it, it does not exist.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import connection, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.utils import timezone
from django.utils.crypto import salted_hmac

from apps.core import telemetry
from apps.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PieceRefused,
    ServiceError,
    TooManyJobs,
)
from apps.endpoints import policy
from apps.endpoints.batch import leases, output
from apps.endpoints.batch.reading import CsvFile, check_columns, check_field_counts, read_header
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import sole_endpoint_name
from apps.endpoints.experiments import evaluation
from apps.endpoints.models import BatchJob, BatchJobChunk, MLAlgorithm, MLRequest
from apps.endpoints.serving import feedback, pipeline, routing
from apps.endpoints.serving.pipeline import ScoredBatch
from apps.endpoints.serving.routing import Arms

logger = logging.getLogger(__name__)

State = BatchJob.State
_BLOCK_BYTES = 4 * 1024 * 1024
_DELETE_BATCH = 500
TOKEN_LENGTH = 32
# The salt of job tokens: the module's path when tokens were first given out. Tokens
# already handed out stay valid only while it stays the same, wherever this module lives.
_TOKEN_SALT = "apps.endpoints.jobs"


def storage() -> Storage:
    return storages["batch_jobs"]


# -- submitting ----------------------------------------------------------------------------


def submit(
    *,
    upload: IO[bytes],
    file_name: str,
    endpoint_name: str | None,
    status: str,
    version: str | None,
    log_requests: bool,
    target_column: str | None,
    actor: policy.Actor,
    send: Callable[[int, int], None],
) -> BatchJob:
    """Check the file, store it, record the job and its pieces; ``send(job_id, pieces)``
    queues them once the job is committed (``tasks.send_pieces``)."""
    demo.ensure_registered()
    endpoint_name = endpoint_name or sole_endpoint_name()
    arms = routing.for_file(endpoint_name=endpoint_name, status=status, version=version)
    runtimes = arms.runtimes()
    algorithms = arms.algorithms
    header = read_header(upload)
    check_columns(header, runtimes)
    label = target_column or algorithms[0].target_column or None
    if target_column and target_column not in header:
        raise InvalidInput(
            f"The file has no column '{target_column}' (target_column).",
            details={"target_column": [f"Not a column of the file: {target_column}."]},
        )
    rows = check_field_counts(upload, len(header), max_rows=settings.BATCH_JOB_MAX_ROWS)
    if rows == 0:
        raise InvalidInput("The file has a header but no rows.")
    if rows > settings.BATCH_JOB_MAX_ROWS:
        raise PayloadTooLarge(
            f"The file has more than {settings.BATCH_JOB_MAX_ROWS} rows (BATCH_JOB_MAX_ROWS)."
        )
    pieces = record_ranges(upload, settings.BATCH_JOB_CHUNK_ROWS)
    upload.seek(0)
    stored = storage().save(f"jobs/input-{timezone.now():%Y%m%d%H%M%S%f}.csv", File(upload))
    try:
        with transaction.atomic():
            _check_active(actor, rows)
            job = BatchJob.objects.create(
                user_id=actor.user_id,
                client="" if actor.user_id else actor.label,
                endpoint_name=endpoint_name,
                status=status,
                algorithm_ids=[a.pk for a in algorithms],
                shares=list(arms.shares),
                abtest=arms.abtest,
                log_requests=log_requests,
                target_column=label or "",
                labels_as_feedback=policy.feedback_refusal(actor.user) is None,
                file_name=file_name[:255],
                input_name=stored,
                header=header,
                rows_total=rows,
                chunks_total=len(pieces),
            )
            BatchJobChunk.objects.bulk_create(
                BatchJobChunk(job=job, index=i, start=start, end=end, first_line=line)
                for i, (start, end, line) in enumerate(pieces)
            )
            transaction.on_commit(lambda: send(job.pk, len(pieces)))
    except BaseException:
        storage().delete(stored)
        raise
    return job


def _check_active(actor: policy.Actor, rows: int) -> None:
    """Refuse a job past the client's cap on jobs queued or running
    (``BATCH_JOB_MAX_ACTIVE``) or on their rows (``BATCH_JOB_MAX_ACTIVE_ROWS``); 0 is no
    cap. A client is its user, else its address. In the transaction that creates the job,
    behind a lock per client on PostgreSQL (SQLite has one writer at a time anyway), so
    that N submits at once cannot all pass the same count."""
    most_jobs, most_rows = settings.BATCH_JOB_MAX_ACTIVE, settings.BATCH_JOB_MAX_ACTIVE_ROWS
    if not (most_jobs or most_rows):
        return
    client = f"user:{actor.user_id}" if actor.user_id else actor.label
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # released at the commit
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [client])
    mine = BatchJob.objects.filter(state__in=[State.QUEUED, State.RUNNING])
    mine = mine.filter(user_id=actor.user_id) if actor.user_id else mine.filter(client=client)
    active = mine.aggregate(jobs=Count("pk"), rows=Sum("rows_total"))
    jobs, queued_rows = active["jobs"], active["rows"] or 0
    if most_jobs and jobs >= most_jobs:
        raise TooManyJobs(
            f"You have {jobs} batch jobs queued or running; {most_jobs} at most "
            "(BATCH_JOB_MAX_ACTIVE). Submit this one when one of them has ended.",
            details={"active_jobs": jobs, "limit": most_jobs},
        )
    if most_rows and queued_rows + rows > most_rows:
        raise TooManyJobs(
            f"Your batch jobs queued or running hold {queued_rows} rows; with this file's "
            f"{rows} that is more than {most_rows} (BATCH_JOB_MAX_ACTIVE_ROWS). Submit it "
            "when one of them has ended.",
            details={"active_rows": queued_rows, "rows": rows, "limit": most_rows},
        )


def record_ranges(upload: IO[bytes], every: int) -> list[tuple[int, int, int]]:
    """The file after its header cut into pieces of ``every`` records: (start, end, first
    line) with byte offsets. A record ends at a newline outside quotes (a quote toggles;
    an escaped ``""`` toggles twice), so a quoted cell with a line break stays whole."""
    upload.seek(0)
    bounds: list[int] = []  # the byte after the header, then after every ``every`` records
    offset, records, quoted = 0, 0, 0
    while block := upload.read(_BLOCK_BYTES):
        chars = np.frombuffer(block, dtype=np.uint8)
        if quoted or b'"' in block:
            parity = (np.cumsum(chars == ord('"')) + quoted) % 2
            ends = np.flatnonzero((chars == ord("\n")) & (parity == 0)) + offset + 1
            quoted = int(parity[-1])
        else:  # the common case, a file without quotes: every newline ends a record
            ends = np.flatnonzero(chars == ord("\n")) + offset + 1
        numbers = np.arange(records + 1, records + 1 + len(ends))  # the header is record 1
        bounds += ends[(numbers - 1) % every == 0].tolist()
        records += len(ends)
        offset += len(block)
    if not bounds:  # a header without a newline: no rows
        return []
    starts = bounds
    stops = [*bounds[1:], offset]
    return [
        (start, stop, 2 + i * every)
        for i, (start, stop) in enumerate(zip(starts, stops, strict=True))
        if stop > start
    ]


# -- reading -------------------------------------------------------------------------------


def token_for(job_id: int) -> str:
    """The job's token: what an anonymous submitter shows to read it back."""
    return salted_hmac(_TOKEN_SALT, str(job_id), algorithm="sha256").hexdigest()[:TOKEN_LENGTH]


def _token_matches(job_id: int, token: str) -> bool:
    # As bytes: compare_digest refuses str with anything but ASCII in it (a header's
    # bytes arrive as latin-1 text), and a client must not make that a 500.
    return hmac.compare_digest(token_for(job_id).encode(), token.encode("utf-8", "replace"))


def visible(actor: policy.Actor) -> QuerySet[BatchJob]:
    """The jobs ``actor`` may list: every job for an operator (``policy.sees_every_job``),
    its own for a user, none for an anonymous client (it reads its jobs one by one, with
    their tokens)."""
    jobs = BatchJob.objects.all()
    if policy.sees_every_job(actor):
        return jobs
    if actor.user_id is not None:
        return jobs.filter(user_id=actor.user_id)
    return jobs.none()


def job_for(actor: policy.Actor, job_id: int, token: str | None) -> BatchJob:
    """The job, if ``actor`` may see it (``policy.may_see_job``); otherwise NotFound, as for
    a job that does not exist: an id is not a password."""
    job, valid = _job_and_token(job_id, token)
    if job is None or not policy.may_see_job(actor, owner_id=job.user_id, token_valid=valid):
        raise NotFound(f"There is no batch job {job_id}.")
    return job


def cancel_for(actor: policy.Actor, job_id: int, token: str | None) -> BatchJob:
    """Cancel the job for ``actor``: NotFound where it may not see the job, Forbidden
    where it may see but not cancel it (``policy.may_cancel_job``)."""
    job, valid = _job_and_token(job_id, token)
    if job is None:
        raise NotFound(f"There is no batch job {job_id}.")
    if not policy.may_cancel_job(actor, owner_id=job.user_id, token_valid=valid):
        if not policy.may_see_job(actor, owner_id=job.user_id, token_valid=valid):
            raise NotFound(f"There is no batch job {job_id}.")
        raise Forbidden(
            "Cancelling another's batch job needs a staff user with the permission: "
            f"{policy.CANCEL_ANY_JOB}."
        )
    return cancel(job)


def _job_and_token(job_id: int, token: str | None) -> tuple[BatchJob | None, bool]:
    """The job (None if there is none) and whether ``token`` is its token."""
    job = BatchJob.objects.filter(pk=job_id).first()
    return job, bool(job is not None and token and _token_matches(job_id, token))


def percent(job: BatchJob) -> float:
    """The share of its rows scored, in percent, to one decimal."""
    return round(100 * job.rows_done / job.rows_total, 1) if job.rows_total else 0.0


def rows_per_second(job: BatchJob) -> float | None:
    """Rows scored per second since it started (until it finished), to one decimal; None
    before it started."""
    if not job.started_at:
        return None
    seconds = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
    return round(job.rows_done / seconds, 1) if seconds else None


def progress(job: BatchJob) -> dict[str, Any]:
    """What a client watching the job sees (the API's body)."""
    return {
        "id": job.pk,
        "state": job.state,
        "endpoint": job.endpoint_name,
        "status": job.status,
        "algorithms": list(
            MLAlgorithm.objects.filter(pk__in=job.algorithm_ids).values("id", "name", "version")
        ),
        "log_requests": job.log_requests,
        "target_column": job.target_column or None,
        "labels_recorded": job.log_requests and job.labels_as_feedback and bool(job.target_column),
        "file_name": job.file_name,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "percent": percent(job),
        "chunks_total": job.chunks_total,
        "chunks_done": job.chunks_done,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "rows_per_second": rows_per_second(job),
        "metrics": job.metrics or None,
        "error": job.error or None,
    }


def unfinished(job_id: int) -> bool:
    """Whether the job is still queued or running."""
    return BatchJob.objects.filter(pk=job_id, state__in=[State.QUEUED, State.RUNNING]).exists()


def result_file(job: BatchJob) -> IO[bytes]:
    if job.state != State.SUCCEEDED or not job.result_name:
        raise Conflict(
            f"Batch job {job.pk} is {job.state}; its result is there once it has succeeded.",
            details={"state": job.state},
        )
    opened: IO[bytes] = storage().open(job.result_name, "rb")
    return opened


# -- running -------------------------------------------------------------------------------


def run_piece(job_id: int, index: int) -> bool:
    """Score piece ``index`` of the job unless it is done, the job has ended or another
    worker holds the piece's lease (``leases``); whether the job's last piece is now done
    (the caller then sends ``finish``)."""
    job = BatchJob.objects.filter(pk=job_id).first()
    if job is None or job.state in BatchJob.FINISHED:
        return False
    chunk = job.chunks.get(index=index)
    by = leases.holder()
    if chunk.done or not leases.take(chunk.pk, by):
        return False
    if job.state == State.QUEUED:
        BatchJob.objects.filter(pk=job_id, state=State.QUEUED).update(
            state=State.RUNNING, started_at=timezone.now()
        )
    with leases.holding(chunk.pk, by):
        return _score_piece(job, chunk)


def _score_piece(job: BatchJob, chunk: BatchJobChunk) -> bool:
    data = _piece_bytes(job, chunk)
    result = None if job.log_requests else _score(job, chunk, data)  # no lock held meanwhile
    name = f"jobs/{job.pk}/pieces/{chunk.index:06d}.csv"
    with transaction.atomic():
        if result is None:  # its log rows and its done are one transaction
            result = _score(job, chunk, data)
        # Locked only now, not while scoring: the lease's heartbeat updates this row.
        locked = BatchJobChunk.objects.select_for_update().get(pk=chunk.pk)
        if locked.done:  # another worker's run (this one was paused past its lease)
            transaction.set_rollback(True)
            return False
        _write(name, "".join(output.csv_stream(result, io.BytesIO(data), header=chunk.index == 0)))
        locked.done = True
        locked.rows = result.count
        locked.output_name = name
        locked.evaluation = asdict(result.evaluation)
        locked.request_ranges = _runs(result.request_ids) if job.log_requests else []
        # The job's row, locked from here to the commit: a cancel meanwhile waits, and a
        # piece of a job cancelled before this point writes nothing.
        current = BatchJob.objects.select_for_update().get(pk=job.pk)
        if current.state in BatchJob.FINISHED:
            transaction.set_rollback(True)
            _delete_quietly(name)
            return False
        complete = current.chunks_done + 1 == current.chunks_total
        if complete:
            leases.hold_for_finish(locked)
        locked.save(
            update_fields=[
                "done",
                "rows",
                "output_name",
                "evaluation",
                "request_ranges",
                "leased_by",
                "lease_until",
            ]
        )
        BatchJob.objects.filter(pk=job.pk).update(
            rows_done=F("rows_done") + result.count, chunks_done=F("chunks_done") + 1
        )
        transaction.on_commit(partial(telemetry.count_job_rows, job.endpoint_name, result.count))
        return complete


def _score(job: BatchJob, chunk: BatchJobChunk, data: bytes) -> ScoredBatch:
    """The piece scored as batch-predict scores a file (the same reader and pipeline), by
    the versions chosen when the job was submitted: a promotion meanwhile does not change
    the model mid-file. With ``log_requests`` its rows are logged in the caller's
    transaction, the one that marks the piece done."""
    arms = _arms(job)
    try:
        runtimes = arms.runtimes()
        source = CsvFile.open(
            io.BytesIO(data),
            runtimes,
            label_column=job.target_column or None,
            max_rows=settings.BATCH_JOB_CHUNK_ROWS,
            ramp=job.log_requests,
        )
        answer = runtimes[0].answer
        log = None
        if job.log_requests:
            log = pipeline.LogWriter(
                arms,
                answer,
                user_id=job.user_id,
                client=job.client or None,
                features=source.features,
                mode="behind",
                labels_as_feedback=job.labels_as_feedback,
            )
        scored = ScoredBatch(
            arms,
            answer,
            log=log,
            header=source.header,
            ignored_columns=source.ignored_columns,
            label_column=source.label_column,
        )
        writers: list[pipeline.Writer] = [scored] if log is None else [log, scored]
        pipeline.run(source.batches(first_line=chunk.first_line), arms, runtimes, writers)
    except (InvalidInput, PayloadTooLarge) as exc:
        raise PieceRefused(exc.message, details=exc.details) from exc
    return scored


def _arms(job: BatchJob) -> Arms:
    by_id = MLAlgorithm.objects.in_bulk(job.algorithm_ids)
    missing = [pk for pk in job.algorithm_ids if pk not in by_id]
    if missing:
        raise PieceRefused(f"Algorithm {missing[0]} of this job was deleted.")
    algorithms = tuple(by_id[pk] for pk in job.algorithm_ids)
    return Arms(job.endpoint_name, job.status, algorithms, tuple(job.shares), job.abtest)


def _piece_bytes(job: BatchJob, chunk: BatchJobChunk) -> bytes:
    with storage().open(job.input_name, "rb") as stored:
        header = stored.read(job.chunks.get(index=0).start)
        stored.seek(chunk.start)
        return bytes(header + stored.read(chunk.end - chunk.start))


def _runs(ids: np.ndarray) -> list[list[int]]:
    """Sorted ids as [first, last] runs of consecutive ids."""
    if not ids.size:
        return []
    ordered = np.sort(ids)
    breaks = np.flatnonzero(np.diff(ordered) != 1)
    firsts = np.concatenate(([ordered[0]], ordered[breaks + 1]))
    lasts = np.concatenate((ordered[breaks], [ordered[-1]]))
    return [[int(a), int(b)] for a, b in zip(firsts, lasts, strict=True)]


def _write(name: str, text: str) -> None:
    """``text`` under exactly ``name``: a piece written twice is one file."""
    store = storage()
    store.delete(name)
    saved = store.save(name, ContentFile(text.encode()))
    if saved != name:  # another run of the same piece wrote it meanwhile
        store.delete(saved)


def finish(job_id: int) -> None:
    """Join the pieces' outputs into the result and add up the metrics, once."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.state != State.RUNNING or job.chunks_done < job.chunks_total:
            return
        chunks = list(job.chunks.order_by("index"))
        name = f"jobs/{job.pk}/result.csv"
        with tempfile.TemporaryFile() as joined:
            for chunk in chunks:
                with storage().open(chunk.output_name, "rb") as piece:
                    while block := piece.read(_BLOCK_BYTES):
                        joined.write(block)
            joined.seek(0)
            storage().delete(name)
            job.result_name = storage().save(name, File(joined))
        total = evaluation.Running()
        for chunk in chunks:
            for key, value in (chunk.evaluation or {}).items():
                setattr(total, key, getattr(total, key) + value)
        task = MLAlgorithm.objects.get(pk=job.algorithm_ids[0]).task
        job.metrics = total.summary(task) if total.labelled else {}
        job.state = State.SUCCEEDED
        job.finished_at = timezone.now()
        job.save()
        job.chunks.filter(leased_by=leases.FINISHING).update(lease_until=None)  # paid
        outputs = [c.output_name for c in chunks]
        transaction.on_commit(lambda: _delete_all([job.input_name, *outputs]))


def fail(job_id: int, error: dict[str, Any]) -> None:
    """End the job with ``error`` and take back what it wrote."""
    _end(job_id, State.FAILED, error)


def cancel(job: BatchJob) -> BatchJob:
    """Stop the job: pieces not scored yet are skipped, what it wrote is taken back."""
    if not _end(job.pk, State.CANCELLED, {}):
        job.refresh_from_db()
        raise Conflict(f"Batch job {job.pk} has already {job.state}.", details={"state": job.state})
    job.refresh_from_db()
    return job


def _end(job_id: int, state: str, error: dict[str, Any]) -> bool:
    """Set the job's final state, take back its log rows and delete its files, before the
    state is committed: a client that sees ``failed`` or ``cancelled`` sees them gone."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state in BatchJob.FINISHED:
            return False
        job.state, job.error, job.finished_at = state, error, timezone.now()
        job.save(update_fields=["state", "error", "finished_at"])
        chunks = list(job.chunks.all())
        for chunk in chunks:
            for first, last in chunk.request_ranges or []:
                feedback.delete_requests(MLRequest.objects.filter(pk__gte=first, pk__lte=last))
        # Before the commit too: an ended job's files are of no more use either way.
        _delete_all([job.input_name, job.result_name, *(c.output_name for c in chunks)])
    logger.info("Batch job %s %s%s", job_id, state, f": {error.get('message')}" if error else "")
    return True


def error_of(exc: ServiceError) -> dict[str, Any]:
    """What a failed job shows: the message, and the line and column of a bad cell."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    details = exc.details if isinstance(exc.details, dict) else {}
    cells = details.get("cells") or []
    if cells and isinstance(cells[0], dict):
        error.update(line=cells[0].get("line"), column=cells[0].get("column"))
    return error


def _delete_all(names: list[str]) -> None:
    for name in names:
        if name:
            _delete_quietly(name)


def _delete_quietly(name: str) -> None:
    try:
        storage().delete(name)
    except OSError as exc:  # a leftover file is retention's to remove
        logger.warning("Could not delete %s from the batch_jobs storage: %s", name, exc)


# -- recovery and retention ----------------------------------------------------------------


def unfinished_pieces(older_than: timedelta) -> Iterator[tuple[int, int]]:
    """(job id, piece index) of every piece not done in jobs that are queued or running
    and were created more than ``older_than`` ago: to send again after a broker lost its
    queue (pieces are idempotent, so one still queued only runs twice for nothing)."""
    cutoff = timezone.now() - older_than
    pending = BatchJobChunk.objects.filter(
        done=False,
        job__state__in=[State.QUEUED, State.RUNNING],
        job__created_at__lt=cutoff,
    ).order_by("job_id", "index")
    yield from pending.values_list("job_id", "index")


def delete_old(days: int) -> int:
    """Delete jobs that ended more than ``days`` ago, with their files; how many
    (``manage.py delete_old_jobs``, the ``delete_old_jobs`` task)."""
    cutoff = timezone.now() - timedelta(days=days)
    return delete_jobs(BatchJob.objects.filter(state__in=BatchJob.FINISHED, finished_at__lt=cutoff))


def delete_jobs(selected: QuerySet[BatchJob]) -> int:
    """Delete the ``selected`` jobs and their files (the upload, the result, what a failed
    deletion left of the pieces' outputs); how many. A job still queued or running is
    cancelled first, as ``cancel`` does: its pieces stop and its log rows are taken back. A
    finished job's log rows stay: they are predictions served, as batch-predict's are.
    Rows go ``_DELETE_BATCH`` jobs per statement."""
    pks = list(selected.order_by().values_list("pk", flat=True))
    unfinished = BatchJob.objects.filter(pk__in=pks, state__in=[State.QUEUED, State.RUNNING])
    for pk in list(unfinished.values_list("pk", flat=True)):
        _end(pk, State.CANCELLED, {})
    count = 0
    for start in range(0, len(pks), _DELETE_BATCH):
        some = BatchJob.objects.filter(pk__in=pks[start : start + _DELETE_BATCH])
        for pk, input_name, result_name in some.values_list("pk", "input_name", "result_name"):
            _delete_all([input_name, result_name, *_pieces_left(pk)])
            _remove_folders(pk)
        count += some.delete()[1].get(BatchJob._meta.label, 0)
    return count


def _pieces_left(job_id: int) -> list[str]:
    """The piece outputs still in the job's folder: none, unless a deletion failed (finish,
    fail and cancel delete them). One listing, rather than a deletion per piece."""
    folder = f"jobs/{job_id}/pieces"
    try:
        _, names = storage().listdir(folder)
    except (OSError, NotImplementedError):  # no such folder; a storage that cannot list
        return []
    return [f"{folder}/{name}" for name in names]


def _remove_folders(job_id: int) -> None:
    """A file system storage keeps the folders a job's pieces made: removed once empty."""
    store = storage()
    if isinstance(store, FileSystemStorage):
        for folder in (f"jobs/{job_id}/pieces", f"jobs/{job_id}"):
            with contextlib.suppress(OSError):  # absent, or not empty
                os.rmdir(store.path(folder))
