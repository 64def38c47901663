"""The Jinja2 setup every rendered document shares: strict about undefined names,
trailing newlines kept, no HTML escaping (the output is markdown)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

# The templates releasebook ships; a project overrides one by file name in its own
# ``releasebook/templates/`` (not ``templates/``, which a Django project has for itself).
PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PROJECT_TEMPLATES = Path("releasebook") / "templates"


def template_dirs(root: Path) -> list[Path]:
    """Where a project's templates are looked up, first match wins."""
    return [root / PROJECT_TEMPLATES, PACKAGE_TEMPLATES]


def markdown_environment(
    template_dir: Path | Sequence[Path], filters: Mapping[str, Callable[..., Any]]
) -> jinja2.Environment:
    dirs = [template_dir] if isinstance(template_dir, Path) else list(template_dir)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # markdown, not HTML  # noqa: S701
    )
    env.filters.update(filters)
    return env
