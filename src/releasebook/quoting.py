"""The one place where values become shell words.

Step commands are format templates such as ``"mkdir -p {release_dir}"``. Every value
substituted into a template goes through :func:`quote`, so a path with spaces, quotes
or ``$()`` reaches the shell as one literal word and is never executed.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

from releasebook.errors import TemplateError


@dataclass(frozen=True)
class ShellVar:
    """A value the operator sets in their shell, used when rendering a runbook.

    ``ShellVar("RELEASE", prefix="/srv/app/releases/")`` renders as
    ``"/srv/app/releases/${RELEASE}"``: expanded by the shell, still one word.
    """

    name: str
    suffix: str = ""
    prefix: str = ""

    def joinpath(self, *parts: str) -> ShellVar:
        return ShellVar(self.name, self.suffix + "".join("/" + p for p in parts), self.prefix)

    def __truediv__(self, part: str) -> ShellVar:
        return self.joinpath(part)

    def with_suffix(self, suffix: str) -> ShellVar:
        return ShellVar(self.name, self.suffix + suffix, self.prefix)

    def __str__(self) -> str:
        return f"{self.prefix}${{{self.name}}}{self.suffix}"


def _in_double_quotes(text: str) -> str:
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return text


class Raw(str):
    """A fragment the code assembled from already-quoted parts; substituted as is."""


Value = str | int | float | PurePath | ShellVar


def quote(value: Value) -> str:
    if isinstance(value, ShellVar):
        name = "${" + value.name + "}"
        return f'"{_in_double_quotes(value.prefix)}{name}{_in_double_quotes(value.suffix)}"'
    if isinstance(value, bool):
        raise TypeError("booleans have no shell form; pass a string")
    return shlex.quote(str(value))


class _QuotingFormatter(string.Formatter):
    def format_field(self, value: object, format_spec: str) -> str:
        if isinstance(value, Raw):
            return str(value)
        if not isinstance(value, str | int | float | PurePath | ShellVar):
            raise TypeError(f"cannot put {type(value).__name__} into a shell command")
        return quote(value)


_formatter = _QuotingFormatter()


def render_command(template: str, values: Mapping[str, object]) -> str:
    """Fill a command template, quoting every substituted value. A name the values do
    not hold is a TemplateError naming it and the template, never a bare KeyError."""
    try:
        return _formatter.vformat(template, (), values)
    except KeyError as exc:
        first = template.strip().splitlines()[0] if template.strip() else template
        raise TemplateError(
            f"command template {first!r} names {{{exc.args[0]}}}, which is not a plan value"
        ) from None
