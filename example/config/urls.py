from django.contrib import admin
from django.urls import include, path
from notes import views as notes_views

urlpatterns = [
    path("", include("releasebook.django.urls")),
    path("admin/", admin.site.urls),
    path("notes/count", notes_views.count, name="count"),
    path("", notes_views.index, name="index"),
]
