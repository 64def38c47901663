"""How the controller ships and runs the gate: the script's source, where it goes in the
artifact, and the command line for each host.

The build copies :data:`GATE_SOURCE` into the artifact as :data:`GATE_IN_RELEASE`; the
plan then runs :data:`GATE_COMMAND` (a ``releasebook.steps`` template, filled and quoted
by ``releasebook.plan``) with ``gate_options`` as a ``Raw`` value.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from releasebook.checks.registry import unknown_ids
from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.quoting import quote

GATE_SOURCE = Path(__file__).with_name("gate.py")
GATE_IN_RELEASE = ".releasebook/gate.py"

# Placeholders are releasebook.plan host values, except {gate_options} (gate_options()).
GATE_COMMAND = (
    "cd {release_dir} && {with_env} venv/bin/python "
    + GATE_IN_RELEASE
    + " --json --expect-settings {settings_module} --wsgi {wsgi}"
    " --min-free-mb {min_free_mb} --deploy-path {deploy}{gate_options}"
)


def validate_skips(skips: Iterable[str]) -> tuple[str, ...]:
    """The ids to skip, in order and once each; UsageError (exit 2) names unknown ones."""
    ids = tuple(dict.fromkeys(skips))
    unknown = unknown_ids(ids)
    if unknown:
        raise UsageError("--skip: unknown readiness check(s): " + ", ".join(unknown))
    return ids


def gate_options(env: Environment, skip: Iterable[str] = ()) -> str:
    """`` --require NAME ... --skip ID ...``, shell-quoted, for a ``Raw`` plan value."""
    words: list[str] = []
    for name in env.env_file.required:
        words += ["--require", quote(name)]
    for check_id in validate_skips(skip):
        words += ["--skip", quote(check_id)]
    return "".join(f" {word}" for word in words)


def gate_argv(
    env: Environment,
    deploy_path: Path,
    *,
    skip: Iterable[str] = (),
    python: str = "venv/bin/python",
) -> tuple[str, ...]:
    """The same command as an argument vector (unquoted), to run from the release directory."""
    argv = [
        python,
        GATE_IN_RELEASE,
        "--json",
        "--expect-settings",
        env.app.settings_module,
        "--wsgi",
        env.app.wsgi,
        "--min-free-mb",
        str(env.min_free_mb),
        "--deploy-path",
        str(deploy_path),
    ]
    for name in env.env_file.required:
        argv += ["--require", name]
    for check_id in validate_skips(skip):
        argv += ["--skip", check_id]
    return tuple(argv)
