"""The rollback runbook, as data: switching to an older release is the release's own
switch, restart and verify with another release id; a host that had no release before
is taken out of service instead.

``inv rollback`` runs it on request, and a release that fails at or after its switch
runs it by itself, with each host's previous release as its target.
"""

from __future__ import annotations

from releasebook.runbooks.bookkeeping import LOCK, RECORD, UNLOCK
from releasebook.runbooks.model import Runbook, Step, cmd
from releasebook.runbooks.release import RESTART_WEB, RESTART_WORKERS, SWITCH, VERIFY

RETIRE = Step(
    name="retire",
    title="Take a host without an earlier release out of service",
    why=(
        "A host that served nothing before the failed release (newly added, or a first "
        "release everywhere) has nothing to go back to, and must not go on serving the "
        "release that failed: its programs are stopped, `current` is removed, and the "
        "process manager is told it has no programs. The failed release stays on disk for "
        "inspection; the next release makes the host serve again."
    ),
    phase="live",
    commands=(
        cmd("if {supervisorctl} pid >/dev/null 2>&1; then {supervisorctl} stop all; fi"),
        cmd("rm -f {current}"),
        cmd(
            "if {supervisorctl} pid >/dev/null 2>&1; then "
            "{supervisorctl} reread >/dev/null && {supervisorctl} update; fi"
        ),
    ),
    verify=(cmd("test ! -e {current}"),),
    verify_text="`current` is gone and no program runs.",
    undo_text="Release again once the cause is fixed.",
    timeout=600,
)

ROLLBACK = Runbook(
    name="rollback",
    title="Rollback",
    steps=(LOCK, RETIRE, SWITCH, RESTART_WEB, RESTART_WORKERS, VERIFY, RECORD, UNLOCK),
)
ROLLBACK_STEPS = ROLLBACK.steps
