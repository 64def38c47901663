"""The Jinja2 setup every rendered document shares: strict about undefined names,
trailing newlines kept, no HTML escaping (the output is markdown)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2


def markdown_environment(
    template_dir: Path, filters: Mapping[str, Callable[..., Any]]
) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # markdown, not HTML  # noqa: S701
    )
    env.filters.update(filters)
    return env
