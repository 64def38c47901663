"""Run ``ansible-playbook playbooks/provision.yml`` for an environment.

Everything ansible-playbook reads is written to a private directory (mode 0700) that is
removed afterwards: the generated inventory, the variables, an ``ansible.cfg`` and, when
the inventory declares secrets provisioning needs (the PostgreSQL password), a variables
file of mode 0600 that only ``-e @file`` names, so no secret is on a command line. Ansible's
per-task, per-host progress is printed as it comes, masked; a failure names the host and
the task that failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from releasebook.errors import ReleasebookError, UsageError
from releasebook.inventory.model import Environment
from releasebook.inventory.secrets import read_value
from releasebook.masking import Masker
from releasebook.provision.inventory import (
    ansible_inventory,
    environment_vars,
    playbook_dir,
    templates_dir,
)
from releasebook.provision.settings import ProvisionSettings

PLAYBOOK = "provision.yml"
_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<task>.*)\] \**$")
_FAILED = re.compile(r"^(?:fatal|failed): \[(?P<host>[^\]]+)\]")
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")

ANSIBLE_CFG = """[defaults]
host_key_checking = True
retry_files_enabled = False
interpreter_python = /usr/bin/python3
roles_path = {roles}
stdout_callback = default
display_skipped_hosts = False
forks = {forks}
timeout = {timeout}

[ssh_connection]
pipelining = True
control_path_dir = {work}/cp
"""


class ProvisionFailed(ReleasebookError):
    """ansible-playbook failed: ``failures`` lists (host, task) as it reported them."""

    exit_code = 1


@dataclass
class ProvisionResult:
    returncode: int
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(counts.get("changed", 0) for counts in self.recap.values())


def find_ansible_playbook() -> str:
    beside = Path(sys.executable).with_name("ansible-playbook")
    if beside.is_file():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise UsageError(
            "ansible-playbook not found; install it with `pip install 'releasebook[ansible]'`"
        )
    return found


def read_provision_secrets(
    env: Environment, settings: ProvisionSettings, masker: Masker
) -> dict[str, str]:
    """The secrets provisioning delivers, read on the controller and masked from now on."""
    values: dict[str, str] = {}
    if settings.postgresql is not None:
        name = settings.postgresql.password
        values["releasebook_postgresql_password"] = read_value(
            name, env.env_file.secrets[name], env.root
        )
    masker.add(values.values())
    return values


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="releasebook-provision-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def command(playbook: Path, work: Path, *, check: bool, tags: str, secrets: bool) -> list[str]:
    args = [find_ansible_playbook(), "-i", str(work / "inventory.json"), str(playbook)]
    args += ["-e", f"@{work / 'vars.json'}"]
    if secrets:
        args += ["-e", f"@{work / 'secrets.json'}"]
    if check:
        args.append("--check")
    if tags:
        args += ["--tags", tags]
    return args


def provision(
    env: Environment,
    settings: ProvisionSettings,
    *,
    masker: Masker,
    out: Callable[[str], None],
    check: bool = False,
    tags: str = "",
) -> ProvisionResult:
    """Run the provisioning playbook on every ssh host of ``env``; raise on failure."""
    secrets = read_provision_secrets(env, settings, masker)
    playbooks = playbook_dir(env.root)
    variables = environment_vars(env, settings)
    variables["releasebook_templates"] = str(templates_dir(env.root))
    with workdir() as work:
        (work / "cp").mkdir()
        (work / "inventory.json").write_text(json.dumps(ansible_inventory(env, settings)))
        (work / "vars.json").write_text(json.dumps(variables))
        if secrets:
            _write_private(work / "secrets.json", json.dumps(secrets))
        (work / "ansible.cfg").write_text(
            ANSIBLE_CFG.format(
                roles=playbooks / "roles",
                forks=max(1, min(env.max_parallel, 20)),
                timeout=max(1, int(env.hosts[0].ssh.connect_timeout)),
                work=work,
            )
        )
        environ = {
            **os.environ,
            "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONUNBUFFERED": "1",
        }
        args = command(playbooks / PLAYBOOK, work, check=check, tags=tags, secrets=bool(secrets))
        result = _run(args, environ, env.root, masker, out)
    if result.returncode != 0:
        if result.failures:
            where = "; ".join(f"host {h} at task '{t}'" for h, t in result.failures)
        else:
            where = f"ansible-playbook exited {result.returncode}"
        raise ProvisionFailed(f"provision of {env.name} failed: {where}")
    return result


def _run(
    args: list[str],
    environ: dict[str, str],
    cwd: Path,
    masker: Masker,
    out: Callable[[str], None],
) -> ProvisionResult:
    task = "(before any task)"
    failures: list[tuple[str, str]] = []
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            out(masker.screen(line))
            if match := _TASK.match(line):
                task = match["task"]
            elif match := _FAILED.match(line):
                if (match["host"], task) not in failures:
                    failures.append((match["host"], task))
            elif line.startswith("PLAY RECAP"):
                in_recap = True
            elif in_recap and (match := _RECAP.match(line.strip())):
                recap[match["host"]] = {
                    key: int(value)
                    for key, value in (pair.split("=") for pair in match["counts"].split())
                }
        returncode = proc.wait()
    return ProvisionResult(returncode, recap, failures)
