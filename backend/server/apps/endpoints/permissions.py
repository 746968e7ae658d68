"""Who may call what. Each class answers for one kind of route; docs/operations.md, "Access",
has the table."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission, DjangoModelPermissions
from rest_framework.request import Request

_MODEL_PERMISSIONS = DjangoModelPermissions.perms_map


def required_permissions(method: str, view: Any) -> list[str]:
    """The Django permissions a write needs, as the admin would ask for them: the view's
    ``required_permissions`` when it names them, else those of its queryset's model
    (add for POST, change for PUT/PATCH, delete for DELETE)."""
    declared = getattr(view, "required_permissions", None)
    if declared is not None:
        return list(declared)
    model = view.get_queryset().model
    return [
        template % {"app_label": model._meta.app_label, "model_name": model._meta.model_name}
        for template in _MODEL_PERMISSIONS.get(method, [])
    ]


class IsOperatorOrReadOnly(BasePermission):
    """Anyone may read the catalogue. Changing it needs a staff user who also holds the
    model permission the admin would ask for (``is_staff`` alone opens the admin's door,
    not its tables)."""

    message = "Changing the catalogue requires a staff user."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        needed = required_permissions(request.method or "", view)
        if user.has_perms(needed):
            return True
        # DRF makes a permission object per request: the message can name what is missing.
        self.message = f"This change needs a staff user with the permission: {', '.join(needed)}."
        return False


class PredictAccess(BasePermission):
    """Predict and batch-predict: anyone with ``PREDICT_ACCESS=open``, an authenticated
    user (token, Basic or session) with ``PREDICT_ACCESS=token``."""

    message = "This service needs a token: send 'Authorization: Token <key>'."

    def has_permission(self, request: Request, view: Any) -> bool:
        if settings.PREDICT_ACCESS == "open":
            return True
        return bool(request.user and request.user.is_authenticated)


class FeedbackAccess(PredictAccess):
    """Feedback: whoever may predict, narrowed by ``FEEDBACK_ACCESS`` (``authenticated``:
    a logged-in user; ``staff``: operators). The request's own token, and its user, are
    checked in ``feedback.py`` once the request is known."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        access = settings.FEEDBACK_ACCESS
        user = request.user
        if access == "token":
            return True
        if not (user and user.is_authenticated):
            self.message = f"Feedback needs a login here (FEEDBACK_ACCESS={access})."
            return False
        if access == "staff" and not user.is_staff:
            self.message = (
                "Feedback is given by staff only on this service (FEEDBACK_ACCESS=staff)."
            )
            return False
        return True


class PredictAccessMixin:
    """For the prediction routes: no credential lookup at all while they are open (it
    costs time on the hottest path), the usual authenticators otherwise."""

    def get_authenticators(self) -> list[BaseAuthentication]:
        if settings.PREDICT_ACCESS == "open":
            return []
        # A mixin for APIView, which has the method: mypy cannot see it here, nor its type.
        return super().get_authenticators()  # type: ignore[misc, no-any-return]
