"""URL wiring: the admin and the API (``apps/endpoints/urls.py``)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),  # log in/out for the browsable API
    path("", include("apps.endpoints.urls")),
]

handler400 = "apps.endpoints.views.errors.bad_request"
handler403 = "apps.endpoints.views.errors.permission_denied"
handler404 = "apps.endpoints.views.errors.not_found"
handler500 = "apps.endpoints.views.errors.server_error"
