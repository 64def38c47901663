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
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.plan.model import ReleaseInfo, Source
from releasebook.plan.target import PythonTarget
from releasebook.shipped import django_requirement, tools_key, wheelhouse_key


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
        python_abi=PythonTarget.controller().abi,
    )


def requirements_hash(env: Environment, source: Source, sha: str) -> str:
    """What keys the wheelhouse and the hosts' virtualenvs for commit ``sha``."""
    requirements_path = f"{source.subdir}/{env.app.requirements}".lstrip("/")
    requirements = _git_bytes(source.repo, "show", f"{sha}:{requirements_path}")
    _refuse_controller_requirement(requirements, requirements_path)
    # The runbook's REQ_HASH line computes the same: the file, then the rest of the key.
    key = wheelhouse_key(_wheels_python(source))
    return hashlib.sha256(requirements + key.encode()).hexdigest()[:16]


def tools_hash(source: Source) -> str:
    """What keys the tools' wheelhouse and archive (supervisor and uv): the tools and the
    hosts' Python; the runbook's TOOLS_HASH line computes the same."""
    return hashlib.sha256(tools_key(_wheels_python(source)).encode()).hexdigest()[:16]


def _wheels_python(source: Source) -> str:
    """The Python wheels are fetched for, as it keys them: environment markers can name
    its full version, and downloaded wheels are for its platform too."""
    if source.target is not None:
        return source.target.describe()
    return source.hosts_version or source.python_version


def for_hosts(
    env: Environment, source: Source, info: ReleaseInfo, hosts: Mapping[str, PythonTarget]
) -> tuple[Source, ReleaseInfo]:
    """The source and release once the hosts' Python is known (their probe): the wheels
    are fetched with its environment markers, and built by the controller when it runs
    them, else downloaded for the first host's platform and Python."""
    target = next(iter(hosts.values()), None)
    if target is None:
        return source, info
    native = target.runs_wheels_of(PythonTarget.controller())
    if native and target.version == source.python_version:
        return source, info
    source = replace(source, target=None if native else target, hosts_version=target.version)
    return source, replace(info, requirements_hash=requirements_hash(env, source, info.git_sha))


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` (a sha, tag, branch, ``HEAD~2``) names; UsageError if none."""
    if not ref.strip() or ref.startswith("-"):
        raise UsageError(f"--ref {ref!r}: expected a git commit, tag or branch")
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except UsageError:
        raise UsageError(f"--ref {ref}: no such commit, tag or branch in {repo}") from None


def new_release(
    env: Environment,
    source: Source,
    note: Callable[[str], None] | None = None,
    *,
    ref: str = "HEAD",
) -> ReleaseInfo:
    """A new release of the checkout's ``ref`` (HEAD by default); ``note`` hears of
    uncommitted changes when that is HEAD."""
    sha = resolve_ref(source.repo, ref)
    digest = requirements_hash(env, source, sha)
    dirty = _git(source.repo, "status", "--porcelain", "--", source.subdir or ".")
    if dirty and note is not None and ref == "HEAD":
        note(
            f"note: uncommitted changes under {source.subdir or '.'} are not released; "
            f"releasing commit {sha[:12]}"
        )
    now = datetime.now(UTC)
    return ReleaseInfo(
        release_id=now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}",
        git_sha=sha,
        requirements_hash=digest,
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
