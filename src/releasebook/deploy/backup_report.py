"""What a backup step's report says (the helper's JSON line), for the history and the
operator: shared by ``inv backup``, the backup a release takes before migrating and the
one ``inv rollback --migrate`` takes before unapplying."""

from __future__ import annotations

import json
from typing import Any

from releasebook.errors import ReleaseFailed
from releasebook.execute.outcome import Outcome

SUMMARY_KEYS = ("name", "file", "sha256", "size", "engine", "release_id", "git_sha", "label")
Report = dict[str, Any]


def parse_report(target: str, stdout: str) -> Report:
    """The helper's JSON report: its last line that is a JSON object (host data: untrusted)."""
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "ok" in data:
            return data
    raise ReleaseFailed(f"{target}: db_backup.py printed no report")


def summary(backup: object) -> dict[str, Any]:
    """What the history keeps of a backup's manifest."""
    if not isinstance(backup, dict):
        return {}
    return {k: backup[k] for k in SUMMARY_KEYS if isinstance(backup.get(k), str | int)}


def backup_report(outcomes: list[Outcome], before: str = "migrating") -> tuple[dict[str, Any], str]:
    """What a backup step left, for the history, and a line for the operator; ``before``:
    what a skipped backup was not taken before."""
    for outcome in outcomes:
        try:
            report = parse_report(outcome.target, outcome.stdout)
        except ReleaseFailed as exc:
            return {"error": str(exc)}, f"backup: {exc}"
        if report.get("skipped"):
            reason = str(report["skipped"])[:200]
            return {"skipped": reason}, f"no backup before {before}: {reason}"
        kept = summary(report.get("backup"))
        kept["removed"] = [str(r) for r in report.get("removed") or [] if isinstance(r, str)]
        line = (
            f"backup {kept.get('name')} on {outcome.target}: {kept.get('size')} bytes, "
            f"sha256 {str(kept.get('sha256'))[:16]}..."
        )
        return kept, line
    return {"skipped": "no migrate host"}, "no backup: no migrate host"
