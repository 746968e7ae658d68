"""The serving catalogue (endpoints, algorithms, their statuses), the request log and A/B tests."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.ml import signature


class Endpoint(models.Model):
    """A URL-addressable prediction target, e.g. ``income_classifier``."""

    name = models.SlugField(max_length=128, unique=True)
    owner = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Task(models.TextChoices):
    # The ml layer's names for the tasks (a Signature's task), as database choices.
    CLASSIFICATION = signature.CLASSIFICATION
    REGRESSION = signature.REGRESSION


class MLAlgorithm(models.Model):
    """One version of one model behind an endpoint, and what any process needs to load it."""

    name = models.CharField(max_length=128)
    description = models.CharField(max_length=1000, blank=True)
    code = models.TextField(blank=True)
    version = models.CharField(max_length=128)
    owner = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    parent_endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="algorithms"
    )
    # How to load it again in any process: which runtime ("sklearn" for a model from a
    # file, or a key of apps.ml.income_classifier.WRAPPERS; never a dotted path), which file
    # inside MODEL_ARTIFACTS_PATH, the sha256 that file must have, and the scikit-learn
    # version that saved it.
    wrapper = models.CharField(max_length=64)
    artifact = models.CharField(max_length=255)
    artifact_sha256 = models.CharField(max_length=64)
    sklearn_version = models.CharField(max_length=32)
    # The model card, written at registration so the API and admin can show it without
    # loading the model: the features [{"name", "type", "required", "categories"...}, ...]
    # in the model's column order (a list, because PostgreSQL's jsonb does not keep object
    # key order) and the metrics measured in training, e.g. {"accuracy_adult_test": 0.86}.
    features = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # The rest of the signature (apps/ml/signature.py), so that requests and feedback are
    # checked without loading the model: the task, a classifier's classes as strings in
    # the model's order, and the fields of its answers.
    task = models.CharField(max_length=32, choices=Task.choices, default=Task.CLASSIFICATION)
    classes = models.JSONField(default=list, blank=True)
    outputs = models.JSONField(default=list, blank=True)
    # A few records of the input example (or generated ones): the card shows them, the
    # OpenAPI schema and the browsable API start from them.
    example = models.JSONField(default=list, blank=True)
    # Which engine serves it and why ({"engine": "onnx", "reason": ..., "onnx_sha256": ...}).
    serving = models.JSONField(default=dict, blank=True)
    # The column of a batch file that holds the true value (stored as feedback, scored).
    target_column = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["parent_endpoint_id", "name", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["parent_endpoint", "name", "version"],
                name="unique_algorithm_version_per_endpoint",
            )
        ]

    def __str__(self) -> str:
        return f"{self.parent_endpoint_id}:{self.name} {self.version}"


class MLAlgorithmStatus(models.Model):
    """A status an algorithm had; the active row is the current one, the rest is history."""

    class Status(models.TextChoices):
        TESTING = "testing"
        STAGING = "staging"
        PRODUCTION = "production"
        AB_TESTING = "ab_testing"
        SHADOW = "shadow"  # scores a copy of live traffic, never answers (shadows/)

    status = models.CharField(max_length=32, choices=Status.choices)
    active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    parent_mlalgorithm = models.ForeignKey(
        MLAlgorithm, on_delete=models.CASCADE, related_name="statuses"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ML algorithm statuses"
        constraints = [
            models.UniqueConstraint(
                fields=["parent_mlalgorithm"],
                condition=Q(active=True),
                name="one_active_status_per_algorithm",
            )
        ]
        indexes = [models.Index(fields=["status", "active"])]

    def __str__(self) -> str:
        return f"{self.status}{'' if self.active else ' (inactive)'}"


class MLRequest(models.Model):
    """One prediction as served: the record sent, the whole answer, and later the truth."""

    input_data = models.JSONField()
    full_response = models.JSONField()
    response = models.CharField(max_length=128)  # the predicted label
    # The ground truth, sent later by whoever holds the request's feedback token
    # (apps/endpoints/serving/feedback.py). None: no feedback yet. The audit says when and by whom
    # ("user:<name>" or "anonymous:<address>") and how ("token", "staff", "upload"); a
    # value it replaces is kept as a FeedbackRevision.
    feedback = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    feedback_at = models.DateTimeField(null=True, blank=True)
    # Null, not "", like feedback: adding a column with a default copies the table on SQLite.
    feedback_by = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    feedback_via = models.CharField(max_length=16, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    parent_mlalgorithm = models.ForeignKey(
        MLAlgorithm,
        on_delete=models.PROTECT,
        related_name="requests",
        db_index=False,  # (parent_mlalgorithm, -id) below serves every lookup by algorithm
    )
    # Who made the request, when the server knew (an authenticated client): only that user
    # (and staff) may read it or give its feedback. None for anonymous clients.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # indexed below, for the rows that have one
    )
    # The A/B test that routed this request (None when no test chose the algorithm); only
    # these requests count when the test is evaluated.
    ab_test = models.ForeignKey(
        "ABTest",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        db_index=False,  # indexed below, for the few rows that have one
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "ML request"
        indexes = [
            # Most requests belong to no A/B test: a partial index skips them, so writing
            # a request updates one index fewer, and still serves every lookup by test
            # (ab_test_id = X implies NOT NULL, on PostgreSQL and SQLite alike).
            models.Index(
                fields=["ab_test"],
                condition=models.Q(ab_test__isnull=False),
                name="mlrequest_ab_test_routed",
            ),
            # A user's own requests, newest first; anonymous rows (most) are not indexed.
            models.Index(
                fields=["user", "-id"],
                condition=models.Q(user__isnull=False),
                name="mlrequest_by_user",
            ),
            # An algorithm's requests newest first (the log's filters by algorithm, endpoint
            # and status): a page is the next 100 entries of the index, not a sort.
            models.Index(fields=["parent_mlalgorithm", "-id"], name="mlrequest_by_algorithm"),
            # The requests with feedback, newest first: a minority, so a partial index.
            models.Index(
                fields=["-id"],
                condition=models.Q(feedback__isnull=False),
                name="mlrequest_with_feedback",
            ),
        ]

    def __str__(self) -> str:
        return f"request {self.pk}: {self.response}"


class ABTestTally(models.Model):
    """One arm of one running A/B test, summed up as feedback arrives: the count, sum and
    sum of squares of its observations (1 for a correct answer and 0 for a wrong one, or
    a regressor's absolute error). What a sequential test reads at each look, whatever the
    size of the log; kept by ``serving/tally.py`` with ``FeedbackTally``, in the same
    transactions. Unlike ``FeedbackTally`` it holds only the test's requests."""

    ab_test = models.ForeignKey("ABTest", on_delete=models.CASCADE, related_name="tallies")
    algorithm = models.ForeignKey(MLAlgorithm, on_delete=models.CASCADE, related_name="+")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    total_sq = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ab_test", "algorithm"], name="abtest_tally_once")
        ]

    def __str__(self) -> str:
        return f"test {self.ab_test_id}, algorithm {self.algorithm_id}: {self.count}"


