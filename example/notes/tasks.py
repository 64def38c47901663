from celery import shared_task

from .models import Note


@shared_task
def count_notes() -> int:
    return Note.objects.count()
