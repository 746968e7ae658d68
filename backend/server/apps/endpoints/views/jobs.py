"""``/api/v1/batch-jobs``: submit a CSV file to be scored in the background, watch it,
collect its result, cancel it. The work is ``jobs.py``'s; the tasks, ``tasks.py``'s.

A job is its submitter's and operators' (``view_batchjob``); an anonymous submitter
(``PREDICT_ACCESS=open``) gets a ``token`` with the job, sent back as ``X-Job-Token``
(never ``?token=``: a 400, ``inputs.job_token``). For anyone else a job is a 404. Unlike
predict, these routes always read the credentials sent, whatever ``PREDICT_ACCESS``: whose
job it is depends on them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponseBase
from django.urls import reverse
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import InvalidInput
from apps.endpoints import policy
from apps.endpoints.api import openapi
from apps.endpoints.api.inputs import job_token, upload_form
from apps.endpoints.api.renderers import CSVRenderer, JsonErrorsMixin
from apps.endpoints.batch import jobs, tasks
from apps.endpoints.models import BatchJob
from apps.endpoints.serializers import BatchJobSerializer


def _body(request: Request, job: BatchJob) -> dict[str, Any]:
    url = reverse("batch-job", args=[job.pk])
    body = {**jobs.progress(job), "url": request.build_absolute_uri(url)}
    if job.state == BatchJob.State.SUCCEEDED:
        body["result_url"] = request.build_absolute_uri(reverse("batch-job-result", args=[job.pk]))
    return body


def _job(request: Request, job_id: int) -> BatchJob:
    return jobs.job_for(policy.Actor.of(request), job_id, job_token(request))


class BatchJobsView(GenericAPIView[Any]):
    """``POST``: submit a file (multipart ``file``; ``endpoint``, ``status``, ``version``,
    ``log_requests``, ``target_column``), checked before it is queued: 202 with the job.
    ``GET``: your jobs, newest first; ``?state=`` filters."""

    permission_classes = [policy.PredictAccess]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = BatchJobSerializer
    # a ?state= that is none, a ?token=; a file past the limits
    openapi_error_codes = (400, 413)

    def get_queryset(self) -> QuerySet[BatchJob]:
        """The jobs the client may list (``jobs.visible``), newest first: what the list
        pages, and what the browsable API's page asks for."""
        visible = jobs.visible(policy.Actor.of(self.request))
        return visible.order_by("-created_at", "-id")

    @openapi.job_list_schema
    def get(self, request: Request) -> Response:
        job_token(request)  # a ?token= here is as visible in the logs as anywhere
        queryset = self.get_queryset()
        state = request.query_params.get("state")
        if state:
            if state not in BatchJob.State.values:
                raise InvalidInput(
                    f"'{state}' is not a state; one of {', '.join(BatchJob.State.values)}."
                )
            queryset = queryset.filter(state=state)
        page = self.paginate_queryset(queryset)
        assert page is not None  # the project sets a paginator
        return self.get_paginated_response([_body(request, job) for job in page])

    @openapi.job_submit_schema
    def post(self, request: Request) -> Response:
        job_token(request)
        data = upload_form(self, request, setting="BATCH_JOB_MAX_UPLOAD_BYTES")
        actor = policy.Actor.of(request)
        job = jobs.submit(
            upload=data["file"],
            file_name=data["file"].name or "",
            endpoint_name=data.get("endpoint"),
            status=data.get("status", settings.PREDICT_DEFAULT_STATUS),
            version=data.get("version"),
            log_requests=data.get("log_requests", False),
            target_column=data.get("target_column"),
            actor=actor,
            send=tasks.send_pieces,
        )
        body = _body(request, job)
        if job.user_id is None:
            body["token"] = jobs.token_for(job.pk)
        return Response(body, status=202, headers={"Location": body["url"]})


class BatchJobView(GenericAPIView[Any]):
    """``GET``: the job's state, progress, rows/s, metrics, and its error if it failed."""

    permission_classes = [policy.PredictAccess]
    serializer_class = openapi.BatchJobSchema
    openapi_error_codes = (400,)  # a ?token=

    @openapi.job_schema
    def get(self, request: Request, job_id: int) -> Response:
        return Response(_body(request, _job(request, job_id)))


class BatchJobResultView(JsonErrorsMixin, GenericAPIView[Any]):
    """``GET``: the scored CSV (the input rows plus the answer columns), streamed; 409
    until the job has succeeded."""

    permission_classes = [policy.PredictAccess]
    # CSV, for Accept: text/csv and */* (what a download sends); JSON is its errors'.
    renderer_classes = [CSVRenderer, JSONRenderer]
    serializer_class = openapi.BatchJobSchema
    openapi_error_codes = (400, 409)  # a ?token=; not succeeded yet

    @openapi.job_result_schema
    def get(self, request: Request, job_id: int) -> HttpResponseBase:
        job = _job(request, job_id)
        name = f"batch-job-{job.pk}.csv"
        return FileResponse(
            jobs.result_file(job), as_attachment=True, filename=name, content_type="text/csv"
        )


class BatchJobCancelView(GenericAPIView[Any]):
    """``POST``: cancel the job (409 once it has ended); what it wrote is taken back."""

    permission_classes = [policy.PredictAccess]
    serializer_class = openapi.BatchJobSchema
    openapi_error_codes = (409,)

    @openapi.job_cancel_schema
    def post(self, request: Request, job_id: int) -> Response:
        job = jobs.cancel_for(policy.Actor.of(request), job_id, job_token(request))
        return Response(_body(request, job))
