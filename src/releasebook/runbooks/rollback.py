"""The rollback runbook, as data: switching to an older release is the release's own
switch, restart and verify with another release id; a host that had no release before
is taken out of service instead.

``inv rollback`` runs it on request, and a release that fails at or after its switch
runs it by itself, with each host's previous release as its target (its switch to
verify only). ``--maintenance`` adds the maintenance pair around everything that
changes the hosts; ``--migrate`` with migrations to unapply adds the backup and the
unapply.
"""

from __future__ import annotations

from releasebook.gate.command import MIGRATION_STATE_IN_RELEASE
from releasebook.runbooks.backup import BACKUP_BEFORE_UNAPPLY
from releasebook.runbooks.bookkeeping import LOCK, RECORD, UNLOCK
from releasebook.runbooks.maintenance import (
    ROLLBACK_MAINTENANCE_OFF,
    ROLLBACK_MAINTENANCE_ON,
    ROLLBACK_MAINTENANCE_STEPS,
)
from releasebook.runbooks.model import Runbook, Step, cmd
from releasebook.runbooks.release import RESTART_WEB, RESTART_WORKERS, SWITCH, VERIFY

SCHEMA = Step(
    name="schema",
    title="Compare the schema with the release to go back to",
    why=(
        "Rolling back switches code; the database keeps what the newer releases' "
        "migrations did. Run from the live release (it has those migrations' files), "
        "with the release to go back to as the argument, this lists the applied "
        "migrations that release does not have, in the order they would be unapplied, "
        "and whether each can be (RunPython without reverse code, RunSQL without "
        "reverse SQL cannot). Nothing is changed. Without `--migrate` they stay applied "
        "and the older code must tolerate them (the migration lint of the readiness gate "
        "is what makes that safe); with `--migrate` the next step unapplies them, "
        "and an irreversible one refuses the rollback. Without `--migrate`, where the "
        "migrate host's history shows the database still at the schema the live release "
        "left (its release is the newest record that can change the schema, or a "
        "rollback to it that kept nothing) and the release to go back to left the same "
        "applied leaf migrations, nothing newer can be applied: the step does not run, "
        "and the history records the answer as the history's."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(
        cmd(
            "cd {live_dir} && {live_launcher} venv/bin/python "
            f"{MIGRATION_STATE_IN_RELEASE} plan-to {{release_dir}} --json"
        ),
    ),
    reports=True,
    verify_text="It printed the JSON list of newer migrations (an empty one: nothing to undo).",
    undo_text="Nothing to undo: it only reads.",
    timeout=300,
)

UNAPPLY = Step(
    name="unapply",
    title="Unapply the newer migrations (--migrate)",
    why=(
        "With `--migrate`, and only when every newer migration is reversible: each app is "
        "migrated back to the last migration the older release has, from the live release "
        "(which has the files), newest first, before any code is switched. Unapplying "
        "drops what those migrations added: data in an added column goes with it (the "
        "backup step before this one keeps it, where backups are taken)."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(
        cmd(
            "cd {live_dir} && {live_launcher} venv/bin/python manage.py migrate --noinput "
            "{app} {target}",
            each="unapply",
        ),
    ),
    verify=(cmd("cd {release_dir} && {launcher} venv/bin/python manage.py migrate --check"),),
    verify_text=(
        "`manage.py migrate --check` of the release to go back to exits 0: the schema is "
        "exactly what it expects."
    ),
    undo=(cmd("cd {live_dir} && {live_launcher} venv/bin/python manage.py migrate --noinput"),),
    undo_text="Apply them again from the live release; nothing was switched yet.",
    timeout=3600,
)

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
        cmd("if {supervisorctl} pid >/dev/null 2>&1; then {supervisorctl} update; fi"),
    ),
    verify=(cmd("test ! -e {current}"),),
    verify_text="`current` is gone and no program runs.",
    undo_text="Release again once the cause is fixed.",
    timeout=600,
)

ROLLBACK = Runbook(
    name="rollback",
    title="Rollback",
    steps=(
        LOCK,
        SCHEMA,
        ROLLBACK_MAINTENANCE_ON,
        BACKUP_BEFORE_UNAPPLY,
        UNAPPLY,
        RETIRE,
        SWITCH,
        RESTART_WEB,
        RESTART_WORKERS,
        VERIFY,
        ROLLBACK_MAINTENANCE_OFF,
        RECORD,
        UNLOCK,
    ),
)
ROLLBACK_STEPS = ROLLBACK.steps

# What `inv rollback` leaves out of the runbook: `retire` (every host it rolls back has a
# release to go to), the unapply and its backup unless `--migrate` found migrations to
# unapply, the maintenance pair unless `--maintenance`.
UNAPPLY_STEPS = (BACKUP_BEFORE_UNAPPLY.name, UNAPPLY.name)


def rollback_steps(*, unapply: bool, maintenance: bool) -> tuple[str, ...]:
    """The steps of an ``inv rollback``, in order."""
    left_out = {RETIRE.name}
    if not unapply:
        left_out.update(UNAPPLY_STEPS)
    if not maintenance:
        left_out.update(ROLLBACK_MAINTENANCE_STEPS)
    return tuple(name for name in ROLLBACK.step_names if name not in left_out)
