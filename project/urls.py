from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "Reliable background work"
admin.site.site_title = "Reliable background work"
admin.site.index_title = "Break things, watch what survives"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
