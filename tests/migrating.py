"""Releases of a small Django project (``tests/fixtures/migrating``) that differ in their
migrations, laid out as releasebook lays a release out: the project, ``venv`` (this
interpreter's virtualenv), ``.releasebook/`` with the host-side scripts, and a launcher
that loads ``shared/.env`` the way the deployed one does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from releasebook.gate.command import GATE_IN_RELEASE, GATE_SOURCE
from releasebook.runbooks.processes import launcher_text

PROJECT = Path(__file__).resolve().parent / "fixtures" / "migrating"
SETTINGS = "migrating_settings"
STATE_SOURCE = GATE_SOURCE.with_name("migration_state.py")
STATE_IN_RELEASE = ".releasebook/migration_state.py"


@dataclass(frozen=True)
class Mig:
    """One migration file of app ``shelf``: its name, operations (source inside the
    ``operations`` list), and optional module code and Migration class attributes."""

    name: str
    operations: str
    header: str = ""
    attributes: str = ""

    def source(self, previous: str | None) -> str:
        dependency = f'("shelf", "{previous}")' if previous else ""
        attributes = f"    {self.attributes.strip()}\n" if self.attributes else ""
        return (
            "from django.db import migrations, models\n\n"
            f"{self.header.strip()}\n\n\n"
            "class Migration(migrations.Migration):\n"
            f"    dependencies = [{dependency}]\n"
            f"{attributes}"
            f"    operations = [\n{self.operations.rstrip()}\n    ]\n"
        )


def make_release(deploy: Path, release_id: str, migrations: Sequence[Mig]) -> Path:
    """``<deploy>/releases/<release_id>`` holding ``migrations`` as a chain, each one
    depending on the one before."""
    release = deploy / "releases" / release_id
    shutil.copytree(PROJECT, release, ignore=shutil.ignore_patterns("__pycache__"))
    folder = release / "shelf" / "migrations"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    previous: str | None = None
    for migration in migrations:
        (folder / f"{migration.name}.py").write_text(migration.source(previous))
        previous = migration.name
    (release / "venv").symlink_to(Path(sys.prefix))
    (release / ".releasebook").mkdir()
    shutil.copy(GATE_SOURCE, release / GATE_IN_RELEASE)
    shutil.copy(STATE_SOURCE, release / STATE_IN_RELEASE)
    return release


def make_deploy(root: Path, database_url: str) -> Path:
    """``<root>/deploy`` with ``shared/.env`` and the env launcher ``.releasebook/with-env``."""
    deploy = root / "deploy"
    (deploy / "shared").mkdir(parents=True)
    (deploy / ".releasebook").mkdir()
    env_file = deploy / "shared" / ".env"
    env_file.write_text(f"DATABASE_URL={database_url}\n")
    launcher = with_env(deploy)
    launcher.write_text(
        launcher_text(
            {
                "release": "test",
                "release_env": env_file,
                "settings_module": SETTINGS,
                "maintenance_flag": deploy / "shared" / "maintenance",
            }
        )
    )
    launcher.chmod(0o755)
    return deploy


def with_env(deploy: Path) -> Path:
    return deploy / ".releasebook" / "with-env"


def manage(
    release: Path, *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in the release, through the launcher, with its venv."""
    deploy = release.parent.parent
    return subprocess.run(
        [str(with_env(deploy)), "venv/bin/python", "manage.py", *args],
        cwd=release,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )
