from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from releasebook.django.release import current_release

from .models import Note


def index(request: HttpRequest) -> HttpResponse:
    context = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "release": current_release(),
        "notes": Note.objects.all()[:20],
    }
    return render(request, "notes/index.html", context)
