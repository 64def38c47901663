"""What is being released: the app's git checkout, the release id and the hash that keys
the wheelhouse and the hosts' virtualenvs."""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.plan.model import ReleaseInfo, Source
from releasebook.plan.values import TOOLS_REQUIREMENTS
from releasebook.shipped import django_requirement, wheelhouse_key


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise UsageError("git is not installed on the controller") from None
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"git {' '.join(args)} in {cwd}: {exc.stderr.strip()}") from None
    return done.stdout.strip()


def _git_bytes(cwd: Path, *args: str) -> bytes:
    """``git`` output as it is, for hashing (``_git`` strips it)."""
    _git(cwd, *args)  # its errors, as UsageError
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=True).stdout


# A requirement naming the controller package: its SSH and templating libraries would
# land in the production virtualenv (the build adds releasebook-django instead).
_CONTROLLER_REQUIREMENT = re.compile(rb"^\s*releasebook\s*(\[[^\]]*\])?\s*([<>=!~;@]|$)")


def _refuse_controller_requirement(requirements: bytes, path: str) -> None:
    for number, line in enumerate(requirements.splitlines(), start=1):
        if _CONTROLLER_REQUIREMENT.match(line):
            raise UsageError(
                f"{path}:{number}: {line.decode(errors='replace').strip()!r} would install "
                "releasebook's controller (SSH and templating libraries) on the hosts; "
                f"remove it: every release installs {django_requirement()}, releasebook's "
                "Django app alone"
            )


def find_source(env: Environment, cache: Path | None = None) -> Source:
    """The git checkout holding the app. The wheel cache is RELEASEBOOK_CACHE when set."""
    app_dir = env.root / env.app.source
    if cache is None and os.environ.get("RELEASEBOOK_CACHE"):
        cache = Path(os.environ["RELEASEBOOK_CACHE"])
    repo = Path(_git(app_dir, "rev-parse", "--show-toplevel"))
    subdir = _git(app_dir, "rev-parse", "--show-prefix").rstrip("/")
    return Source(
        repo=repo,
        subdir=subdir,
        cache=cache or env.root / ".releasebook" / "cache",
        python=sys.executable,
        python_version=platform.python_version(),
        python_abi=f"{sys.implementation.name} {sys.version_info.major}.{sys.version_info.minor}",
    )


def new_release(
    env: Environment, source: Source, note: Callable[[str], None] | None = None
) -> ReleaseInfo:
    """A new release of the checkout's HEAD; ``note`` hears of uncommitted changes."""
    sha = _git(source.repo, "rev-parse", "HEAD")
    requirements_path = f"{source.subdir}/{env.app.requirements}".lstrip("/")
    requirements = _git_bytes(source.repo, "show", f"{sha}:{requirements_path}")
    _refuse_controller_requirement(requirements, requirements_path)
    # The runbook's REQ_HASH line computes the same: the file, then the rest of the key.
    # Wheels depend on the interpreter too: environment markers can name its full version.
    key = wheelhouse_key(source.python_version, TOOLS_REQUIREMENTS)
    digest = hashlib.sha256(requirements + key.encode()).hexdigest()
    dirty = _git(source.repo, "status", "--porcelain", "--", source.subdir or ".")
    if dirty and note is not None:
        note(
            f"note: uncommitted changes under {source.subdir or '.'} are not released; "
            f"releasing commit {sha[:12]}"
        )
    now = datetime.now(UTC)
    return ReleaseInfo(
        release_id=now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}",
        git_sha=sha,
        requirements_hash=digest[:16],
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
