"""Django admin: what an operator needs to see which version serves, and to change it."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.endpoints import selectors, services
from apps.endpoints.models import ABTest, Endpoint, MLAlgorithm, MLAlgorithmStatus, MLRequest


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "created_at"]
    search_fields = ["name", "owner"]


class StatusHistoryInline(admin.TabularInline):
    """The status history, newest first. Read-only: a change goes through the action."""

    model = MLAlgorithmStatus
    verbose_name_plural = "Status history"
    fields = ["status", "active", "created_by", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(MLAlgorithm)
class MLAlgorithmAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "parent_endpoint", "current_status", "owner", "created_at"]
    list_filter = ["parent_endpoint", "statuses__status"]
    search_fields = ["name", "version", "description", "owner"]
    readonly_fields = ["wrapper", "artifact", "artifact_sha256", "sklearn_version", "created_at"]
    inlines = [StatusHistoryInline]
    actions = ["promote_to_production"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MLAlgorithm]:
        return selectors.algorithms_with_current_status()

    @admin.display(description="current status")
    def current_status(self, algorithm: MLAlgorithm) -> str:
        status = selectors.current_status(algorithm)
        return status.status if status else "-"

    @admin.action(description="Promote selected algorithms to production")
    def promote_to_production(self, request: HttpRequest, queryset: QuerySet[MLAlgorithm]) -> None:
        for algorithm in queryset:
            services.set_algorithm_status(
                algorithm=algorithm,
                status=MLAlgorithmStatus.Status.PRODUCTION,
                created_by=request.user.get_username(),
            )
        self.message_user(
            request, f"{queryset.count()} algorithm(s) promoted to production.", messages.SUCCESS
        )


@admin.register(MLAlgorithmStatus)
class MLAlgorithmStatusAdmin(admin.ModelAdmin):
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


@admin.register(MLRequest)
class MLRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "parent_mlalgorithm", "response", "feedback", "created_at"]
    list_filter = ["parent_mlalgorithm__parent_endpoint", "parent_mlalgorithm", "response"]
    search_fields = ["response", "feedback"]
    list_select_related = ["parent_mlalgorithm"]
    readonly_fields = ["input_data", "full_response", "response", "created_at", "parent_mlalgorithm"]
    date_hierarchy = "created_at"


@admin.register(ABTest)
class ABTestAdmin(admin.ModelAdmin):
    list_display = [
        "title", "parent_mlalgorithm_1", "parent_mlalgorithm_2", "created_by", "created_at",
        "ended_at",
    ]
    list_filter = ["ended_at"]
    search_fields = ["title", "created_by"]
    list_select_related = ["parent_mlalgorithm_1", "parent_mlalgorithm_2"]
    readonly_fields = ["created_at", "ended_at", "summary"]
