"""Every path releasebook uses on a host, named once.

A host's deploy directory holds::

    releases/<id>/                 one per release: code, release.json, staticfiles/,
                                   its own env file and configuration (below)
    releases/<id>/venv -> venvs/<requirements hash>
    current -> releases/<id>       switched atomically; everything live hangs off it
    shared/.env                    the operator's and the generated values (0600)
    shared/media/                  uploads, linked into every release
    shared/log/                    process logs
    shared/backups/                database backups
    shared/maintenance             present while maintenance mode is on
    .releasebook/                  releasebook's own state: lock, journal, history,
                                   uploaded artifacts, tools (installed once from
                                   their own archive), the process manager

Inside a release, everything that configures it is its own, so that the switch is the one
moment a release's configuration goes live and a rollback brings the older one back:
``.releasebook/env`` (the env file its processes load: ``shared/.env`` with the
inventory's values and secrets of this release, mode 0600), ``.releasebook/with-env``
(the launcher) and ``.releasebook/programs.conf`` (the process manager's program
definitions). ``.env`` links to ``shared/.env`` for apps that read such a file.

Paths take a release id or a requirements hash that may be a shell variable
(:class:`~releasebook.quoting.ShellVar`), so the same layout names concrete paths for a
run and ``"${RELEASE}"``-style paths for the rendered runbook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from releasebook.quoting import ShellVar

PathLike = Path | ShellVar
Key = str | ShellVar

# Inside a release directory.
MANIFEST = "release.json"
RELEASE_STATE = ".releasebook"
RELEASE_ENV = f"{RELEASE_STATE}/env"
SHARED_ENV_LINK = ".env"  # -> shared/.env, for apps that read a .env file themselves
LAUNCHER = f"{RELEASE_STATE}/with-env"
PROGRAMS = f"{RELEASE_STATE}/programs.conf"
STATIC = "staticfiles"


def keyed(base: Path, key: Key, suffix: str = "", prefix: str = "") -> PathLike:
    """``<base>/<prefix><key><suffix>``, where key may be a shell variable."""
    if isinstance(key, ShellVar):
        return ShellVar(key.name, suffix, prefix=f"{base}/{prefix}")
    return base / f"{prefix}{key}{suffix}"


def joined(path: PathLike, relative: str) -> PathLike:
    """``path/relative`` for a concrete or a symbolic path."""
    if isinstance(path, ShellVar):
        return path.with_suffix("/" + relative)
    return path / relative


@dataclass(frozen=True)
class HostLayout:
    """The paths of one deploy directory (absolute on the host)."""

    deploy: Path

    # --- what releases share ---------------------------------------------------------

    @property
    def releases(self) -> Path:
        return self.deploy / "releases"

    @property
    def current(self) -> Path:
        return self.deploy / "current"

    @property
    def venvs(self) -> Path:
        return self.deploy / "venvs"

    @property
    def shared(self) -> Path:
        return self.deploy / "shared"

    @property
    def env_file(self) -> Path:
        return self.shared / ".env"

    @property
    def media(self) -> Path:
        return self.shared / "media"

    @property
    def logs(self) -> Path:
        return self.shared / "log"

    @property
    def backups(self) -> Path:
        return self.shared / "backups"

    @property
    def maintenance_flag(self) -> Path:
        return self.shared / "maintenance"

    # --- releasebook's own state -----------------------------------------------------

    @property
    def state(self) -> Path:
        return self.deploy / ".releasebook"

    @property
    def lock_dir(self) -> Path:
        return self.state / "lock"

    @property
    def lock_info(self) -> Path:
        return self.lock_dir / "info.json"

    @property
    def steps_lock(self) -> Path:
        return self.state / "steps.lock"

    @property
    def journal(self) -> Path:
        return self.state / "journal"

    @property
    def history(self) -> Path:
        return self.state / "history.jsonl"

    @property
    def artifacts(self) -> Path:
        return self.state / "artifacts"

    @property
    def secrets_dir(self) -> Path:
        return self.state / "secrets"

    @property
    def tools(self) -> Path:
        return self.state / "tools"

    def tool(self, name: str) -> Path:
        return self.tools / "bin" / name

    @property
    def supervisor_conf(self) -> Path:
        return self.state / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.state / "supervisor.sock"

    @property
    def supervisor_pid(self) -> Path:
        return self.state / "supervisord.pid"

    @property
    def beat_schedule(self) -> Path:
        return self.state / "celerybeat-schedule"

    # --- one release ------------------------------------------------------------------

    def release(self, release_id: Key) -> PathLike:
        return keyed(self.releases, release_id)

    def in_release(self, release_id: Key, relative: str) -> PathLike:
        return joined(self.release(release_id), relative)

    def current_link(self, release_id: Key) -> PathLike:
        """The temporary link a switch renames over ``current``: one per release."""
        return keyed(self.deploy, release_id, prefix=".current-")

    def venv(self, requirements_hash: Key) -> PathLike:
        return keyed(self.venvs, requirements_hash)

    def artifact(self, release_id: Key) -> PathLike:
        return keyed(self.artifacts, release_id, ".tar.gz")

    def wheels(self, requirements_hash: Key) -> PathLike:
        return keyed(self.artifacts, requirements_hash, ".tar", "wheels-")

    def wheel_dir(self, requirements_hash: Key) -> PathLike:
        return keyed(self.state / "wheels", requirements_hash)

    def tools_archive(self, tools_hash: Key) -> PathLike:
        return keyed(self.artifacts, tools_hash, ".tar", "tools-")

    def tools_wheel_dir(self, tools_hash: Key) -> PathLike:
        return keyed(self.state / "wheels", tools_hash, prefix="tools-")

    def secrets_upload(self, release_id: Key) -> PathLike:
        return keyed(self.secrets_dir, release_id, ".env")
