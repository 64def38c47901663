"""``releasebook init``: make a Django app's repository a releasebook project.

Writes, next to the app (never over an existing file): ``tasks.py`` (so ``inv`` finds
releasebook's tasks), ``releasebook.yaml`` (the default environment),
``inventories/<env>.yml`` (the app's settings as found in the repository, a host to
fill in) and ``inventories/<env>.known_hosts``, and ignores ``.releasebook/`` in git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from releasebook.cli.kit import session
from releasebook.errors import UsageError
from releasebook.inventory.load import ENV_FILE_NAME
from releasebook.shipped import django_requirement

CONFIG_FILE = "releasebook.yaml"
_SETTINGS_DEFAULT = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z_][\w.]*)['"]""")
_PRODUCTION_SETTINGS = ("settings.prod", "settings.production", "settings")
_REQUIREMENTS = ("requirements.txt", "requirements/production.txt", "requirements/prod.txt")

TASKS_PY = '''"""`inv` tasks of this project: releasebook's collection (`inv --list`)."""

from releasebook.cli import namespace

__all__ = ["namespace"]
'''


@dataclass(frozen=True)
class App:
    """What the repository says about the Django app."""

    source: str  # the directory holding manage.py, from the project root
    settings: str
    wsgi: str
    requirements: str
    celery_app: str | None


def find_app(root: Path, source: str = "") -> App:
    """The Django project at ``root/source`` (default: ``root`` or its only child holding
    ``manage.py``). UsageError names what is missing."""
    if source:
        app_dir = root / source
    elif (root / "manage.py").is_file():
        app_dir = root
    else:
        found = sorted(p.parent for p in root.glob("*/manage.py"))
        if len(found) != 1:
            raise UsageError(
                f"no manage.py in {root}"
                + (f" and several below ({', '.join(p.name for p in found)})" if found else "")
                + ": run init in the Django project's repository, or pass --source=DIR"
            )
        app_dir = found[0]
    manage = app_dir / "manage.py"
    if not manage.is_file():
        raise UsageError(f"--source={source}: no manage.py in {app_dir}")
    default = _SETTINGS_DEFAULT.search(manage.read_text(errors="replace"))
    if default is None:
        raise UsageError(f"{manage}: no DJANGO_SETTINGS_MODULE default to start from")
    package = default.group(1).split(".")[0]
    settings = default.group(1)
    for candidate in _PRODUCTION_SETTINGS:
        if (app_dir / package / (candidate.replace(".", "/") + ".py")).is_file():
            settings = f"{package}.{candidate}"
            break
    requirements = next((r for r in _REQUIREMENTS if (app_dir / r).is_file()), _REQUIREMENTS[0])
    celery = package if (app_dir / package / "celery.py").is_file() else None
    return App(
        source=app_dir.relative_to(root).as_posix() or ".",
        settings=settings,
        wsgi=f"{package}.wsgi:application",
        requirements=requirements,
        celery_app=celery,
    )


def inventory_text(env: str, name: str, app: App) -> str:
    roles = "[web, worker, beat, migrate]" if app.celery_app else "[web, migrate]"
    celery = f"  celery_app: {app.celery_app}\n" if app.celery_app else ""
    required = ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL"]
    if app.celery_app:
        required.append("CELERY_BROKER_URL")
    return f"""\
# The {env} environment of {name}, written by `releasebook init`: fill in the hosts
# (and check what the app reads from its environment), then run
#   releasebook preflight --env={env}
# and `releasebook runbook --render` to write the runbooks under runbooks/{env}/.
app:
  source: {app.source}                  # the directory holding manage.py
  settings: {app.settings}       # DJANGO_SETTINGS_MODULE on the hosts
  wsgi: {app.wsgi}
  # Pinned runtime requirements, from app.source. Do not list releasebook in them: every
  # release adds {django_requirement()} (its Django app, without the controller's libraries).
  requirements: {app.requirements}
  python: python3            # the hosts' interpreter; the wheels are built for it
{celery}
deploy:
  path: /srv/{name}
  keep_releases: 5

ssh:
  user: deploy
  # The hosts' keys, checked on every connection: add each host with
  #   ssh-keyscan -H HOST >> inventories/{env}.known_hosts   (and compare the fingerprints)
  known_hosts: inventories/{env}.known_hosts
  connect_timeout: 10

web:
  port: 8000
  workers: 2

health:
  path: /readyz               # releasebook.django's readiness view (see the README)
  host_header: {name}.example.com   # one of the app's ALLOWED_HOSTS

env:
  # Names the app needs in its environment on the hosts; preflight refuses to start
  # when one is missing from shared/.env there.
  required: [{", ".join(required)}]
  # Generated on each host the first time, never leaving it.
  generate: [DJANGO_SECRET_KEY]
  # Non-secret values, part of each release. Secrets: `secrets:` (see the README).
  values:
    DJANGO_ALLOWED_HOSTS: {name}.example.com

hosts:
  {env}-web1:
    address: 192.0.2.10        # replace with the host's name or address
    roles: {roles}
"""


KNOWN_HOSTS = """\
# SSH host keys of the {env} hosts, one `ssh-keyscan -H HOST` line each; releasebook
# refuses to connect to a host whose key is not here or has changed.
"""


def init_project(root: Path, env: str = "staging", source: str = "") -> list[Path]:
    """Write the project's files into ``root``; the paths written. Refuses to overwrite."""
    if not ENV_FILE_NAME.fullmatch(env):
        raise UsageError(f"--env {env!r}: expected letters, digits, '-' and '_'")
    app = find_app(root, source)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", root.resolve().name).strip("-") or "app"
    files = {
        root / "tasks.py": TASKS_PY,
        root / CONFIG_FILE: f"# releasebook's defaults for this project.\nenv: {env}\n",
        root / "inventories" / f"{env}.yml": inventory_text(env, name, app),
        root / "inventories" / f"{env}.known_hosts": KNOWN_HOSTS.format(env=env),
    }
    existing = [str(p.relative_to(root)) for p in files if p.exists()]
    if existing:
        raise UsageError(f"not overwriting {', '.join(existing)}: move them away first")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    written = list(files)
    ignore = root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    if ".releasebook/" not in lines:
        with ignore.open("a") as out:
            prefix = "\n" if lines and lines[-1] else ""
            out.write(f"{prefix}# releasebook's build cache and run files\n.releasebook/\n")
        written.append(ignore)
    return written


NEXT_STEPS = """\
Next:
  1. Fill in inventories/{env}.yml (hosts, deploy path, environment) and add the
     hosts' keys to inventories/{env}.known_hosts.
  2. In the app: "releasebook.django" in INSTALLED_APPS, path("", include(
     "releasebook.django.urls")) in the URLconf (for /healthz and /readyz).
  3. releasebook runbook --render    (writes runbooks/{env}/*.md to commit)
     releasebook preflight           (checks the hosts; --env defaults to {env})
     releasebook release"""


@task(
    help={
        "env": "the environment to create (default staging)",
        "source": "the directory holding manage.py, if not this one or its only child",
    }
)
def init(c: Context, env: str = "staging", source: str = "") -> None:
    """Make this Django repository a releasebook project: tasks.py, inventory, known_hosts."""
    with session() as s:
        root = Path.cwd()
        for path in init_project(root, env, source):
            s.print(f"wrote {path.relative_to(root)}")
        s.print(NEXT_STEPS.format(env=env))
