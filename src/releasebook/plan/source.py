"""What is being released: the app's git checkout, the release id and the hash that keys
the wheelhouse and the hosts' virtualenvs."""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
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

# releasebook's own source tree (src/releasebook/ -> the project holding pyproject.toml).
TOOL_SOURCE = Path(__file__).resolve().parents[3]


def _tool_digest() -> str:
    """Changes with what of releasebook runs on hosts (its Django app, its dependencies),
    so the wheelhouse and the hosts' virtualenvs are rebuilt when that changes."""
    digest = hashlib.sha256((TOOL_SOURCE / "pyproject.toml").read_bytes())
    for path in sorted((TOOL_SOURCE / "src" / "releasebook" / "django").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(TOOL_SOURCE)).encode() + path.read_bytes())
    return digest.hexdigest()


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
        tool_source=TOOL_SOURCE,
    )


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
    requirements_path = f"{source.subdir}/{env.app.requirements}".lstrip("/")
    requirements = _git(source.repo, "show", f"{sha}:{requirements_path}")
    # Wheels depend on the interpreter too: environment markers can name its full version.
    key = "\n".join((requirements, *TOOLS_REQUIREMENTS, source.python_version, _tool_digest()))
    digest = hashlib.sha256(key.encode()).hexdigest()
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
        requirements_hash=digest[:16],
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
