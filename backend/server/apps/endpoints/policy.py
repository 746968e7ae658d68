"""Who the client is, and what it may do: the one place that decides.

Every view (through the DRF permission classes at the end of this module), every admin
action and every selector that narrows what a user sees asks here. The table in
docs/operations.md, "Access", is this module in words.

- **Operators** are staff users who hold the Django permission of the action, as the admin
  grants them: ``is_staff`` alone opens the admin's door, not its tables. Each action
  names its permission once (``REGISTER_MODEL``, ``CHANGE_STATUS`` ...), and the API and
  the admin ask for the same one.
- **Predictions** are open or need a login (``PREDICT_ACCESS``).
- **Feedback** needs the request's token or an operator, narrowed by ``FEEDBACK_ACCESS``;
  a request made by a logged-in user takes feedback from that user only.
- **Batch jobs** are their submitter's (a user, or an anonymous client holding the job's
  token) and operators'.

Plain decisions over users and ids: no queries here (the selectors build them), and no
import from the rooms above.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, PermissionsMixin
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

User = AbstractBaseUser | AnonymousUser

# -- the actions and the permission each one needs ---------------------------------------
# Django's model permissions, as the admin grants them to staff.

REGISTER_MODEL = "endpoints.add_mlalgorithm"  # a new version (API upload, admin form)
CHANGE_STATUS = "endpoints.add_mlalgorithmstatus"  # promote, demote (API, admin action)
START_AB_TEST = "endpoints.add_abtest"
STOP_AB_TEST = "endpoints.change_abtest"  # API stop, admin actions
START_SHADOW = "endpoints.add_shadow"
END_SHADOW = "endpoints.change_shadow"  # stop, promote, an A/B test from it (API, admin)
SET_REFERENCE = "endpoints.change_mlalgorithm"  # a version's drift reference (API, command)
READ_ANY_REQUEST = "endpoints.view_mlrequest"  # the whole log, not only one's own
GIVE_ANY_FEEDBACK = "endpoints.change_mlrequest"  # feedback without the request's token
DELETE_REQUESTS = "endpoints.delete_mlrequest"  # the admin's delete
SEE_ANY_JOB = "endpoints.view_batchjob"
CANCEL_ANY_JOB = "endpoints.change_batchjob"
DELETE_JOBS = "endpoints.delete_batchjob"


def may(user: User | None, permission: str) -> bool:
    """Whether ``user`` is staff and holds ``permission``: an operator for that action."""
    return bool(
        user is not None
        and user.is_authenticated
        and getattr(user, "is_staff", False)
        and isinstance(user, PermissionsMixin)  # a user model without permissions has none
        and user.has_perm(permission)
    )


# -- who the client is -------------------------------------------------------------------


def client_address(request: HttpRequest | Request) -> str:
    """The client's IP address, for rates, login lockouts (settings.py,
    ``AXES_CLIENT_IP_CALLABLE``) and the audit of anonymous clients: DRF's rule
    (``BaseThrottle.get_ident``), REMOTE_ADDR or, with ``NUM_PROXIES=n``, the n-th
    X-Forwarded-For entry from the right, the one the farthest of our proxies appended; a
    client can put anything before it, nothing after. Something that is not an IP address
    (the header sent straight to the server, past the proxy) counts as REMOTE_ADDR: it must
    not make a new client per value, nor reach axes' address column (PostgreSQL's inet
    refuses it). Empty when there is no address."""
    # DRF types it for its Request; it reads .headers and .META, which a Django one has too.
    ident = BaseThrottle().get_ident(cast(Request, request))
    try:
        return str(ipaddress.ip_address(ident))
    except ValueError:
        return str(request.META.get("REMOTE_ADDR") or "")


@dataclass(frozen=True)
class Actor:
    """The client of a request: its user (anonymous or not) and its address."""

    user: User
    address: str = ""

    @classmethod
    def of(cls, request: HttpRequest | Request) -> Actor:
        """The client of ``request``, known by its address as rates see it
        (``client_address``): the rest of X-Forwarded-For is not trusted."""
        return cls(user=request.user, address=client_address(request))

    @property
    def user_id(self) -> int | None:
        """The authenticated user, recorded on its logged requests (None when anonymous,
        which is every client while PREDICT_ACCESS=open: no credentials are read then)."""
        return self.user.pk if self.user.is_authenticated else None

    @property
    def label(self) -> str:
        """How the audit names the client; distinct labels count distinct clients."""
        if self.user.is_authenticated:
            return f"user:{self.user.get_username()}"
        return f"anonymous:{self.address or 'unknown'}"


# -- predictions and feedback ------------------------------------------------------------


def may_predict(user: User | None) -> bool:
    """Predict and batch-predict: anyone with ``PREDICT_ACCESS=open``, a logged-in user
    with ``token``."""
    return settings.PREDICT_ACCESS == "open" or bool(user and user.is_authenticated)


def feedback_refusal(user: User | None) -> str | None:
    """Why ``user`` may not give feedback on this service at all (``FEEDBACK_ACCESS``), or
    None. The request's own token, and its owner, are checked once the request is known
    (``feedback_via``, ``feedback_owner_refusal``)."""
    if not may_predict(user):
        return "This service needs a token: send 'Authorization: Token <key>'."
    access = settings.FEEDBACK_ACCESS
    if access == "token":
        return None
    if not (user and user.is_authenticated):
        return f"Feedback needs a login here (FEEDBACK_ACCESS={access})."
    if access == "staff" and not getattr(user, "is_staff", False):
        return "Feedback is given by staff only on this service (FEEDBACK_ACCESS=staff)."
    return None


MISSING_TOKEN = (
    "Feedback needs the feedback_token that came with the prediction (or a staff user "
    "allowed to change requests)."
)
WRONG_TOKEN = "The feedback_token does not match this request."
STAFF_ONLY = "Feedback is given by staff only on this service (FEEDBACK_ACCESS=staff)."
NOT_YOURS = "This request was made by another user: only they, or staff, may give its feedback."


def feedback_via(actor: Actor, *, token: str | None, token_valid: bool) -> str | None:
    """How ``actor`` may give a request's feedback: ``"staff"`` (an operator, no token
    needed) or ``"token"`` (``token`` is the request's, ``token_valid``); None when it may
    not (``feedback_refusal_for`` says why)."""
    if may(actor.user, GIVE_ANY_FEEDBACK):
        return "staff"
    if settings.FEEDBACK_ACCESS == "staff" or not token or not token_valid:
        return None
    return "token"


def feedback_refusal_for(*, token: str | None) -> str:
    """Why ``feedback_via`` said no, for a client that sent ``token``."""
    if settings.FEEDBACK_ACCESS == "staff":
        return STAFF_ONLY
    return WRONG_TOKEN if token else MISSING_TOKEN


def feedback_owner_refusal(actor: Actor, via: str, owner_id: int | None) -> str | None:
    """Why ``actor`` may not give feedback on a request made by user ``owner_id`` (None:
    an anonymous client), having come ``via`` staff or a token; None when it may."""
    if via == "staff":
        return None
    if owner_id is None and settings.PREDICT_ACCESS != "token":
        return None  # an anonymous request: the token is the only proof there is
    return None if owner_id == actor.user_id else NOT_YOURS


# -- batch jobs --------------------------------------------------------------------------


def sees_every_job(actor: Actor) -> bool:
    return may(actor.user, SEE_ANY_JOB)


def may_see_job(actor: Actor, *, owner_id: int | None, token_valid: bool) -> bool:
    """A job is its submitter's (a user; an anonymous client with its token) and
    operators'."""
    if sees_every_job(actor) or (token_valid and owner_id is None):
        return True
    return owner_id is not None and owner_id == actor.user_id


def may_cancel_job(actor: Actor, *, owner_id: int | None, token_valid: bool) -> bool:
    """Its submitter may cancel a job; someone else's needs ``CANCEL_ANY_JOB``, as the
    admin's action does (seeing every job is not enough)."""
    if may(actor.user, CANCEL_ANY_JOB) or (token_valid and owner_id is None):
        return True
    return owner_id is not None and owner_id == actor.user_id


# -- DRF's side: permission classes that ask the functions above -------------------------


class Operators(BasePermission):
    """Anyone may read; a write needs an operator for the view's ``write_permission`` (a
    constant of this module). A view that names none takes no write from anyone."""

    message = "Changing the catalogue requires a staff user."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        if not (user and user.is_authenticated and getattr(user, "is_staff", False)):
            return False
        needed: str | None = getattr(view, "write_permission", None)
        if needed is not None and may(user, needed):
            return True
        # DRF makes a permission object per request: the message can name what is missing.
        self.message = (
            f"This change needs a staff user with the permission: {needed}."
            if needed
            else "This route takes no changes."
        )
        return False


class PredictAccess(BasePermission):
    """Predict, batch-predict and batch jobs: ``may_predict``."""

    message = "This service needs a token: send 'Authorization: Token <key>'."

    def has_permission(self, request: Request, view: Any) -> bool:
        return may_predict(request.user)


class FeedbackAccess(BasePermission):
    """Feedback routes: ``feedback_refusal``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        refusal = feedback_refusal(request.user)
        if refusal is not None:
            self.message = refusal
        return refusal is None


class PredictAccessMixin:
    """For the prediction routes: while they are open, no credential lookup for a request
    that carries none (it costs time on the hottest path); the usual authenticators for one
    that does, so that a signed-in client is counted as itself, not as an anonymous
    address (``AnonymousRateThrottle``), and for every request otherwise."""

    def get_authenticators(self) -> list[BaseAuthentication]:
        # Django's View.setup has set self.request (the HttpRequest) by now; the schema's
        # generator asks without one.
        request: HttpRequest | None = getattr(self, "request", None)
        credentials = request is not None and (
            "HTTP_AUTHORIZATION" in request.META or settings.SESSION_COOKIE_NAME in request.COOKIES
        )
        if settings.PREDICT_ACCESS == "open" and not credentials:
            return []
        # A mixin for APIView, which has the method: mypy cannot see it here, nor its type.
        return super().get_authenticators()  # type: ignore[misc, no-any-return]
