import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from releasebook.django.release import current_release

from .models import Note
from .tasks import count_notes

logger = logging.getLogger(__name__)


def index(request: HttpRequest) -> HttpResponse:
    context = {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "release": current_release(),
        "notes": Note.objects.all()[:20],
    }
    return render(request, "notes/index.html", context)


def count(request: HttpRequest) -> JsonResponse:
    """Queues a count of the notes on the Celery worker (its log line carries this
    request's id, as this view's does)."""
    result = count_notes.delay()
    logger.info("queued count_notes %s", result.id)
    return JsonResponse({"queued": result.id}, status=202)
