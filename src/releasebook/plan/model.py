"""What a plan is: for each step of a runbook, for each host, the exact commands.

The runner runs exactly these, ``--dry-run`` prints them and the renderer documents them.
A plan is either concrete (a real run: release ids, tokens and the hosts' facts known)
or symbolic (the rendered runbook: run-specific values are shell variables the operator
sets, ``"${RELEASE}"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from releasebook.errors import TemplateError
from releasebook.inventory import Environment, Host
from releasebook.plan.target import PythonTarget
from releasebook.quoting import Raw, ShellVar, render_command
from releasebook.runbooks import bookkeeping as book
from releasebook.runbooks.model import Runbook, Step

PlanKind = Literal["release", "rollback", "ops", "backup", "restore", "restore_drill"]
PathLike = Path | ShellVar
CONTROLLER = "controller"


@dataclass(frozen=True, kw_only=True)
class ReleaseInfo:
    """What identifies one release; written to its ``release.json`` manifest."""

    release_id: str
    git_sha: str
    requirements_hash: str
    created_by: str
    created_at: str

    def manifest(self) -> dict[str, str]:
        return {
            "release_id": self.release_id,
            "git_sha": self.git_sha,
            "requirements_hash": self.requirements_hash,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where the app's code comes from on the controller."""

    repo: Path  # git top level
    subdir: str  # the app's directory inside the repo
    cache: Path  # wheelhouse cache, shared by every build with the same requirements
    python: str  # the controller's interpreter, used to build wheels
    python_version: str  # its full version, for the wheel cache key
    python_abi: str  # "cpython 3.11 linux-x86_64": what a host's interpreter must be
    # The hosts' Python when the controller cannot build wheels for it (from the probe):
    # the wheelhouse is then downloaded for it. None: the controller builds it.
    target: PythonTarget | None = None
    # The hosts' full Python version (from the probe): environment markers are evaluated
    # for it when the wheels are fetched, and it keys them. None: the controller's.
    hosts_version: str | None = None


@dataclass(frozen=True)
class PlannedUpload:
    local: PathLike
    remote: PathLike
    skip_if: str | None  # shown where the host's state is unknown; never run


@dataclass(frozen=True)
class HttpProbe:
    url: str
    host_header: str
    forwarded_proto: str
    expect_release: str
    deadline: float
    # Where users fetch static files (``http://host:port``); None: static files not checked.
    static_base: str | None = None
    # An ASGI app's WebSocket check (health.websocket_path): ws://<bind><path>, opened
    # with the same Host header and the Origin a browser on the site sends.
    websocket_url: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class HostWork:
    host: Host | None  # None: the controller
    commands: tuple[str, ...]
    uploads: tuple[PlannedUpload, ...]
    verify: tuple[str, ...]
    undo: tuple[str, ...]
    probe: HttpProbe | None
    timeout: float = 600

    @property
    def target(self) -> str:
        return self.host.name if self.host else CONTROLLER


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    number: int
    work: tuple[HostWork, ...]

    def on(self, target: str) -> HostWork | None:
        return next((w for w in self.work if w.target == target), None)


@dataclass(frozen=True)
class Frame:
    """How one host runs a run's step scripts (``runbooks.bookkeeping``): under its step
    lock, behind the fence (unless ``fence`` is empty), each step under its time limit,
    its start marked with the run's ``marker`` and its completion journaled."""

    values: Mapping[str, object]  # the host's frame values: state, steps_lock, journal
    fence: tuple[str, ...]
    action: str
    release: str | ShellVar  # a shell variable in the runbook
    marker: str | ShellVar

    def mark(self, step: str) -> str | ShellVar:
        if isinstance(self.marker, ShellVar):
            return self.marker.with_suffix(f" {step}")
        return f"{self.marker} {step}"

    @property
    def prefix(self) -> str:
        """What starts each marker line of this run's output."""
        return f"{self.marker} "

    def _entry(self, step: str) -> str | ShellVar:
        if isinstance(self.release, ShellVar):
            return ShellVar(self.release.name, f" {step}", prefix=f"{self.action} ")
        return f"{self.action} {self.release} {step}"

    def unfenced(self, action: str | None = None) -> Frame:
        return replace(self, fence=(), action=action or self.action)

    def script(self, parts: Sequence[tuple[str, Sequence[str], float]]) -> str:
        """One host script running ``parts`` (step name, commands, timeout) in order."""
        lines = ["set -eu", *self.fence]
        for name, commands, timeout in parts:
            values = {**self.values, "marker": self.mark(name), "timeout": int(timeout)}
            lines.append(render_command(book.MARK, values))
            body = _literal("\n".join(("set -eu", *commands)), book.STEP_END)
            lines.append(render_command(book.RUN_STEP, {**values, "step_body": body}))
            entry = self._entry(name)
            lines.append(render_command(book.JOURNAL, {**values, "journal_entry": entry}))
        lines.append(render_command(book.MARK, {**self.values, "marker": self.mark("-")}))
        body = _literal("\n".join(lines), book.SCRIPT_END)
        return render_command(book.SCRIPT, {**self.values, "body": body}) + "\n"


def _literal(text: str, end: str) -> Raw:
    """Text passed through a quoted heredoc ending at ``end``: literal, unless a line of
    it is ``end`` itself, which no plan may hold."""
    if end in (line.strip() for line in text.splitlines()):
        raise TemplateError(f"a command holds the line {end!r}, which ends its script")
    return Raw(text)


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    runbook: Runbook
    environment: Environment
    release_id: str
    steps: tuple[PlannedStep, ...]
    frames: Mapping[str, Frame] = field(default_factory=dict)
    # Each host's template values, for what is filled in at run time (the record, the
    # lock's renewal) from the same definitions.
    values: Mapping[str, Mapping[str, object]] = field(default_factory=dict, repr=False)

    def step(self, name: str) -> PlannedStep:
        for planned in self.steps:
            if planned.step.name == name:
                return planned
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(p.step.name == name for p in self.steps)

    def after(self, name: str) -> tuple[PlannedStep, ...]:
        """The steps after ``name``."""
        names = [p.step.name for p in self.steps]
        return self.steps[names.index(name) + 1 :]
