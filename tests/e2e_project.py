"""A throwaway releasebook project for end-to-end tests: the example app in its own git
repository, an inventory pointing at simulated hosts, and helpers to run `inv` on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from simhosts import SimFleet

REPO = Path(__file__).resolve().parents[1]
INV = str(Path(sys.executable).with_name("inv"))
WHEEL_CACHE = REPO / ".releasebook" / "cache"
HOST_HEADER = "app.test"
# Hosts see the controller's interpreter (simhosts shares it read-only), so the wheels
# built on the controller match the hosts' Python exactly.
CONTROLLER_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")


@dataclass
class Project:
    root: Path
    env_name: str

    def _environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "RELEASEBOOK_ROOT": str(self.root),
            "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
        }

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """`inv ARGS` started, its stdout and stderr pipes to read as it runs."""
        return subprocess.Popen(
            [INV, *args],
            cwd=self.root,
            env=self._environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def inv(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [INV, *args],
            cwd=self.root,
            env=self._environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def commit(self, message: str) -> str:
        git = ["git", "-C", str(self.root), "-c", "user.email=e2e@test", "-c", "user.name=e2e"]
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", message], check=True)
        return subprocess.run(
            [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()

    def status(self) -> dict[str, Any]:
        done = self.inv("status", f"--env={self.env_name}", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def make_project(
    tmp: Path, inventory: str, env_name: str = "e2e", source: str = "example"
) -> Project:
    root = tmp / "project"
    shutil.copytree(
        REPO / source,
        root / source,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles", "var"),
    )
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / "inventories").mkdir()
    (root / "inventories" / f"{env_name}.yml").write_text(inventory)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    project = Project(root, env_name)
    project.commit("example app")
    return project


def ssh_inventory(
    fleet: SimFleet,
    *,
    database_url: str,
    broker_url: str,
    timeout: int = 60,
    roles: dict[str, list[str]] | None = None,
    extra_env: dict[str, str] | None = None,
) -> str:
    """An inventory for the fleet's hosts; one host with every role unless ``roles``."""
    roles = roles or {fleet.hosts[0].name: ["web", "worker", "beat", "migrate"]}
    port = fleet.hosts[0].port
    hosts = "".join(
        f"  {name}:\n    address: {fleet.host(name).address}\n    roles: [{', '.join(r)}]\n"
        for name, r in roles.items()
    )
    values = {
        "DJANGO_ALLOWED_HOSTS": HOST_HEADER,
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST_HEADER}",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        **(extra_env or {}),
    }
    env_values = "".join(f'    {k}: "{v}"\n' for k, v in values.items())
    return f"""
app:
  source: example
  settings: config.settings.prod
  wsgi: config.wsgi:application
  celery_app: config
  python: {CONTROLLER_PYTHON}
deploy:
  path: /srv/app
  keep_releases: 3
ssh:
  user: root
  port: {port}
  identity_file: {fleet.client_key}
  known_hosts: {fleet.known_hosts}
  connect_timeout: 5
web:
  workers: 2
worker:
  concurrency: 1
  stop_timeout: 30
health:
  host_header: {HOST_HEADER}
  timeout: {timeout}
env:
  required: [DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL, CELERY_BROKER_URL]
  generate: [DJANGO_SECRET_KEY]
  values:
{env_values}hosts:
{hosts}"""


def readyz(bind: str) -> httpx.Response:
    return httpx.get(
        f"http://{bind}/readyz",
        headers={"Host": HOST_HEADER, "X-Forwarded-Proto": "https"},
        # Long enough for a request that waits in the socket's backlog while a just
        # restarted gunicorn boots on a loaded machine.
        timeout=30,
    )


def history(srv: Path, deploy: str = "app") -> list[dict[str, Any]]:
    path = srv / deploy / ".releasebook" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def released_id(done: subprocess.CompletedProcess[str]) -> str:
    for line in done.stdout.splitlines():
        if line.startswith("OK: released "):
            return line.split()[2]
    raise AssertionError("no release id in output:\n" + done.stdout + done.stderr)


SUPERVISOR_STATUS = (
    "/srv/app/.releasebook/tools/bin/supervisorctl -c /srv/app/.releasebook/supervisord.conf status"
)


def settled_status(fleet: SimFleet, host: str, command: str = SUPERVISOR_STATUS) -> str:
    """``supervisorctl status`` on ``host`` once no program is STOPPING: a restart leaves
    the master that served finishing its requests, and it exits soon after."""
    deadline = time.monotonic() + 60
    while True:
        status = fleet.run(host, f"{command} || true").stdout
        if "STOPPING" not in status:
            return status
        assert time.monotonic() < deadline, f"still stopping after 60 s:\n{status}"
        time.sleep(0.1)
