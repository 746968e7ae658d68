"""Django admin: what an operator needs to see which version serves, and to change it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework.authtoken.models import TokenProxy

from apps.core.errors import ServiceError
from apps.endpoints import policy
from apps.endpoints.batch import jobs
from apps.endpoints.catalogue.register import register_upload
from apps.endpoints.catalogue.selectors import algorithms_with_current_status, current_status
from apps.endpoints.catalogue.statuses import set_algorithm_status
from apps.endpoints.experiments import ab_testing
from apps.endpoints.experiments.selectors import abtests_with_live_counts
from apps.endpoints.models import (
    ABTest,
    BatchJob,
    DriftReference,
    Endpoint,
    FeedbackRevision,
    MLAlgorithm,
    MLAlgorithmStatus,
    MLRequest,
    Shadow,
    Task,
)
from apps.endpoints.serializers import class_list
from apps.endpoints.serving import feedback
from apps.endpoints.serving.selectors import estimated_count
from apps.endpoints.shadows import comparison
from apps.endpoints.shadows import services as shadows
from apps.ml import registry as ml_registry

# DRF's token admin lists every API token's key, the superuser's included, to staff who may
# view tokens: a token is made on the host (manage.py drf_create_token), never read here.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin[Endpoint]):
    list_display = ["name", "owner", "created_at"]
    search_fields = ["name", "owner"]


class StatusHistoryInline(admin.TabularInline[MLAlgorithmStatus, MLAlgorithm]):
    """The status history, newest first. Read-only: a change goes through the action."""

    model = MLAlgorithmStatus
    verbose_name_plural = "Status history"
    fields = ("status", "active", "created_by", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DriftReferenceInline(admin.TabularInline[DriftReference, MLAlgorithm]):
    """The version's drift references, the current one first (its report: "drift")."""

    model = DriftReference
    verbose_name_plural = "Drift references"
    fields = ("source", "file_name", "rows", "created_by", "created_at", "replaced_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RegisterModelForm(forms.ModelForm[MLAlgorithm]):
    """ "Add ML algorithm": upload a model file, registered as the API registers it
    (``register_model``), with the same checks and refusals shown as form errors."""

    artifact_file = forms.FileField(
        label="Model file",
        help_text="A fitted scikit-learn estimator or pipeline: skops.io.dump (.skops); a "
        "LightGBM (.txt) or XGBoost (.json, .ubj) model in its own format; or joblib.dump "
        "where pickle uploads are allowed (ALLOW_PICKLE_UPLOADS).",
    )
    endpoint_name = forms.SlugField(
        max_length=128, label="Endpoint", help_text="Made on first use."
    )
    model_name = forms.CharField(max_length=128, label="Name")
    model_version = forms.CharField(max_length=128, label="Version")
    status = forms.ChoiceField(
        choices=MLAlgorithmStatus.Status.choices, initial=MLAlgorithmStatus.Status.TESTING
    )
    input_example = forms.FileField(
        required=False, help_text="A CSV of a few input rows (types, gaps, a check)."
    )
    reference = forms.FileField(
        required=False,
        label="Drift reference",
        help_text="A CSV sample of the inputs the model was made for (e.g. its training "
        "features): drift is measured against it. Without it, an input example of 500 rows "
        "or more serves.",
    )
    target_column_name = forms.CharField(max_length=128, required=False, label="Target column")
    classes = forms.CharField(
        max_length=10_000,
        required=False,
        help_text="A classifier's classes, comma-separated in the model's order, for a "
        "LightGBM or XGBoost file (which does not store them).",
    )
    model_description = forms.CharField(
        max_length=1000, required=False, label="Description", widget=forms.Textarea
    )

    class Meta:
        model = MLAlgorithm
        fields: list[str] = []  # every field above is the upload's; the row comes from it

    user = ""  # set by MLAlgorithmAdmin.get_form: who registers it

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            registered = register_upload(
                upload=cleaned["artifact_file"],
                file_name=cleaned["artifact_file"].name,
                example=cleaned.get("input_example"),
                user=self.user,
                endpoint_name=cleaned["endpoint_name"],
                name=cleaned["model_name"],
                version=cleaned["model_version"],
                status=cleaned["status"],
                description=cleaned.get("model_description", ""),
                target_column=cleaned.get("target_column_name", ""),
                classes=class_list(cleaned.get("classes", "")),
                reference=cleaned.get("reference"),
                reference_name=getattr(cleaned.get("reference"), "name", ""),
            )
        except ServiceError as error:
            raise forms.ValidationError(error.message) from None
        self.instance = registered.algorithm
        self.notes = registered.notes
        return cleaned


@admin.register(MLAlgorithm)
class MLAlgorithmAdmin(admin.ModelAdmin[MLAlgorithm]):
    list_display = ["name", "version", "parent_endpoint", "current_status", "owner", "created_at"]
    list_filter = ["parent_endpoint", "statuses__status"]
    search_fields = ["name", "version", "description", "owner"]
    readonly_fields = [
        "wrapper",
        "artifact",
        "artifact_sha256",
        "sklearn_version",
        "created_at",
        "feature_types",
        "answers",
        "engine",
        "training_metrics",
        "target_column",
        "loaded_in_this_process",
        "drift",
    ]
    # Shown formatted by the read-only fields above; the card is written at registration.
    exclude = ["features", "metrics", "task", "classes", "outputs", "example", "serving"]
    inlines = [StatusHistoryInline, DriftReferenceInline]
    actions = ["promote_to_production"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MLAlgorithm]:
        return algorithms_with_current_status()

    def get_form(
        self, request: HttpRequest, obj: MLAlgorithm | None = None, change: bool = False, **kw: Any
    ) -> Any:
        if obj is not None:
            return super().get_form(request, obj, change=change, **kw)
        form = super().get_form(request, None, change=False, form=RegisterModelForm, fields=[])
        form.user = request.user.get_username()  # type: ignore[attr-defined]  # a subclass of ours
        return form

    def get_fieldsets(self, request: HttpRequest, obj: MLAlgorithm | None = None) -> Any:
        if obj is not None:
            return super().get_fieldsets(request, obj)
        return [(None, {"fields": list(RegisterModelForm.base_fields)})]

    def get_readonly_fields(self, request: HttpRequest, obj: MLAlgorithm | None = None) -> Any:
        # A version is its endpoint, name and version: moving one to another endpoint
        # made that endpoint's predictions ambiguous. Description and owner may change.
        if obj is None:
            return []
        return ["parent_endpoint", "name", "version", *self.readonly_fields]

    def get_inlines(self, request: HttpRequest, obj: MLAlgorithm | None) -> Any:
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj: MLAlgorithm, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        for note in getattr(form, "notes", []):  # registered by the form's clean()
            self.message_user(request, note, messages.WARNING)

    @admin.display(description="current status")
    def current_status(self, algorithm: MLAlgorithm) -> str:
        status = current_status(algorithm)
        return status.status if status else "-"

    @admin.display(description="features")
    def feature_types(self, algorithm: MLAlgorithm) -> SafeString:
        rows = (
            (f["name"], f["type"], "" if f.get("required", False) else ", optional")
            for f in algorithm.features
        )
        return format_html_join(", ", "{} ({}{})", rows)

    @admin.display(description="answers")
    def answers(self, algorithm: MLAlgorithm) -> str:
        classes = f"; classes {', '.join(algorithm.classes)}" if algorithm.classes else ""
        return f"{algorithm.task}: {', '.join(algorithm.outputs)}{classes}"

    @admin.display(description="served by")
    def engine(self, algorithm: MLAlgorithm) -> str:
        serving = algorithm.serving or {}
        return f"{serving.get('engine') or 'unknown'}: {serving.get('reason', '')}"

    @admin.display(description="training metrics")
    def training_metrics(self, algorithm: MLAlgorithm) -> SafeString:
        return format_html_join(", ", "{}: {}", sorted(algorithm.metrics.items()))

    @admin.display(description="drift")
    def drift(self, algorithm: MLAlgorithm) -> SafeString:
        found = getattr(algorithm, "current_references", None)
        if found is None:
            found = list(algorithm.drift_references.filter(replaced_at__isnull=True))
        what = (
            f"reference of {found[0].rows} rows ({found[0].source})"
            if found
            else "no reference: drift is not computed"
        )
        return format_html(
            '{} · <a href="{}">drift report</a>', what, reverse("drift-report", args=[algorithm.pk])
        )

    @admin.display(description="loaded in this process at")
    def loaded_in_this_process(self, algorithm: MLAlgorithm) -> str:
        loaded = ml_registry.get_registry().loaded_at.get(algorithm.pk)
        return loaded.isoformat(timespec="seconds") if loaded else "not loaded"

    def has_change_status_permission(self, request: HttpRequest) -> bool:
        """The promote action, as the API's status write (``policy.CHANGE_STATUS``)."""
        return policy.may(request.user, policy.CHANGE_STATUS)

    @admin.action(
        description="Promote selected algorithms to production", permissions=["change_status"]
    )
    def promote_to_production(self, request: HttpRequest, queryset: QuerySet[MLAlgorithm]) -> None:
        for algorithm in queryset:
            set_algorithm_status(
                algorithm=algorithm,
                status=MLAlgorithmStatus.Status.PRODUCTION,
                created_by=request.user.get_username(),
            )
        self.message_user(
            request, f"{queryset.count()} algorithm(s) promoted to production.", messages.SUCCESS
        )


@admin.register(MLAlgorithmStatus)
class MLAlgorithmStatusAdmin(admin.ModelAdmin[MLAlgorithmStatus]):
    list_display = ["parent_mlalgorithm", "status", "active", "created_by", "created_at"]
    list_filter = ["status", "active", "parent_mlalgorithm__parent_endpoint"]
    search_fields = ["parent_mlalgorithm__name", "created_by"]
    list_select_related = ["parent_mlalgorithm"]

    # The one-active-status rule is kept by services.set_algorithm_status; editing rows
    # by hand here would bypass it.
    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class FeedbackRevisionInline(admin.TabularInline[FeedbackRevision, MLRequest]):
    """Feedback values that were replaced, newest first. Written only by feedback.py."""

    model = FeedbackRevision
    verbose_name_plural = "Replaced feedback"
    fields = ("feedback", "given_at", "given_by", "given_via", "replaced_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MLRequestForm(forms.ModelForm[MLRequest]):
    """Only the feedback can change, checked as the API checks it (one of the classes)."""

    class Meta:
        model = MLRequest
        fields = ["feedback"]

    def clean_feedback(self) -> str:
        value = self.cleaned_data.get("feedback")
        try:
            return feedback.check_value(feedback.Target.of(self.instance.parent_mlalgorithm), value)
        except ServiceError as error:
            raise forms.ValidationError(error.message) from None


class EstimatedCountPaginator(Paginator[Any]):
    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return estimated_count(self.object_list)
        return len(self.object_list)


class CreatedFilter(admin.SimpleListFilter):
    """When a request was logged, as ranges of the created_at index."""

    title = "created"
    parameter_name = "created"
    _SINCE = {
        "hour": timedelta(hours=1),
        "day": timedelta(days=1),
        "week": timedelta(days=7),
        "month": timedelta(days=30),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("hour", "Past hour"),
            ("day", "Past 24 hours"),
            ("week", "Past 7 days"),
            ("month", "Past 30 days"),
            ("older", "Older than 30 days"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "older":
            return queryset.filter(created_at__lt=timezone.now() - self._SINCE["month"])
        if value in self._SINCE:
            return queryset.filter(created_at__gte=timezone.now() - self._SINCE[value])
        return queryset


class FeedbackFilter(admin.SimpleListFilter):
    title = "feedback"
    parameter_name = "has_feedback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With feedback"), ("no", "Without feedback")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(feedback__isnull=self.value() == "no")
        return queryset


@admin.register(MLRequest)
class MLRequestAdmin(admin.ModelAdmin[MLRequest]):
    """The request log, for staff allowed to view requests. Feedback changed here is
    recorded as from this user, via "staff", with the value it replaces kept."""

    form = MLRequestForm
    list_display = [
        "id",
        "parent_mlalgorithm",
        "response",
        "feedback",
        "feedback_by",
        "user",
        "created_at",
    ]
    # At tens of millions of rows, every part of this page must come from an index: no
    # full COUNT(*) (an estimate past 10k rows, estimated_count), no filter whose
    # choices are a DISTINCT over the log (the response column's was), no date hierarchy
    # (its years and months are one too), sorting only by indexed columns, and search by id.
    list_filter = [
        "parent_mlalgorithm__parent_endpoint",
        "parent_mlalgorithm",
        CreatedFilter,
        FeedbackFilter,
    ]
    search_fields = ["id"]
    search_help_text = "A request's id."
    sortable_by = ["id", "created_at"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_select_related = ["parent_mlalgorithm", "user"]
    readonly_fields = [
        "input_data",
        "full_response",
        "response",
        "created_at",
        "parent_mlalgorithm",
        "user",
        "feedback_at",
        "feedback_by",
        "feedback_via",
    ]
    inlines = [FeedbackRevisionInline]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[MLRequest], search_term: str
    ) -> tuple[QuerySet[MLRequest], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # An id: ASCII digits ("²".isdigit() is true) that fit a bigint.
        is_id = term.isascii() and term.isdigit() and len(term) <= 18
        return (queryset.filter(pk=int(term)) if is_id else queryset.none()), False

    def save_model(self, request: HttpRequest, obj: MLRequest, form: Any, change: bool) -> None:
        if not change or "feedback" not in form.changed_data:
            return
        actor = policy.Actor.of(request)
        feedback.give(
            request_id=obj.pk, value=form.cleaned_data["feedback"], token=None, actor=actor
        )

    # Deleting requests takes their feedback out of the tally that /metrics reads
    # (tally.py); Django's own delete would leave it counted.
    def delete_model(self, request: HttpRequest, obj: MLRequest) -> None:
        feedback.delete_requests(MLRequest.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MLRequest]) -> None:
        feedback.delete_requests(queryset)


@admin.register(ABTest)
class ABTestAdmin(admin.ModelAdmin[ABTest]):
    """A/B tests with their arms' accuracy (the decided numbers once stopped, live while
    running). Created through the API; stopped with the actions, which call the same
    ``ab_testing.stop`` as the API."""

    list_display = [
        "title",
        "state",
        "mode",
        "parent_mlalgorithm_1",
        "accuracy_1",
        "parent_mlalgorithm_2",
        "accuracy_2",
        "p_value",
        "created_at",
        "ended_at",
        "report",
    ]
    list_filter = ["state", "parent_mlalgorithm_1__parent_endpoint"]
    search_fields = ["title", "created_by"]
    readonly_fields = ["report", "summary"]
    fields = [
        "title",
        "state",
        "report",
        "parent_mlalgorithm_1",
        "parent_mlalgorithm_2",
        "mode",
        "arm_2_share",
        "alpha",
        "require_significance",
        "planned_feedback",
        "auto_stop",
        "min_p_value",
        "looks",
        "first_exclusion",
        "previous_status_1",
        "previous_status_2",
        "created_by",
        "created_at",
        "stopped_by",
        "ended_at",
        "summary",
        "summary_json",
    ]
    actions = ["stop_tests", "force_stop_tests"]

    def has_stop_permission(self, request: HttpRequest) -> bool:
        """The stop actions, as the API's stop (``policy.STOP_AB_TEST``)."""
        return policy.may(request.user, policy.STOP_AB_TEST)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ABTest]:
        return abtests_with_live_counts()

    # Creating, editing or deleting a test by hand would skip the status changes the
    # lifecycle makes; the API creates, the actions stop.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="arm 1 (accuracy or MAE)")
    def accuracy_1(self, abtest: ABTest) -> str:
        return self._accuracy(abtest, 1)

    @admin.display(description="arm 2 (accuracy or MAE)")
    def accuracy_2(self, abtest: ABTest) -> str:
        return self._accuracy(abtest, 2)

    def _accuracy(self, abtest: ABTest, arm: int) -> str:
        # An ended test shows its summary; a running one the list's live counts.
        summary = abtest.summary_json
        numbers = summary["arms"][arm - 1] if summary else None
        n = numbers["with_feedback"] if numbers else getattr(abtest, f"feedback_{arm}")
        if not n:
            return "no feedback"
        if abtest.parent_mlalgorithm_1.task == Task.REGRESSION:
            mae = numbers["mae"] if numbers else getattr(abtest, f"error_{arm}") / n
            return f"MAE {mae:.4g} ({n})"
        correct = numbers["correct"] if numbers else getattr(abtest, f"correct_{arm}")
        return f"{correct / n:.1%} ({correct}/{n})"

    @admin.display(description="p-value")
    def p_value(self, abtest: ABTest) -> str:
        """A sequential test's always-valid p-value (its running minimum, live); a fixed
        test's once it is decided."""
        if abtest.mode == ABTest.Mode.SEQUENTIAL:
            decided = (abtest.summary_json or {}).get("sequence")
            p = decided["p_value"] if decided else abtest.min_p_value
            return f"{p:.3g} (always valid)"
        comparison = (abtest.summary_json or {}).get("comparison")
        return f"{comparison['p_value']:.3g}" if comparison else "-"

    @admin.display(description="report")
    def report(self, abtest: ABTest) -> str:
        return format_html('<a href="{}">report</a>', reverse("abtest-report", args=[abtest.pk]))

    @admin.action(
        description="Stop selected A/B tests (evaluate and promote)", permissions=["stop"]
    )
    def stop_tests(self, request: HttpRequest, queryset: QuerySet[ABTest]) -> None:
        self._stop(request, queryset, force=False)

    @admin.action(
        description="End selected A/B tests with force (restore statuses if an arm has "
        "no feedback)",
        permissions=["stop"],
    )
    def force_stop_tests(self, request: HttpRequest, queryset: QuerySet[ABTest]) -> None:
        self._stop(request, queryset, force=True)

    def _stop(self, request: HttpRequest, queryset: QuerySet[ABTest], *, force: bool) -> None:
        for pk in queryset.values_list("pk", flat=True):
            try:
                abtest = ab_testing.stop(
                    abtest_id=pk, stopped_by=request.user.get_username(), force=force
                )
            except ServiceError as error:
                self.message_user(request, f"A/B test {pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(
                    request, f"A/B test {pk} {abtest.state}: {abtest.summary}", messages.SUCCESS
                )


class ShadowForm(forms.ModelForm[Shadow]):
    class Meta:
        model = Shadow
        fields = ["candidate", "share", "alpha", "planned_feedback"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        candidate = cleaned.get("candidate")
        if candidate is not None:
            try:
                shadows.check_start(
                    candidate=candidate,
                    share=cleaned.get("share", 1.0),
                    alpha=cleaned.get("alpha", 0.05),
                    planned_feedback=cleaned.get("planned_feedback"),
                )
            except ServiceError as error:
                raise forms.ValidationError(error.message) from None
        return cleaned


@admin.register(Shadow)
class ShadowAdmin(admin.ModelAdmin[Shadow]):
    """Shadows, with their agreement and paired comparison. Started with the add form and
    ended with the actions, which call the same services as the API."""

    form = ShadowForm
    list_display = [
        "pk",
        "endpoint",
        "candidate",
        "state",
        "share",
        "copies",
        "dropped",
        "agreement",
        "pairs",
        "verdict",
        "created_at",
        "ended_at",
        "report",
    ]
    list_filter = ["state", "endpoint"]
    actions = ["stop_shadows", "promote_shadows"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Shadow]:
        return Shadow.objects.select_related("candidate", "endpoint")

    def get_fields(self, request: HttpRequest, obj: Shadow | None = None) -> Any:
        if obj is None:
            return ["candidate", "share", "alpha", "planned_feedback"]
        return [
            "endpoint",
            "candidate",
            "state",
            "end_reason",
            "report",
            "share",
            "alpha",
            "planned_feedback",
            "previous_status",
            "baseline",
            "copies",
            "dropped",
            "failed",
            "pairs",
            "min_p_value",
            "looks",
            "first_exclusion",
            "ab_test",
            "created_by",
            "created_at",
            "ended_by",
            "ended_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Shadow | None = None) -> Any:
        return [] if obj is None else self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return policy.may(request.user, policy.START_SHADOW)

    def has_end_permission(self, request: HttpRequest) -> bool:
        return policy.may(request.user, policy.END_SHADOW)

    # Counters are the services' to write; the admin starts and ends.
    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Shadow, form: Any, change: bool) -> None:
        created = shadows.create(
            candidate=obj.candidate,
            created_by=request.user.get_username(),
            share=obj.share,
            alpha=obj.alpha,
            planned_feedback=obj.planned_feedback,
        )
        obj.pk = created.pk

    @admin.display(description="agreement")
    def agreement(self, shadow: Shadow) -> str:
        if not shadow.copies:
            return "-"
        if shadow.candidate.task == Task.REGRESSION:
            return f"mean diff {shadow.difference / shadow.copies:+.4g}"
        return f"{shadow.agreed / shadow.copies:.1%}"

    @admin.display(description="paired comparison")
    def verdict(self, shadow: Shadow) -> str:
        if shadow.first_exclusion:
            return f"{shadow.first_exclusion['better']} better"
        sequence = comparison.sequence(shadow)
        return f"undecided (p {shadow.min_p_value:.3g}, n {sequence['n']})"

    @admin.display(description="report")
    def report(self, shadow: Shadow) -> str:
        return format_html('<a href="{}">report</a>', reverse("shadow-report", args=[shadow.pk]))

    @admin.action(description="Stop selected shadows", permissions=["end"])
    def stop_shadows(self, request: HttpRequest, queryset: QuerySet[Shadow]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            try:
                shadows.stop(shadow_id=pk, stopped_by=request.user.get_username())
            except ServiceError as error:
                self.message_user(request, f"Shadow {pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"Shadow {pk} stopped.", messages.SUCCESS)

    @admin.action(
        description="Promote selected shadows (the candidate to production)", permissions=["end"]
    )
    def promote_shadows(self, request: HttpRequest, queryset: QuerySet[Shadow]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            try:
                shadow = shadows.promote(shadow_id=pk, promoted_by=request.user.get_username())
            except ServiceError as error:
                self.message_user(request, f"Shadow {pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Shadow {pk} promoted: {shadow.candidate} is in production.",
                    messages.SUCCESS,
                )


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin[BatchJob]):
    """Batch jobs and how far each has got, as their API shows it (``jobs.progress``).
    Read-only: a job is submitted through the API, and changes only by its pieces, by the
    cancel action (``jobs.cancel``, as the API's cancel), or by deletion, which takes its
    files with it (``jobs.delete_jobs``)."""

    list_display = [
        "id",
        "state",
        "endpoint_name",
        "submitter",
        "progress_bar",
        "rows",
        "rows_per_second",
        "created_at",
        "finished_at",
        "result",
    ]
    list_display_links = ["id"]
    list_filter = ["state", "created_at"]
    search_fields = ["file_name", "endpoint_name", "client", "user__username"]
    list_select_related = ["user"]
    fields = (
        "state",
        "progress_bar",
        "rows",
        "rows_per_second",
        "result",
        "error",
        "metrics",
        "submitter",
        "endpoint_name",
        "status",
        "algorithm_ids",
        "shares",
        "abtest",
        "log_requests",
        "target_column",
        "labels_as_feedback",
        "file_name",
        "input_name",
        "result_name",
        "header",
        "chunks_total",
        "chunks_done",
        "created_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    actions = ["cancel_jobs"]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """The cancel action, as the API's cancel of another's job
        (``policy.CANCEL_ANY_JOB``)."""
        return policy.may(request.user, policy.CANCEL_ANY_JOB)

    # Nobody edits a job by hand: its rows, state and files are its pieces' to write.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    # Deleting a job deletes its files, after cancelling it if it is still under way;
    # Django's own delete would leave them in the storage and its pieces running.
    def delete_model(self, request: HttpRequest, obj: BatchJob) -> None:
        jobs.delete_jobs(BatchJob.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        jobs.delete_jobs(queryset)

    @admin.display(description="submitter")
    def submitter(self, job: BatchJob) -> str:
        return job.user.get_username() if job.user else job.client or "-"

    @admin.display(description="progress")
    def progress_bar(self, job: BatchJob) -> SafeString:
        percent = jobs.percent(job)
        return format_html(
            '<progress value="{}" max="100" title="{}%">{}%</progress> {}%',
            percent,
            percent,
            percent,
            percent,
        )

    @admin.display(description="rows done / total")
    def rows(self, job: BatchJob) -> str:
        return f"{job.rows_done:,} / {job.rows_total:,}"

    @admin.display(description="rows/s")
    def rows_per_second(self, job: BatchJob) -> str:
        rate = jobs.rows_per_second(job)
        return "-" if rate is None else f"{rate:,.1f}"

    @admin.display(description="result")
    def result(self, job: BatchJob) -> str:
        if job.state != BatchJob.State.SUCCEEDED:
            return "-"
        url = reverse("admin:endpoints_batchjob_result", args=[job.pk])
        return format_html('<a href="{}">batch-job-{}.csv</a>', url, job.pk)

    # The result from the admin, for staff who may view jobs: /api/v1/batch-jobs/<id>/result
    # reads no session while PREDICT_ACCESS is open, so an operator's click there is a 404.
    def get_urls(self) -> list[URLPattern]:
        own = path(
            "<int:job_id>/result/",
            self.admin_site.admin_view(self.result_view),
            name="endpoints_batchjob_result",
        )
        return [own, *super().get_urls()]

    def result_view(self, request: HttpRequest, job_id: int) -> HttpResponseBase:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None or not self.has_view_permission(request, job):
            raise Http404(f"There is no batch job {job_id}.")
        try:
            opened = jobs.result_file(job)
        except ServiceError as error:
            return HttpResponse(error.message, status=409, content_type="text/plain")
        name = f"batch-job-{job.pk}.csv"
        return FileResponse(opened, as_attachment=True, filename=name, content_type="text/csv")

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        cancelled, skipped = [], []
        for job in queryset.order_by("pk"):
            if job.state in BatchJob.FINISHED:
                skipped.append(f"{job.pk} ({job.state})")
                continue
            try:
                jobs.cancel(job)
            except ServiceError:  # it ended meanwhile (cancel read its state again)
                skipped.append(f"{job.pk} ({job.state})")
            else:
                cancelled.append(str(job.pk))
        if cancelled:
            self.message_user(
                request, f"Cancelled batch jobs: {', '.join(cancelled)}.", messages.SUCCESS
            )
        if skipped:
            self.message_user(
                request,
                f"Skipped batch jobs that had already ended: {', '.join(skipped)}.",
                messages.WARNING,
            )
