"""The typed environment an inventory describes: hosts with their layered settings, the
app, health probe, env file and hooks. Built by :mod:`releasebook.inventory.load`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class SshSettings:
    user: str
    port: int
    identity_file: Path | None
    known_hosts: Path
    connect_timeout: float
    gateway: str | None = None  # "[user@]host[:port]", comma-separated hops, or "none"
    # Keys the inventory set (any layer): these beat ~/.ssh/config, defaults do not.
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WebSettings:
    port: int
    workers: int
    timeout: int
    # gunicorn --preload: the master imports the app once and forks booted workers.
    preload: bool = True
    # How long a restarting gunicorn master lets requests and open connections (an ASGI
    # app's WebSockets) finish before its workers are killed; defaults to ``timeout``.
    graceful_timeout: int | None = None

    @property
    def drain(self) -> int:
        return self.timeout if self.graceful_timeout is None else self.graceful_timeout


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int
    stop_timeout: int


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    roles: tuple[str, ...]
    transport: str
    ssh: SshSettings
    web: WebSettings
    worker: WorkerSettings
    bind: str
    # env.values set for this host's roles and for the host itself (roles.<role>.env.values,
    # hosts.<name>.env.values): over the environment's env.values, the host's last.
    env_values: Mapping[str, str] = field(default_factory=dict)

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class AppSettings:
    source: Path  # relative to the project root
    settings_module: str
    wsgi: str | None  # exactly one of wsgi and asgi is set
    requirements: str
    celery_app: str | None
    python: str
    asgi: str | None = None

    @property
    def server_app(self) -> str:
        """The application the web servers load: ``module:callable``."""
        return self.asgi or self.wsgi or ""


@dataclass(frozen=True)
class HealthSettings:
    path: str
    host_header: str
    timeout: float
    forwarded_proto: str
    check_static: bool = True  # verify also fetches one collected CSS file of the release
    websocket_path: str | None = None  # verify also opens a WebSocket here (ASGI apps)


@dataclass(frozen=True)
class SecretSource:
    """Where the controller reads a secret at each release: one of its own environment
    variables (``env``), or a file (``file``: ``~`` or relative to the project root)."""

    kind: Literal["env", "file"]
    location: str

    def describe(self) -> str:
        return f"${self.location}" if self.kind == "env" else f"file {self.location}"


@dataclass(frozen=True)
class EnvFileSettings:
    required: tuple[str, ...]
    values: Mapping[str, str]
    generate: tuple[str, ...]
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)


@dataclass(frozen=True)
class MigrationSettings:
    """``migrations:`` in the inventory. ``acknowledge`` maps ``app.migration`` to why the
    readiness gate's migration findings for it may pass (recorded with the release)."""

    acknowledge: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupSettings:
    """``backup:`` in the inventory. ``dir``: where backups go on the migrate host
    (relative to the deploy path, or absolute); ``keep``: how many are kept;
    ``before_migrate``: a backup before ``migrate`` when it has migrations to apply
    (None: for PostgreSQL only)."""

    dir: str = "shared/backups"
    keep: int = 7
    before_migrate: bool | None = None


@dataclass(frozen=True)
class Environment:
    name: str
    file: Path
    root: Path
    app: AppSettings
    deploy_path: Path  # relative paths (local transport only) are under the project root
    keep_releases: int
    hosts: tuple[Host, ...]
    health: HealthSettings
    env_file: EnvFileSettings
    hooks: Mapping[tuple[str, str], tuple[str, ...]]
    max_parallel: int
    min_free_mb: int
    gate_skips: Mapping[str, str]  # readiness check id -> why this environment skips it
    timeouts: Mapping[str, float] = field(default_factory=dict)  # step name -> seconds
    migrations: MigrationSettings = field(default_factory=MigrationSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    # deploy.linked_dirs / linked_files: paths in each release linked to shared/<path>
    linked_dirs: tuple[str, ...] = ("media",)
    linked_files: tuple[str, ...] = ()
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def hosts_with(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.has(role))

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)