class FeedbackRevision(models.Model):
    """A feedback value that was replaced, with when and by whom it had been given."""

    # No foreign key in the database (db_constraint=False): with one, PostgreSQL checks the
    # revisions table once per deleted log row, and that check was 57 % of a retention
    # batch's time (60 of 105 ms per 10k rows, EXPLAIN ANALYZE). Whatever deletes log rows
    # deletes their revisions itself, in its transaction: feedback.delete_requests (the
    # admin, a failed batch's undo, a cancelled job) by the rows' ids, and retention by the
    # batch's id range (feedback.delete_orphaned_revisions). Nothing cascades into the log
    # (its algorithm and A/B test are PROTECT, its user SET_NULL).
    request = models.ForeignKey(
        MLRequest, on_delete=models.CASCADE, related_name="revisions", db_constraint=False
    )
    feedback = models.CharField(max_length=128)
    given_at = models.DateTimeField(null=True, blank=True)
    given_by = models.CharField(max_length=200, blank=True)
    given_via = models.CharField(max_length=16, blank=True)
    replaced_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-replaced_at", "-id"]
        # Retention deletes the oldest first (FEEDBACK_REVISION_RETENTION_DAYS).
        indexes = [models.Index(fields=["replaced_at"], name="revision_replaced_at")]

    def __str__(self) -> str:
        return f"request {self.request_id}: {self.feedback} (replaced {self.replaced_at})"


