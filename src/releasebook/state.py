"""What is on a host: the live release, the releases kept, and the history of runs.

Each host keeps ``<deploy>/.releasebook/history.jsonl``: one JSON line per release or
rollback with who, when, git sha, the outcome and why it failed; and
``<deploy>/.releasebook/journal``: a line per step the host completed (time, action,
release, step), written by the step script itself, so it holds even when the run that
started the step was cut off before it could record an outcome.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.quoting import quote
from releasebook.reporting import redact

RELEASE_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{3}$")
BAD_OUTCOMES = ("rolled_back", "failed_after_switch")


def validate_release_id(value: str) -> str:
    if not RELEASE_ID.fullmatch(value):
        raise UsageError(
            f"release id {value!r}: expected the form YYYYMMDD-HHMMSS-mmm "
            "(see `inv status` for the ids on each host)"
        )
    return value


@dataclass(frozen=True)
class HostState:
    host: str
    current: str | None
    releases: tuple[str, ...]
    history: tuple[dict[str, Any], ...] = field(default=())
    venvs: tuple[str, ...] = ()  # requirements hashes with a complete virtualenv
    tools_ready: bool = False  # supervisord and uv are installed
    lock: str | None = None  # the environment lock's info.json, when one is held
    journal: tuple[str, ...] = ()  # the journal's last lines

    def last_steps(self) -> dict[str, Any] | None:
        """The steps this host completed in the newest run it journaled."""
        entries = [parts for parts in (line.split() for line in self.journal) if len(parts) == 4]
        if not entries:
            return None
        at, action, release, _ = entries[-1]
        steps: list[str] = []
        for _, each_action, each_release, step in reversed(entries):
            if (each_action, each_release) != (action, release):
                break
            steps.insert(0, step)
        return {"action": action, "release": release, "steps": steps, "at": at}

    def venv_ready(self, requirements_hash: str) -> bool:
        return self.tools_ready and requirements_hash in self.venvs

    def bad_releases(self) -> set[str]:
        return {
            str(r.get("release"))
            for r in self.history
            if r.get("action") == "release" and r.get("outcome") in BAD_OUTCOMES
        }

    def rollback_target(self) -> str | None:
        """The newest good release older than the live one."""
        if self.current is None:
            return None
        bad = self.bad_releases()
        older = [r for r in self.releases if r < self.current and r not in bad]
        return max(older) if older else None


def deploy_dir(env: Environment) -> Path:
    return env.deploy_path if env.deploy_path.is_absolute() else env.root / env.deploy_path


def probe_commands(env: Environment) -> tuple[str, ...]:
    deploy = quote(deploy_dir(env))
    return (
        f"cd {deploy} 2>/dev/null || exit 0",
        'if [ -L current ]; then printf \'current=%s\\n\' "$(basename "$(readlink current)")"; fi',
        "if [ -d releases ]; then ls -1 releases | sed 's/^/release=/'; fi",
        "if [ -f .releasebook/history.jsonl ]; then "
        "tail -n 200 .releasebook/history.jsonl | sed 's/^/history=/'; fi",
        "for done in venvs/*/.complete; do "
        'if [ -e "$done" ]; then printf \'venv=%s\\n\' "$(basename "$(dirname "$done")")"; fi; '
        "done",
        "if [ -x .releasebook/tools/bin/supervisord ] && [ -x .releasebook/tools/bin/uv ]; then "
        "echo tools=ready; fi",
        "if [ -f .releasebook/journal ]; then "
        "tail -n 40 .releasebook/journal | sed 's/^/journal=/'; fi",
        "if [ -f .releasebook/lock/info.json ]; then "
        "printf 'lock=%s\\n' \"$(tr -d '\\n' < .releasebook/lock/info.json)\"; fi",
    )


def parse_probe(host: str, output: str) -> HostState:
    current: str | None = None
    releases: list[str] = []
    history: list[dict[str, Any]] = []
    venvs: list[str] = []
    tools_ready = False
    lock: str | None = None
    journal: list[str] = []
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "current" and value:
            current = value
        elif key == "release" and RELEASE_ID.match(value):
            releases.append(value)
        elif key == "venv":
            venvs.append(value)
        elif key == "tools":
            tools_ready = value == "ready"
        elif key == "lock":
            lock = value
        elif key == "journal":
            journal.append(value)
        elif key == "history":
            try:
                record = json.loads(value)
            except ValueError:
                continue
            if isinstance(record, dict):
                history.append(record)
    return HostState(
        host,
        current,
        tuple(sorted(releases)),
        tuple(history),
        tuple(venvs),
        tools_ready,
        lock,
        tuple(journal),
    )


def history_commands(env: Environment, record: dict[str, Any]) -> tuple[str, ...]:
    state = deploy_dir(env) / ".releasebook"
    line = redact(json.dumps(record, sort_keys=True))
    return (
        f"mkdir -p {quote(state)}",
        f"printf '%s\\n' {quote(line)} >> {quote(state / 'history.jsonl')}",
    )
