from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from ops import views as ops

# /healthz/live and /healthz/ready are answered by ops.middleware.HealthMiddleware, before
# any other middleware (no HTTPS redirect, no host check): they are not routed here.
urlpatterns = [
    path("", RedirectView.as_view(url="/admin/dashboard/", permanent=False)),
    path("metrics", ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