class FeedbackTally(models.Model):
    """One algorithm's feedback, summed up: what /metrics shows, read without scanning the
    request log (one row per algorithm whatever the log's size).

    Kept by ``apps/endpoints/serving/tally.py`` in the transaction of every write that sets,
    changes or clears ``MLRequest.feedback``; ``manage.py recount_feedback`` rebuilds it
    from the log."""

    algorithm = models.OneToOneField(
        MLAlgorithm, on_delete=models.CASCADE, primary_key=True, related_name="feedback_tally"
    )
    given = models.BigIntegerField(default=0)  # logged requests with feedback
    correct = models.BigIntegerField(default=0)  # of those, feedback equal to the response
    # Regressors: the sum of |feedback - prediction| (0 for classifiers).
    absolute_error = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.algorithm_id}: {self.correct}/{self.given}"


class ABTest(models.Model):
    """A comparison of two algorithms of one endpoint on live traffic.

    Lifecycle and rules live in ``apps/endpoints/experiments/ab_testing.py``: arm 1 is the
    incumbent, arm 2 the challenger; while the test runs both have status ``ab_testing``
    and ``previous_status_*`` remembers what to restore."""

    class State(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"  # evaluated; statuses set by the result
        ABORTED = "aborted"  # ended without a decision; previous statuses restored

    title = models.CharField(max_length=256)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.CharField(max_length=128, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    summary = models.TextField(blank=True)
    summary_json = models.JSONField(null=True, blank=True)
    parent_mlalgorithm_1 = models.ForeignKey(
        MLAlgorithm, on_delete=models.PROTECT, related_name="+"
    )
    parent_mlalgorithm_2 = models.ForeignKey(
        MLAlgorithm, on_delete=models.PROTECT, related_name="+"
    )
    # The decision rule is fixed when the test starts: choosing it after seeing the data
    # would inflate the false-positive rate.
    arm_2_share = models.FloatField(default=0.5)  # share of the traffic routed to arm 2
    alpha = models.FloatField(default=0.05)
    require_significance = models.BooleanField(default=False)
    # Each arm's active status before the test ("" when it had none), restored on abort.
    previous_status_1 = models.CharField(max_length=32, blank=True)
    previous_status_2 = models.CharField(max_length=32, blank=True)

    class Mode(models.TextChoices):
        FIXED = "fixed"  # one look, at the stop (Wilson, z, Fisher, Welch)
        SEQUENTIAL = "sequential"  # confidence sequences, valid at every look

    # Tests made before sequential tests existed keep their fixed-horizon rule; the
    # service's default for a new test is sequential (ab_testing.create).
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FIXED)
    # How many requests with feedback the operator expects, both arms together: the sample
    # size the sequence is tuned for, and where auto_stop ends a test without a decision.
    planned_feedback = models.PositiveIntegerField(null=True, blank=True)
    auto_stop = models.BooleanField(default=False)
    # The always-valid p-value's running minimum over every look the service took (each
    # write of feedback to the test), and how many looks that was.
    min_p_value = models.FloatField(default=1.0)
    looks = models.PositiveIntegerField(default=0)
    # The first look whose sequence excluded 0 (n, the bounds, the better arm): from then
    # on the test is decided, whatever later looks show (the guarantee is over all looks).
    first_exclusion = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "A/B test"
        constraints = [
            models.CheckConstraint(
                condition=Q(arm_2_share__gt=0, arm_2_share__lt=1), name="ab_share_in_0_1"
            ),
            models.CheckConstraint(condition=Q(alpha__gt=0, alpha__lt=1), name="ab_alpha_in_0_1"),
            models.CheckConstraint(
                condition=Q(state="running", ended_at__isnull=True)
                | (~Q(state="running") & Q(ended_at__isnull=False)),
                name="ab_ended_iff_not_running",
            ),
        ]
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return self.title

    @property
    def arms(self) -> tuple[MLAlgorithm, MLAlgorithm]:
        """The incumbent (arm 1) and the challenger (arm 2)."""
        return self.parent_mlalgorithm_1, self.parent_mlalgorithm_2


class Shadow(models.Model):
    """A candidate version that scores a copy of an endpoint's live predictions and is
    judged against production on the same requests (``apps/endpoints/shadows``).

    While it runs the candidate has status ``shadow`` (``previous_status`` is restored at
    the end) and never answers a client. The counters are kept by every process that
    copies or takes feedback, each adding what it did (``F()`` updates), so the row is the
    shadow's live comparison without a scan of the log."""

    class State(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"  # ended; the candidate's previous status restored
        PROMOTED = "promoted"  # the candidate went to production
        AB_TEST = "ab_test"  # ended into an A/B test of the candidate against production
        ENDED = "ended"  # the versions it was compared with changed (``end_reason``)

    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="shadows")
    candidate = models.ForeignKey(MLAlgorithm, on_delete=models.PROTECT, related_name="shadows")
    share = models.FloatField(default=1.0)  # of the serving versions' single predictions
    alpha = models.FloatField(default=0.05)
    planned_feedback = models.PositiveIntegerField(null=True, blank=True)
    previous_status = models.CharField(max_length=32, blank=True)  # "" when it had none
    # The versions serving the endpoint when the shadow started (production, or an A/B
    # test's two arms): a status write that changes them ends the shadow.
    baseline = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=128, blank=True)
    end_reason = models.CharField(max_length=256, blank=True)
    ab_test = models.ForeignKey(
        ABTest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Copies: scored, dropped (the queue was full), failed (the candidate raised).
    copies = models.BigIntegerField(default=0)
    dropped = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    # Agreement on every scored copy: classifiers the same label; regressors the sums of
    # shadow - production.
    agreed = models.BigIntegerField(default=0)
    difference = models.FloatField(default=0.0)
    difference_sq = models.FloatField(default=0.0)
    production_ms = models.FloatField(default=0.0)  # sums over the scored copies
    shadow_ms = models.FloatField(default=0.0)
    # Pairs with feedback (paired.PairedMoments): x is 1[right] (classifiers) or |error|
    # (regressors) of production (p) and of the shadow (s); d > 0 where the shadow did
    # better; b and c the discordant pairs (only production right; only the shadow).
    pairs = models.BigIntegerField(default=0)
    sum_d = models.FloatField(default=0.0)
    sum_d2 = models.FloatField(default=0.0)
    sum_p = models.FloatField(default=0.0)
    sum_p2 = models.FloatField(default=0.0)
    sum_s = models.FloatField(default=0.0)
    sum_s2 = models.FloatField(default=0.0)
    only_production_right = models.BigIntegerField(default=0)
    only_shadow_right = models.BigIntegerField(default=0)
    # As an A/B test's: the always-valid p-value's running minimum, the looks, the first
    # look whose sequence excluded 0.
    min_p_value = models.FloatField(default=1.0)
    looks = models.PositiveIntegerField(default=0)
    first_exclusion = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=Q(state="running"),
                name="one_running_shadow_per_endpoint",
            ),
            models.CheckConstraint(
                condition=Q(share__gt=0, share__lte=1), name="shadow_share_in_0_1"
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0, alpha__lt=1), name="shadow_alpha_in_0_1"
            ),
            models.CheckConstraint(
                condition=Q(state="running", ended_at__isnull=True)
                | (~Q(state="running") & Q(ended_at__isnull=False)),
                name="shadow_ended_iff_not_running",
            ),
        ]
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"shadow {self.pk} of {self.endpoint_id}"


