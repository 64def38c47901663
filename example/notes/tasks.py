import logging

from celery import shared_task

from .models import Note

logger = logging.getLogger(__name__)


@shared_task
def count_notes() -> int:
    count = Note.objects.count()
    logger.info("counted %d notes", count)
    return count
