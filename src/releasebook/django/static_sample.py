"""One collected static file of this release, named by its URL, for verify to fetch.

Verify asks for it through the path users take (nginx where it serves, else the app)
and requires a CSS answer, so a release whose static files are not served fails verify
instead of rendering pages unstyled.
"""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage

PREFERRED = "admin/css/base.css"


def _collected_css(root: Path) -> str | None:
    if (root / PREFERRED).is_file():
        return PREFERRED
    for path in sorted(root.rglob("*.css")):
        if path.is_file():
            return path.relative_to(root).as_posix()
    return None


@functools.cache
def static_sample() -> str | None:
    """The URL path of one collected CSS file, or None when nothing is collected."""
    root = getattr(settings, "STATIC_ROOT", None)
    if not root or not Path(root).is_dir():
        return None
    name = _collected_css(Path(root))
    if name is None:
        return None
    try:
        url = staticfiles_storage.url(name)
    except ValueError:  # a manifest storage that has no entry for it
        return None
    return str(url)
