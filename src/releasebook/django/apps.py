from django.apps import AppConfig


class ReleasebookConfig(AppConfig):
    name = "releasebook.django"
    label = "releasebook"
    verbose_name = "releasebook"

    def ready(self) -> None:
        from .release import current_release

        # Read the manifest at startup so a broken one stops the process right away.
        current_release()
