"""What every task shares: a session per command that holds its masker, loads the
inventory, chooses the reporter, stops as for Ctrl-C on SIGTERM and SIGHUP, and turns
releasebook's errors into one line on stderr and an exit code."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from invoke.exceptions import Exit

from releasebook.cli.output import ConsoleReporter, JsonReporter
from releasebook.errors import Interrupted, ReleasebookError, UsageError
from releasebook.execute.events import Reporter
from releasebook.execute.parallel import stop_signals_interrupt
from releasebook.inventory import Environment, load_environment
from releasebook.inventory.load import ENV_FILE_NAME as ENV_NAME
from releasebook.inventory.secrets import readable_values
from releasebook.masking import Masker

INTERRUPTED_EXIT = 130


def project_root() -> Path:
    """RELEASEBOOK_ROOT, else the nearest directory upwards holding ``inventories/``."""
    configured = os.environ.get("RELEASEBOOK_ROOT")
    if configured:
        return Path(configured).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "inventories").is_dir():
            return candidate
    raise UsageError(
        f"no inventories/ directory in {here} or above; run from a releasebook project"
    )


def environments(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "inventories").glob("*.yml"))


def default_env(root: Path) -> str:
    """The environment when ``--env`` is not given: RELEASEBOOK_ENV, else ``env`` in the
    project's ``releasebook.yaml`` (``releasebook init`` writes it), else none."""
    if os.environ.get("RELEASEBOOK_ENV"):
        return os.environ["RELEASEBOOK_ENV"]
    config = root / "releasebook.yaml"
    if not config.is_file():
        return ""
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{config}: not valid YAML: {exc}") from None
    value = data.get("env", "") if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise UsageError(f"{config}: env: expected an environment name")
    return value


class Session:
    """One command: its masker, handed to everything that prints or records."""

    def __init__(self) -> None:
        self.masker = Masker()

    def reporter(self, as_json: bool) -> Reporter:
        return JsonReporter(self.masker) if as_json else ConsoleReporter(self.masker)

    def load(self, env: str) -> Environment:
        root = project_root()
        names = ", ".join(environments(root)) or "none yet"
        env = env or default_env(root)
        if not env:
            raise UsageError(f"--env is required; the environments are: {names}")
        if not ENV_NAME.fullmatch(env):
            raise UsageError(
                f"--env {env!r}: expected a name made of letters, digits, '-' and '_'; "
                f"the environments are: {names}"
            )
        if not (root / "inventories" / f"{env}.yml").is_file():
            raise UsageError(
                f"--env={env}: no inventories/{env}.yml; the environments are: {names}"
            )
        environment = load_environment(env, root)
        # A release reads every secret it delivers; other commands mask those they can.
        self.masker.add(readable_values(environment))
        return environment

    def print(self, text: str) -> None:
        print(self.masker.screen(text))


@contextmanager
def session() -> Iterator[Session]:
    """Around a task's body: its session; errors become ``releasebook: ...`` and the
    error's exit code, with secrets masked; SIGTERM and SIGHUP stop it as Ctrl-C does."""
    current = Session()
    try:
        with stop_signals_interrupt():
            yield current
    except ReleasebookError as exc:
        raise Exit(f"releasebook: {current.masker.screen(str(exc))}", code=exc.exit_code) from None
    except Interrupted as exc:
        raise Exit(f"releasebook: interrupted ({exc.signal_name})", code=INTERRUPTED_EXIT) from None
