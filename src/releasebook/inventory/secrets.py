"""Secrets the inventory declares (``env.secrets``): read on the controller at each release
and delivered into each host's env file without ever being part of a command line.

The build step runs ``python -m releasebook.inventory.secrets OUT NAME=env:VARIABLE
NAME=file:PATH ...``: the command names where each value comes from, never the value, and
writes the values, shell-quoted, to OUT (mode 0600, under a temporary name until it is
complete). The upload step copies OUT into a directory only the deploy user can enter;
configuring the release merges it into the release's own env file (mode 0600) and
removes it. A release reads the values first, so a missing one stops it before any host
is contacted (exit 2), and every value is masked in releasebook's output from then on.
A value shorter than ``MIN_SECRET_LENGTH`` is refused: it could not be masked without
mangling ordinary words.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from releasebook.errors import UsageError
from releasebook.inventory.model import Environment, SecretSource
from releasebook.masking import MIN_SECRET_LENGTH, Masker

BUILD_OUT = Path(".releasebook") / "build" / "out"  # under the project root
_SPEC = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<kind>env|file):(?P<location>.+)", re.S)


def controller_file(root: Path, release_id: str) -> Path:
    """Where the build writes a release's secrets for the upload."""
    return root / BUILD_OUT / f"{release_id}.secrets"


def source_args(secrets: Mapping[str, SecretSource]) -> list[str]:
    """The build command's arguments: ``NAME=env:VARIABLE`` or ``NAME=file:PATH``."""
    return [f"{name}={source.kind}:{source.location}" for name, source in secrets.items()]


def read_value(name: str, source: SecretSource, root: Path) -> str:
    where = f"env.secrets.{name} ({source.describe()})"
    if source.kind == "env":
        value = os.environ.get(source.location)
        if value is None:
            raise UsageError(f"{where}: not set in the controller's environment")
    else:
        path = Path(source.location).expanduser()
        try:
            value = (path if path.is_absolute() else root / path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{where}: not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")  # as `echo VALUE > file` leaves it
    if not value.strip():
        raise UsageError(f"{where}: empty")
    if len(value) < MIN_SECRET_LENGTH:
        raise UsageError(
            f"{where}: {len(value)} characters; a secret needs at least {MIN_SECRET_LENGTH}, "
            "so that masking it in output cannot mangle ordinary words"
        )
    if "\n" in value or "\0" in value:
        raise UsageError(f"{where}: holds a line break; the env file has one line per variable")
    return value


def read_secrets(secrets: Mapping[str, SecretSource], root: Path) -> dict[str, str]:
    """Every declared value, or one UsageError naming each one that cannot be read."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for name, source in secrets.items():
        try:
            values[name] = read_value(name, source, root)
        except UsageError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError("cannot read the inventory's secrets:\n  " + "\n  ".join(problems))
    return values


def env_file_text(values: Mapping[str, str]) -> str:
    """Lines of the env file, which the hosts' launcher loads with ``. FILE``."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, mode 0600 from its first byte, under a temporary name
    until it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def readable_values(env: Environment) -> list[str]:
    """The declared values that can be read now (to mask them in commands that deliver
    none, such as status or rollback)."""
    values = []
    for name, source in env.env_file.secrets.items():
        try:
            values.append(read_value(name, source, env.root))
        except UsageError:
            continue
    return values


@contextmanager
def delivered(env: Environment, release_id: str, masker: Masker) -> Iterator[None]:
    """Around a release: its secrets are readable (or UsageError before anything is
    contacted) and masked in all output; the controller's copy is removed at the end,
    however the run ends."""
    masker.add(read_secrets(env.env_file.secrets, env.root).values())
    try:
        yield
    finally:
        for path in (controller_file(env.root, release_id),):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def _parse(specs: Sequence[str]) -> dict[str, SecretSource]:
    sources: dict[str, SecretSource] = {}
    for spec in specs:
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise UsageError(f"{spec!r}: expected NAME=env:VARIABLE or NAME=file:PATH")
        kind: Literal["env", "file"] = "env" if match["kind"] == "env" else "file"
        sources[match["name"]] = SecretSource(kind, match["location"])
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m releasebook.envsecrets OUT NAME=env:VAR|NAME=file:PATH ...")
        return 2
    try:
        values = read_secrets(_parse(args[1:]), Path.cwd())
    except UsageError as exc:
        print(f"releasebook: {exc}", file=sys.stderr)
        return exc.exit_code
    write_private(Path(args[0]), env_file_text(values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
