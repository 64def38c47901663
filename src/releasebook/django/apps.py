from django.apps import AppConfig
from django.core.signals import request_finished


class ReleasebookConfig(AppConfig):
    name = "releasebook.django"
    label = "releasebook"
    verbose_name = "releasebook"

    def ready(self) -> None:
        from .release import current_release
        from .requestid import clear_request_id
        from .tasks import connect

        request_finished.connect(clear_request_id, dispatch_uid="releasebook-request-id")
        connect()  # request ids into Celery tasks' log lines, when Celery is installed
        # Read the manifest at startup so a broken one stops the process right away.
        current_release()
        # Before any request starts the checks' threads.
        from .checks import warm_up

        warm_up()
