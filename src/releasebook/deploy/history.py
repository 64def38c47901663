"""Read and show each host's ``<deploy>/.releasebook/history.jsonl``.

Lines are appended by releases, rollbacks and unlocks (``connection.record``). Shown newest
first, either per host or merged: one row per run, which wrote the same record (same
``at``, action and release) on every host it touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from releasebook.errors import HostUnreachable
from releasebook.execute.runner import run_scripts
from releasebook.inventory import Environment
from releasebook.plan.build import bookkeeping_script
from releasebook.runbooks.bookkeeping import READ_HISTORY
from releasebook.runbooks.release import RELEASE_STEP_NAMES
from releasebook.transport import Transport

Record = dict[str, Any]
SHA_LENGTH = 10


def parse_history(text: str) -> list[Record]:
    """The records of a JSON-lines history, oldest first; unreadable lines are skipped."""
    records: list[Record] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_history(
    env: Environment, transports: Mapping[str, Transport], limit: int = 50
) -> dict[str, list[Record]]:
    """The last ``limit`` records of every host, oldest first."""
    script = bookkeeping_script(env, READ_HISTORY, limit=max(1, limit))
    results = run_scripts(
        dict.fromkeys((h.name for h in env.hosts), script), transports, env.max_parallel
    )
    histories: dict[str, list[Record]] = {}
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            detail = result if isinstance(result, Exception) else result.tail()
            raise HostUnreachable(f"{host}: cannot read the history: {detail}")
        histories[host] = parse_history(result.stdout)
    return histories


# --- formatting -------------------------------------------------------------------------


def _seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s"


def slowest_steps(record: Mapping[str, Any], count: int = 3) -> str:
    steps = record.get("steps")
    if not isinstance(steps, dict):
        return ""
    timed = [(name, s) for name, s in steps.items() if isinstance(s, int | float)]
    timed.sort(key=lambda item: item[1], reverse=True)
    return ", ".join(f"{name} {_seconds(s)}" for name, s in timed[:count])


def every_step(record: Mapping[str, Any]) -> str:
    """Each step's duration, in the runbook's order (records keep them sorted by name)."""
    steps = record.get("steps")
    if not isinstance(steps, dict):
        return ""
    order = {name: index for index, name in enumerate(RELEASE_STEP_NAMES)}
    names = sorted(steps, key=lambda name: (order.get(name, len(order)), name))
    return ", ".join(f"{name} {_seconds(steps[name])}" for name in names)


def _notes(record: Mapping[str, Any], steps: bool) -> list[str]:
    notes = []
    if steps and (durations := every_step(record)):
        notes.append("steps: " + durations)
    if record.get("from"):
        automatic = "automatic, " if record.get("automatic") is True else ""
        notes.append(f"{automatic}from {record.get('from')}")
    reason = str(record.get("reason") or "").strip()
    if reason:
        notes.append("reason: " + reason.splitlines()[0])
    notes.extend(_backup_notes(record))
    holder = record.get("holder")
    if isinstance(holder, dict):
        notes.append(
            f"broke the lock of {holder.get('user')} on {holder.get('controller')} "
            f"(pid {holder.get('pid')}, `{holder.get('command')}` of {holder.get('release')}, "
            f"since {holder.get('started')})"
        )
    return notes


def _backup_notes(record: Mapping[str, Any]) -> list[str]:
    """A backup's name (of ``inv backup`` or one a release took), a restore's duration."""
    notes = []
    backup = record.get("backup")
    if isinstance(backup, dict):
        if backup.get("name"):
            notes.append(f"backup: {backup['name']}")
        elif backup.get("skipped"):
            notes.append(f"no backup: {backup['skipped']}")
    if isinstance(record.get("restore_seconds"), int | float):
        notes.append(f"restore took {_seconds(record['restore_seconds'])}")
    return notes


def _row(record: Mapping[str, Any], result: str, slowest: int) -> list[str]:
    return [
        str(record.get("at") or "-"),
        str(record.get("by") or "-"),
        str(record.get("action") or "-"),
        str(record.get("release") or "-"),
        str(record.get("git_sha") or "-")[:SHA_LENGTH],
        result,
        _seconds(record.get("duration")),
        slowest_steps(record, slowest) or "-",
    ]


HEADER = ["when", "who", "action", "release", "sha", "result", "duration", "slowest steps"]


def _table(rows: Sequence[tuple[list[str], list[str]]], header: list[str]) -> str:
    widths = [
        max(len(r[i]) for r in [header, *(row for row, _ in rows)]) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header)]
    for cells, notes in rows:
        out.append(line(cells))
        out.extend("    " + note for note in notes)
    return "\n".join(out)


def _newest_first(records: Sequence[Record]) -> list[Record]:
    return sorted(records, key=lambda r: str(r.get("at") or ""), reverse=True)


def format_history(
    histories: Mapping[str, Sequence[Record]],
    *,
    merged: bool = True,
    slowest: int = 3,
    steps: bool = False,
) -> str:
    """A table, newest first: one row per run (``merged``), or a table per host. With
    ``steps``, each run's line is followed by every step's duration."""
    if not any(histories.values()):
        return "no history yet"
    if not merged:
        sections = []
        for host, records in histories.items():
            rows = [
                (_row(r, str(r.get("outcome") or "-"), slowest), _notes(r, steps))
                for r in _newest_first(records)
            ]
            sections.append(f"{host}:\n" + (_table(rows, HEADER) if rows else "no history yet"))
        return "\n\n".join(sections)
    runs: dict[tuple[str, str, str], list[tuple[str, Record]]] = {}
    for host, records in histories.items():
        for record in records:
            key = (str(record.get("at")), str(record.get("action")), str(record.get("release")))
            runs.setdefault(key, []).append((host, record))
    rows = []
    for key in sorted(runs, reverse=True):
        members = runs[key]
        outcomes = {str(r.get("outcome") or "-") for _, r in members}
        if len(outcomes) == 1:
            result = outcomes.pop()
        else:
            result = ", ".join(f"{h} {r.get('outcome') or '-'}" for h, r in members)
        hosts = "all" if len(members) == len(histories) else ",".join(h for h, _ in members)
        first = members[0][1]
        rows.append(([*_row(first, result, slowest), hosts], _notes(first, steps)))
    return _table(rows, [*HEADER, "hosts"])


def json_lines(histories: Mapping[str, Sequence[Record]]) -> list[str]:
    """One JSON object per record, newest first, each naming its ``host``: for ``jq``
    and programs that read a line at a time."""
    rows = [(host, record) for host, records in histories.items() for record in records]
    rows.sort(key=lambda row: str(row[1].get("at") or ""), reverse=True)
    return [json.dumps({**record, "host": host}, sort_keys=True) for host, record in rows]
