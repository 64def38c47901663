"""What is on a host, read once by the probe (``runbooks.bookkeeping.PROBE``), and the
decisions taken from it on the controller.

Everything here is read from a host, so it is untrusted: each line is parsed on its own,
values are validated (release ids, record fields, the lock's lease), and what cannot be
used is left out and named in ``problems``, never a traceback.

Each host keeps ``<deploy>/.releasebook/history.jsonl``: one JSON line per run, appended
in the order runs happened. The order releases were made and the rollback target come
from it, not from release ids, which a controller with a wrong clock would misorder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from releasebook.errors import UsageError
from releasebook.plan.target import PythonTarget
from releasebook.runbooks.bookkeeping import LockInfo

RELEASE_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{3}$")
BAD_OUTCOMES = ("rolled_back", "failed_after_switch", "rollback_failed", "retired")
GOOD_RELEASE = ("released",)
_STEP = re.compile(r"^[a-z_]+$")
UNDO = "undo"  # what the journal calls the undo steps a run ran
_JOURNAL_TIME = re.compile(r"^[0-9T:Z-]{10,25}$")
Record = dict[str, Any]


def validate_release_id(value: str) -> str:
    if not RELEASE_ID.fullmatch(value):
        raise UsageError(
            f"release id {value!r}: expected the form YYYYMMDD-HHMMSS-mmm "
            "(see `inv status` for the ids on each host)"
        )
    return value


def is_release_id(value: object) -> bool:
    return isinstance(value, str) and RELEASE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class JournalEntry:
    at: str
    action: str
    release: str
    step: str


@dataclass(frozen=True)
class HostFacts:
    host: str
    current: str | None = None
    releases: tuple[str, ...] = ()  # release ids on the host, sorted
    history: tuple[Record, ...] = ()  # oldest first
    venvs: tuple[str, ...] = ()  # requirements hashes with a complete virtualenv
    tools_ready: bool = False  # supervisord and uv are installed
    lock: LockInfo | None = None  # the environment lock's holder, when one is held
    journal: tuple[JournalEntry, ...] = ()
    problems: tuple[str, ...] = field(default=(), compare=False)
    python: PythonTarget | None = None  # the hosts' interpreter (app.python), if found

    def venv_ready(self, requirements_hash: str) -> bool:
        """The virtualenv of these requirements is complete: the wheels are not needed
        (the tools, which install it, come with their own archive)."""
        return requirements_hash in self.venvs

    def bad_releases(self) -> set[str]:
        """Releases that failed after going live: never a rollback target."""
        return {
            str(r["release"])
            for r in self.history
            if r.get("action") == "release" and r.get("outcome") in BAD_OUTCOMES
        }

    def _previous_of(self, release: str) -> str | None:
        """What was live before ``release`` went live, by its newest release record."""
        for record in reversed(self.history):
            if (
                record.get("action") == "release"
                and record.get("release") == release
                and record.get("outcome") in GOOD_RELEASE
            ):
                previous = record.get("previous")
                return previous if is_release_id(previous) else None
        return None

    def rollback_target(self) -> str | None:
        """The release that was live before the current one went live, following the
        history back past releases that failed or are gone. Without a history for the
        current release (made by an older releasebook), the newest good older id."""
        if self.current is None:
            return None
        bad = self.bad_releases()
        seen = {self.current}
        release: str | None = self.current
        found_history = False
        while release is not None:
            previous = self._previous_of(release)
            found_history = found_history or any(
                r.get("release") == release and r.get("action") == "release" for r in self.history
            )
            if previous is None or previous in seen:
                break
            if previous in self.releases and previous not in bad:
                return previous
            seen.add(previous)
            release = previous
        if found_history:
            return None
        older = [r for r in self.releases if r < self.current and r not in bad]
        return max(older) if older else None

    def made_order(self) -> list[str]:
        """The releases on the host, oldest first, in the order the history says they
        were made; those it does not mention (older tools) first, by id."""
        recorded: list[str] = []
        for record in self.history:
            release = record.get("release")
            if (
                record.get("action") == "release"
                and is_release_id(release)
                and release not in recorded
            ):
                recorded.append(str(release))
        on_disk = set(self.releases)
        known = [r for r in recorded if r in on_disk]
        unknown = sorted(on_disk - set(known))
        return unknown + known

    def cleanup(self, new: str, keep: int, protect: Sequence[str]) -> list[str]:
        """The releases cleanup removes once ``new`` is live: all but the newest
        ``keep`` (``new`` counted), never one in ``protect``."""
        order = [r for r in self.made_order() if r != new] + [new]
        removable = order[: max(0, len(order) - keep)]
        return [r for r in removable if r not in protect]

    def last_steps(self) -> dict[str, Any] | None:
        """The steps this host completed in the newest run it journaled, and the undo
        steps it ran for that run, if any."""
        entries = list(self.journal)
        undone: list[str] = []
        while entries and entries[-1].action == UNDO:
            undone.insert(0, entries.pop().step)
        if not entries:
            return None
        last = entries[-1]
        steps: list[str] = []
        for entry in reversed(entries):
            if (entry.action, entry.release) != (last.action, last.release):
                break
            steps.insert(0, entry.step)
        found = {"action": last.action, "release": last.release, "steps": steps, "at": last.at}
        return {**found, "undone": undone} if undone else found


def parse_probe(host: str, output: str) -> HostFacts:
    """The facts in the probe's output; whatever cannot be used is in ``problems``."""
    current: str | None = None
    releases: list[str] = []
    history: list[Record] = []
    venvs: list[str] = []
    tools_ready = False
    lock: LockInfo | None = None
    journal: list[JournalEntry] = []
    problems: list[str] = []
    bad_history = 0
    python: PythonTarget | None = None
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "current":
            if is_release_id(value):
                current = value
            elif value:
                problems.append("current points at something that is not a release id")
        elif key == "release" and is_release_id(value):
            releases.append(value)
        elif key == "venv" and re.fullmatch(r"[0-9a-f]{8,64}", value):
            venvs.append(value)
        elif key == "python":
            python = PythonTarget.parse(value)
        elif key == "tools":
            tools_ready = value == "ready"
        elif key == "lock":
            lock = LockInfo.parse(value)
        elif key == "journal":
            entry = _journal_entry(value)
            if entry is not None:
                journal.append(entry)
        elif key == "history":
            record = _record(value)
            if record is None:
                bad_history += 1
            else:
                history.append(record)
    if bad_history:
        problems.append(f"{bad_history} history line(s) are not releasebook records; ignored")
    return HostFacts(
        host,
        current,
        tuple(sorted(set(releases))),
        tuple(history),
        tuple(venvs),
        tools_ready,
        lock,
        tuple(journal),
        tuple(problems),
        python,
    )


def _record(line: str) -> Record | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("action"), str):
        return None
    release = record.get("release")
    if release not in (None, "") and not isinstance(release, str):
        return None
    return record


def _journal_entry(line: str) -> JournalEntry | None:
    parts = line.split()
    if len(parts) != 4:
        return None
    at, action, release, step = parts
    if not _JOURNAL_TIME.fullmatch(at) or not _STEP.fullmatch(action) or not _STEP.fullmatch(step):
        return None
    if not all(is_release_id(r) for r in release.split(",")):
        return None
    return JournalEntry(at, action, release, step)
