"""What every task shares: a session per command that holds its masker, loads the
inventory, chooses the reporter, stops as for Ctrl-C on SIGTERM and SIGHUP, and turns
releasebook's errors into one line on stderr and an exit code.

A run on hosts also writes its full log (every command and its output, masked) to
``.releasebook/logs/<stamp>-<env>-<task>.log`` under the project, readable by its owner
only; the path is printed when the run fails."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import yaml
from invoke.exceptions import Exit

from releasebook.cli.output import ConsoleReporter, Fanout, JsonReporter
from releasebook.errors import Interrupted, ReleasebookError, UsageError
from releasebook.execute.events import Reporter
from releasebook.execute.parallel import stop_signals_interrupt
from releasebook.inventory import Environment, load_environment
from releasebook.inventory.load import ENV_FILE_NAME as ENV_NAME
from releasebook.inventory.secrets import readable_values
from releasebook.masking import Masker

INTERRUPTED_EXIT = 130
LOGS = Path(".releasebook") / "logs"


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

    def __init__(self, task: str = "") -> None:
        self.masker = Masker()
        self.task = task
        self.env_name = ""
        self.log_path: Path | None = None
        self._log: TextIO | None = None
        self._reporters: list[Fanout] = []

    def reporter(self, as_json: bool, *, verbose: bool = False) -> Reporter:
        """The terminal's reporter (JSON lines, or live lines: with each command and its
        output when ``verbose``), and the run's log file, always verbose."""
        shown: Reporter = (
            JsonReporter(self.masker) if as_json else ConsoleReporter(self.masker, verbose=verbose)
        )
        log = self.open_log()
        logged = [ConsoleReporter(self.masker, log, verbose=True)] if log else []
        reporter = Fanout(shown, *logged)
        self._reporters.append(reporter)
        return reporter

    def open_log(self) -> TextIO | None:
        """``.releasebook/logs/<stamp>-<env>-<task>.log`` (mode 0600), once per session;
        None when it cannot be written (the run goes on without it)."""
        if self._log is not None or self.log_path is not None:
            return self._log
        try:
            logs = project_root() / LOGS
            logs.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            base = f"{stamp}-{self.env_name or 'none'}-{self.task or 'run'}"
            for n in range(100):
                path = logs / (base + (f"-{n}" if n else "") + ".log")
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                self.log_path = path
                self._log = os.fdopen(fd, "w", encoding="utf-8")
                break
        except (OSError, UsageError) as exc:
            print(f"releasebook: warning: no log file: {exc}", file=sys.stderr)
        if self._log is not None:
            argv = " ".join(sys.argv[1:]) or self.task
            self._log.write(
                self.masker.screen(
                    f"# releasebook {argv}\n# started {datetime.now(UTC).isoformat()} "
                    f"in {Path.cwd()}\n"
                )
            )
            self._log.flush()
        return self._log

    def log_line(self, text: str) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.write(self.masker.screen(text) + "\n")
                self._log.flush()

    def close(self) -> None:
        for reporter in self._reporters:
            reporter.close()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def failed(self, text: str) -> str:
        """The error line, with where the full log is."""
        self.log_line(text)
        if self.log_path is None:
            return text
        try:
            shown = self.log_path.relative_to(Path.cwd())
        except ValueError:
            shown = self.log_path
        return f"{text}\nfull log: {shown}"

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
        self.env_name = environment.name
        # A release reads every secret it delivers; other commands mask those they can.
        self.masker.add(readable_values(environment))
        return environment

    def print(self, text: str) -> None:
        print(self.masker.screen(text))


@contextmanager
def session(task: str = "") -> Iterator[Session]:
    """Around a task's body: its session; errors become ``releasebook: ...`` (and where
    the run's log is) and the error's exit code, with secrets masked; SIGTERM and SIGHUP
    stop it as Ctrl-C does."""
    current = Session(task)
    try:
        with stop_signals_interrupt():
            yield current
    except ReleasebookError as exc:
        message = current.failed(f"releasebook: {current.masker.screen(str(exc))}")
        raise Exit(message, code=exc.exit_code) from None
    except Interrupted as exc:
        message = current.failed(f"releasebook: interrupted ({exc.signal_name})")
        raise Exit(message, code=INTERRUPTED_EXIT) from None
    finally:
        current.close()