class ShadowAnswer(models.Model):
    """The shadow's answer to a logged request, beside production's on the ``MLRequest``
    it shares a key with (one-to-one: one shadow per endpoint at a time).

    No foreign key in the database, as for ``FeedbackRevision``: every delete of log rows
    deletes these with them (``feedback.delete_requests``, retention's orphan sweep)."""

    request = models.OneToOneField(
        MLRequest,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="shadow_answer",
    )
    shadow = models.ForeignKey(Shadow, on_delete=models.CASCADE, related_name="answers")
    response = models.CharField(max_length=128)  # as MLRequest.response: the label or value
    full_response = models.JSONField()
    ms = models.FloatField()  # the shadow's scoring time for the request

    def __str__(self) -> str:
        return f"shadow answer to {self.request_id}"


class BatchJob(models.Model):
    """A CSV file scored in the background, in chunks that are tasks of their own
    (``jobs.py``, ``tasks.py``): submitted, watched, collected, or cancelled."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # Who submitted it: a user, or for an anonymous client its label (``anonymous:<ip>``);
    # anonymous submitters read it back with its token (jobs.token_for).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    client = models.CharField(max_length=200, blank=True)
    # The algorithms chosen at submission (the arms of an A/B test, or one), in order, and
    # each one's share of the rows: a promotion meanwhile does not change the model.
    endpoint_name = models.CharField(max_length=128)
    status = models.CharField(max_length=32)
    algorithm_ids = models.JSONField(default=list)
    shares = models.JSONField(default=list)
    abtest = models.ForeignKey(ABTest, null=True, blank=True, on_delete=models.SET_NULL)
    log_requests = models.BooleanField(default=False)
    target_column = models.CharField(max_length=128, blank=True)
    # Whether the target column becomes the logged rows' feedback: decided when the job is
    # submitted, by whether its submitter may give feedback (policy.feedback_refusal).
    labels_as_feedback = models.BooleanField(default=True)
    file_name = models.CharField(max_length=255, blank=True)  # as uploaded
    input_name = models.CharField(max_length=512, blank=True)  # in the batch_jobs storage
    result_name = models.CharField(max_length=512, blank=True)
    header = models.JSONField(default=list)
    rows_total = models.PositiveBigIntegerField(default=0)
    rows_done = models.PositiveBigIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)  # with a label column
    error = models.JSONField(default=dict, blank=True)  # on failure: message, line, column
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"batch job {self.pk} ({self.state})"


class BatchJobChunk(models.Model):
    """One piece of a job's file: a byte range, scored by one task. ``done`` is set in the
    transaction that writes its output (and its log rows), so a task delivered twice finds
    it done and changes nothing."""

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start = models.PositiveBigIntegerField()  # byte offsets in the input, the header excluded
    end = models.PositiveBigIntegerField()
    first_line = models.PositiveBigIntegerField()
    done = models.BooleanField(default=False)
    rows = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    output_name = models.CharField(max_length=512, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)  # evaluation.Running's sums
    # The ids of the log rows it wrote, as [first, last] runs (log_requests): a failed or
    # deleted job takes them back.
    request_ranges = models.JSONField(default=list, blank=True)
    # Who is scoring it and until when, renewed while they do (batch/leases.py): a piece
    # whose lease lapsed lost its worker and is sent again.
    leased_by = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="batch_chunk_once"),
        ]
        # The leases being held (live or lapsed), for the watchers' look every few seconds:
        # a released or finished piece's lease_until is null.
        indexes = [
            models.Index(
                fields=["lease_until"],
                condition=models.Q(lease_until__isnull=False),
                name="batch_chunk_leased",
            )
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of job {self.job_id}"


class DriftReference(models.Model):
    """A version's reference profile for drift monitoring (``monitoring/``): per feature
    and per output, the bins of a reference sample (``apps.ml.drift.Profile``, kilobytes,
    not the sample). The row without ``replaced_at`` is the version's current one; a
    renewed reference replaces it and the older rows are its history."""

    class Source(models.TextChoices):
        REFERENCE = "reference"  # a reference file, at registration or later
        EXAMPLE = "example"  # the input example, when it had enough rows
        TRAINING = "training"  # a demo model's training data

    algorithm = models.ForeignKey(
        MLAlgorithm, on_delete=models.CASCADE, related_name="drift_references"
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    file_name = models.CharField(max_length=255, blank=True)  # as uploaded, if any
    rows = models.PositiveIntegerField()
    profile = models.JSONField()
    created_by = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    replaced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=Q(replaced_at__isnull=True),
                name="one_current_drift_reference_per_algorithm",
            )
        ]

    def __str__(self) -> str:
        return f"drift reference {self.pk} of {self.algorithm_id} ({self.rows} rows)"


class DriftSegment(models.Model):
    """Records a process scored for a version, as the codes of its reference's bins
    (``apps.ml.drift.encode``: an int16 per record and feature), written together every
    ``DRIFT_FLUSH_SECONDS``. A version's window is the newest segments that hold its last
    ``DRIFT_WINDOW`` records; older ones are deleted as new ones arrive."""

    reference = models.ForeignKey(DriftReference, on_delete=models.CASCADE, related_name="segments")
    rows = models.PositiveIntegerField()
    codes = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"drift segment {self.pk} ({self.rows} records)"
