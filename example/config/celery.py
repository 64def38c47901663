"""Celery app: ``python -m celery -A config worker`` / ``beat``, run from the project dir."""

import os

from celery import Celery

# Fail closed: without an explicit module, processes get prod settings, which refuse
# to start without their required environment.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
