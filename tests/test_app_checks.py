"""Checks that test what the app will really do: the broker check loads the app's
Celery transport, the checks' client libraries are imported before their threads start,
and the error pages render with a manifest static storage before collectstatic."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from releasebook.django.broker import celery_transport, check_broker

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_transport_the_workers_use_is_loaded() -> None:
    assert celery_transport("redis://127.0.0.1:6379/0") == "kombu.transport.redis"
    assert celery_transport("filesystem://") == "kombu.transport.filesystem"
    with pytest.raises(ValueError, match=r"no transport for nope://"):
        celery_transport("nope://x")


def test_a_transport_that_cannot_import_fails_the_broker_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kombu's Redis transport needs `packaging`; a worker without it cannot start.
    monkeypatch.delitem(sys.modules, "kombu.transport.redis", raising=False)
    monkeypatch.setitem(sys.modules, "packaging.version", None)
    url = "redis://127.0.0.1:9/0"  # never reached: the import fails first
    with pytest.raises(ImportError, match=r"packaging\.version"):
        check_broker(url, 1.0)  # the check's runner reports the exception as its failure


def _run(project: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{project}:{SRC}",
        "DJANGO_SETTINGS_MODULE": "site_settings",
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SETTINGS = """
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "x" * 50
DEBUG = False
ALLOWED_HOSTS = ["app.test"]
INSTALLED_APPS = ["django.contrib.staticfiles", "releasebook.django"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "unused"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                      "LOCATION": "redis://127.0.0.1:6379/0"}}
CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
ROOT_URLCONF = "releasebook.django.urls"
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "DIRS": [BASE_DIR / "templates"]}]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "site_settings.py").write_text(SETTINGS)
    (tmp_path / "templates").mkdir()
    for name in ("404", "500"):
        (tmp_path / "templates" / f"{name}.html").write_text(
            "{% load static %}<link rel=icon href=\"{% static 'favicon.ico' %}\">" + name
        )
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "favicon.ico").write_bytes(b"\0icon")
    return tmp_path


def test_client_libraries_are_imported_at_startup(project: Path) -> None:
    done = _run(
        project,
        """
        import sys, django
        django.setup()
        print(sorted(m for m in ("redis", "redis.connection", "kombu.transport.redis",
                                 "psycopg", "django.db.backends.postgresql.base")
                     if m in sys.modules))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        sorted(
            [
                "redis",
                "redis.connection",
                "kombu.transport.redis",
                "psycopg",
                "django.db.backends.postgresql.base",
            ]
        )
    )


ERROR_PAGES = """
import django
django.setup()
from releasebook.gate import gate
print(gate.check_error_pages(None, 5))
"""


def test_error_pages_render_with_a_manifest_storage_before_collectstatic(project: Path) -> None:
    before = _run(project, ERROR_PAGES)
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == "(True, '404.html and 500.html render with DEBUG off')"
    collected = _run(
        project,
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('collectstatic', interactive=False, verbosity=0)",
    )
    assert collected.returncode == 0, collected.stderr
    after = _run(project, ERROR_PAGES)
    assert after.stdout.strip() == "(True, '404.html and 500.html render with DEBUG off')"


def test_a_missing_manifest_entry_still_fails_once_collected(project: Path) -> None:
    """The real storage is used once the manifest exists: a page naming a file that is
    not collected fails, as it would live."""
    collected = _run(
        project,
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('collectstatic', interactive=False, verbosity=0)",
    )
    assert collected.returncode == 0, collected.stderr
    (project / "templates" / "404.html").write_text(
        "{% load static %}<link href=\"{% static 'missing.css' %}\">404"
    )
    after = _run(project, ERROR_PAGES)
    assert "Missing staticfiles manifest entry" in after.stdout + after.stderr
