from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request


class IsStaffOrReadOnly(BasePermission):
    """Anyone may read the catalogue; only staff users may change it."""

    message = "Changing the catalogue requires a staff user."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class PredictAccess(BasePermission):
    """Predict, batch-predict and feedback: anyone with ``PREDICT_ACCESS=open``, an
    authenticated user (token, Basic or session) with ``PREDICT_ACCESS=token``."""

    message = "This service needs a token: send 'Authorization: Token <key>'."

    def has_permission(self, request: Request, view: Any) -> bool:
        if settings.PREDICT_ACCESS == "open":
            return True
        return bool(request.user and request.user.is_authenticated)


class PredictAccessMixin:
    """For the prediction routes: no credential lookup at all while they are open (it
    costs time on the hottest path), the usual authenticators otherwise."""

    def get_authenticators(self) -> list[BaseAuthentication]:
        if settings.PREDICT_ACCESS == "open":
            return []
        # A mixin for APIView, which has the method: mypy cannot see it here, nor its type.
        return super().get_authenticators()  # type: ignore[misc, no-any-return]
