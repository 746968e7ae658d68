"""The API's routes, each to the view module of its concern (``views/``)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from apps.endpoints.views import (
    abtests,
    batch,
    catalogue,
    drift,
    jobs,
    mlflow,
    oip,
    predict,
    requests,
    schema,
    shadows,
)

router = DefaultRouter(trailing_slash=False)
router.register("endpoints", catalogue.EndpointViewSet, basename="endpoints")
router.register("mlalgorithms", catalogue.MLAlgorithmViewSet, basename="mlalgorithms")
router.register(
    "mlalgorithmstatuses", catalogue.MLAlgorithmStatusViewSet, basename="mlalgorithmstatuses"
)
router.register("mlrequests", requests.MLRequestViewSet, basename="mlrequests")
router.register("abtests", abtests.ABTestViewSet, basename="abtests")
router.register("shadows", shadows.ShadowViewSet, basename="shadows")

# The Open Inference Protocol (V2), REST: a model is an endpoint, its version a version
# string (views/oip.py). /v2/health/* are probes (apps/ops/middleware.py).
V2_MODEL = "v2/models/<slug:model_name>"
V2_VERSION = "v2/models/<slug:model_name>/versions/<str:model_version>"
v2_patterns = [
    path("v2", oip.ServerMetadataView.as_view(), name="v2-server"),
    path(V2_MODEL, oip.ModelMetadataView.as_view(), name="v2-model"),
    path(V2_VERSION, oip.ModelMetadataView.as_view(), name="v2-model-version"),
    path(f"{V2_MODEL}/ready", oip.ModelReadyView.as_view(), name="v2-model-ready"),
    path(f"{V2_VERSION}/ready", oip.ModelReadyView.as_view(), name="v2-model-version-ready"),
    path(f"{V2_MODEL}/config", oip.ModelConfigView.as_view(), name="v2-model-config"),
    path(f"{V2_VERSION}/config", oip.ModelConfigView.as_view(), name="v2-model-version-config"),
    path(f"{V2_MODEL}/infer", oip.InferView.as_view(), name="v2-infer"),
    path(f"{V2_VERSION}/infer", oip.InferView.as_view(), name="v2-version-infer"),
]

urlpatterns = [
    *v2_patterns,
    path("api/v1/schema", schema.SchemaView.as_view(), name="schema"),
    path("api/v1/docs", schema.SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/batch-predict", batch.BatchPredictView.as_view(), name="batch-predict"),
    path("api/v1/feedback", requests.BulkFeedbackView.as_view(), name="feedback"),
    path("api/v1/batch-jobs", jobs.BatchJobsView.as_view(), name="batch-jobs"),
    path("api/v1/batch-jobs/<int:job_id>", jobs.BatchJobView.as_view(), name="batch-job"),
    path(
        "api/v1/batch-jobs/<int:job_id>/result",
        jobs.BatchJobResultView.as_view(),
        name="batch-job-result",
    ),
    path(
        "api/v1/batch-jobs/<int:job_id>/cancel",
        jobs.BatchJobCancelView.as_view(),
        name="batch-job-cancel",
    ),
    # Before the router, so an endpoint may be named like a collection.
    path("api/v1/<slug:endpoint_name>/predict", predict.PredictView.as_view(), name="predict"),
    path(  # MLflow's scoring format (views/mlflow.py), and its routes at the root below
        "api/v1/<slug:endpoint_name>/invocations",
        mlflow.InvocationsView.as_view(),
        name="mlflow-invocations",
    ),
    path(
        "api/v1/<slug:endpoint_name>/drift",
        drift.EndpointDriftView.as_view(),
        name="endpoint-drift",
    ),
    path(
        "api/v1/stop_ab_test/<int:abtest_id>",
        abtests.StopABTestView.as_view(),
        name="stop-ab-test",
    ),
    path("api/v1/", include(router.urls)),
    path("abtests/<int:abtest_id>/report", abtests.abtest_report, name="abtest-report"),
    path("shadows/<int:shadow_id>/report", shadows.shadow_report, name="shadow-report"),
    path("mlalgorithms/<int:algorithm_id>/drift", drift.drift_report, name="drift-report"),
    path("invocations", mlflow.RootInvocationsView.as_view(), name="mlflow-root-invocations"),
    path("ping", mlflow.ping, name="mlflow-ping"),
    path("health", mlflow.ping, name="mlflow-health"),
]
