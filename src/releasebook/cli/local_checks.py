"""What ``--dry-run`` checks on this machine, without contacting a host: what the real run
would stop on at once. Each check says what it found; problems are one usage error."""

from __future__ import annotations

import os
from pathlib import Path

from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.inventory.secrets import read_secrets


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def local_checks(env: Environment) -> list[str]:
    """The checks that passed, one line each; UsageError naming every one that failed."""
    passed: list[str] = []
    problems: list[str] = []
    secrets = env.env_file.secrets
    try:
        read_secrets(secrets, env.root)
        passed.append(f"{len(secrets)} declared secret(s) readable")
    except UsageError as exc:
        problems.append(str(exc))
    source = env.root / env.app.source
    for name in ("manage.py", env.app.requirements):
        path = source / name
        if path.is_file():
            passed.append(f"{_shown(path, env.root)} present")
        else:
            problems.append(f"app.source: {_shown(path, env.root)} is missing")
    seen: set[Path] = set()
    for host in env.hosts:
        if host.transport != "ssh":
            continue
        files: tuple[tuple[str, Path | None], ...] = (
            ("ssh.known_hosts", host.ssh.known_hosts),
            ("ssh.identity_file", host.ssh.identity_file),
        )
        for key, pinned in files:
            if pinned is None or pinned in seen or str(pinned) == "/dev/null":
                continue
            seen.add(pinned)
            if not pinned.is_file():
                problems.append(f"hosts.{host.name}.{key}: {_shown(pinned, env.root)} is missing")
            elif not os.access(pinned, os.R_OK):
                problems.append(f"hosts.{host.name}.{key}: {_shown(pinned, env.root)} unreadable")
            else:
                passed.append(f"{key} {_shown(pinned, env.root)} readable")
    if problems:
        raise UsageError(
            f"--dry-run of {env.name}: the real run would stop at once:\n  " + "\n  ".join(problems)
        )
    return passed
