"""The identity of the running release, from the release.json manifest releasebook writes.

The manifest sits in the project root of each release (settings.BASE_DIR, or the
RELEASEBOOK_MANIFEST setting) with the keys release_id, git_sha, created_by, created_at
and requirements_hash. It is read once per process.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Release:
    release_id: str
    git_sha: str
    created_by: str | None = None
    created_at: str | None = None
    requirements_hash: str | None = None


# A checkout that releasebook did not deploy, e.g. a developer's working tree.
DEV_RELEASE = Release(release_id="dev", git_sha="unknown")


def read_manifest(path: Path) -> Release:
    """The release described by ``path``; DEV_RELEASE when the file does not exist.

    A manifest that exists but is unreadable or malformed raises ImproperlyConfigured:
    serving under a wrong release id would defeat the deploy's verification step.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DEV_RELEASE
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"cannot read release manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f"release manifest {path} must hold a JSON object")
    for key in ("release_id", "git_sha"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ImproperlyConfigured(f"release manifest {path} lacks a string {key!r}")

    def optional(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return Release(
        release_id=data["release_id"],
        git_sha=data["git_sha"],
        created_by=optional("created_by"),
        created_at=optional("created_at"),
        requirements_hash=optional("requirements_hash"),
    )


def manifest_path() -> Path:
    configured = getattr(settings, "RELEASEBOOK_MANIFEST", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "release.json"


@functools.cache
def current_release() -> Release:
    return read_manifest(manifest_path())
