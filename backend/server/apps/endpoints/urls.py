from django.urls import include, path
from rest_framework.routers import DefaultRouter

from apps.endpoints import job_views, report, views

router = DefaultRouter(trailing_slash=False)
router.register("endpoints", views.EndpointViewSet, basename="endpoints")
router.register("mlalgorithms", views.MLAlgorithmViewSet, basename="mlalgorithms")
router.register(
    "mlalgorithmstatuses", views.MLAlgorithmStatusViewSet, basename="mlalgorithmstatuses"
)
router.register("mlrequests", views.MLRequestViewSet, basename="mlrequests")
router.register("abtests", views.ABTestViewSet, basename="abtests")

urlpatterns = [
    path("api/v1/batch-predict", views.BatchPredictView.as_view(), name="batch-predict"),
    path("api/v1/feedback", views.BulkFeedbackView.as_view(), name="feedback"),
    path("api/v1/batch-jobs", job_views.BatchJobsView.as_view(), name="batch-jobs"),
    path("api/v1/batch-jobs/<int:job_id>", job_views.BatchJobView.as_view(), name="batch-job"),
    path(
        "api/v1/batch-jobs/<int:job_id>/result",
        job_views.BatchJobResultView.as_view(),
        name="batch-job-result",
    ),
    path(
        "api/v1/batch-jobs/<int:job_id>/cancel",
        job_views.BatchJobCancelView.as_view(),
        name="batch-job-cancel",
    ),
    # Before the router, so an endpoint may be named like a collection.
    path("api/v1/<slug:endpoint_name>/predict", views.PredictView.as_view(), name="predict"),
    path(
        "api/v1/stop_ab_test/<int:abtest_id>", views.StopABTestView.as_view(), name="stop-ab-test"
    ),
    path("api/v1/", include(router.urls)),
    path("abtests/<int:abtest_id>/report", report.abtest_report, name="abtest-report"),
]
