"""The failure policy of a release, as a pure function: what a step's outcomes mean.

+-----------------------------+------------------+-----------------------------------------+
| what happened               | where            | what the release does                   |
+=============================+==================+=========================================+
| every host ok               | any step         | go on (``stop_after`` reached: finish   |
|                             |                  | the preflight, undoing its candidate)   |
| a host failed               | prepare phase    | abort: undo every step begun, newest    |
|                             |                  | first; nothing live changed             |
| a host failed               | live phase       | roll every host back to what it served  |
|                             |                  | before (a host that served nothing is   |
|                             |                  | taken out of service), and verify       |
| a host failed               | finish phase     | warn: the release is live and verified  |
| the lock was lost somewhere | before live      | undo its own new release, stop          |
| the lock was lost somewhere | live or later    | stop: another run may own the hosts now |
| interrupted (Ctrl-C, TERM)  | before live      | abort, as for a failure                 |
| interrupted                 | live or later    | roll back, as for a failure             |
+-----------------------------+------------------+-----------------------------------------+

"Live" starts with the first step of the live phase: from then on something users reach
may have changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from releasebook.execute.outcome import Outcome
from releasebook.runbooks.bookkeeping import LOCK_LOST
from releasebook.runbooks.model import Phase


class Action(Enum):
    CONTINUE = "continue"
    FINISH_PREFLIGHT = "finish_preflight"
    ABORT = "abort"
    ROLL_BACK = "roll_back"
    WARN = "warn"
    LOCK_LOST_UNDO = "lock_lost_undo"
    LOCK_LOST_STOP = "lock_lost_stop"


def decide(
    step: str,
    phase: Phase,
    failed: Sequence[Outcome],
    *,
    live: bool,
    stop_after: str | None = None,
) -> Action:
    """What to do after ``step`` (of ``phase``) with these failed outcomes; ``live``:
    whether a live-phase step has started in this run."""
    if any(o.exited == LOCK_LOST for o in failed):
        return Action.LOCK_LOST_STOP if live else Action.LOCK_LOST_UNDO
    if not failed:
        return Action.FINISH_PREFLIGHT if step == stop_after else Action.CONTINUE
    if phase == "finish":
        return Action.WARN
    if phase == "prepare" and not live:
        return Action.ABORT
    return Action.ROLL_BACK


def on_interrupt(*, live: bool) -> Action:
    """Ctrl-C, SIGTERM or SIGHUP: the same rule as a failure where the run stopped."""
    return Action.ROLL_BACK if live else Action.ABORT
