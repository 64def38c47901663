"""``manage.py readiness``: the deploy gate. Exit 0 ready, 1 not ready, 2 bad usage or
configuration.

Checks required environment variables (RELEASEBOOK_REQUIRED_ENV and ``--require``; only
names are printed, never values), then everything /readyz checks: database, migrations,
cache and Celery broker, each bounded by its timeout.
"""

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from releasebook.django.checks import env_check, readiness_checks, required_env_names
from releasebook.django.runner import run_checks


class Command(BaseCommand):
    help = "Check that this release can serve: env vars, database, migrations, cache, broker."
    # Its own checks are the point; the system checks run in `check --deploy`.
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--require",
            action="append",
            default=[],
            metavar="NAME",
            help="an environment variable that must be set (repeatable), in addition to "
            "the RELEASEBOOK_REQUIRED_ENV setting",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            checks = [env_check(required_env_names(options["require"])), *readiness_checks()]
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc), returncode=2) from exc
        results = run_checks(checks)
        ok = all(result.ok for result in results)
        if options["json"]:
            report = {"ok": ok, "checks": [result.report() for result in results]}
            self.stdout.write(json.dumps(report))
        else:
            for result in results:
                state = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("FAIL")
                self.stdout.write(
                    f"{state} {result.name} ({result.duration_ms:g} ms): {result.message}"
                )
        if not ok:
            failed = ", ".join(result.name for result in results if not result.ok)
            raise CommandError(f"not ready: {failed}", returncode=1)
