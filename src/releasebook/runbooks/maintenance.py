"""Maintenance mode as steps: the flag file ``shared/maintenance`` on every web host.

``inv maintenance on|off`` runs :data:`MAINTENANCE_ON` / :data:`MAINTENANCE_OFF`;
``inv release --maintenance`` runs its own pair around its migrations (on before
``migrate``, off once verified; an aborted release removes the flag as its undo), and
``inv rollback --maintenance`` its pair around the unapply and the switch.
"""

from __future__ import annotations

from releasebook.runbooks.model import Step, cmd

MAINTENANCE_ON = Step(
    name="maintenance_on",
    title="Turn maintenance mode on",
    why=(
        "Creates the flag file `shared/maintenance` on every web host. The releasebook "
        "middleware (`MaintenanceMiddleware`; the launcher exports the file's path as "
        "`RELEASEBOOK_MAINTENANCE_FILE`) then answers every request with a 503 page and "
        "`Retry-After`, `/readyz` says `maintenance` (503), and `/healthz` stays 200 so "
        "the processes are not restarted. Running processes see it at once; nothing is "
        "restarted."
    ),
    roles=frozenset({"web"}),
    commands=(cmd("mkdir -p {shared}"), cmd("date -u +%Y-%m-%dT%H:%M:%SZ > {maintenance_flag}")),
    verify=(cmd("test -f {maintenance_flag}"),),
    verify_text="The flag file exists on every web host; the site answers 503.",
    undo=(cmd("rm -f {maintenance_flag}"),),
    undo_text="Remove the flag file: `inv maintenance off`.",
    timeout=60,
)

MAINTENANCE_OFF = Step(
    name="maintenance_off",
    title="Turn maintenance mode off",
    why=(
        "Removes the flag file `shared/maintenance` from every web host: the site serves "
        "again at once, and `/readyz` answers from its checks."
    ),
    roles=frozenset({"web"}),
    phase="finish",
    commands=(cmd("rm -f {maintenance_flag}"),),
    verify=(cmd("test ! -e {maintenance_flag}"),),
    verify_text="The flag file is gone from every web host; the site answers 200.",
    undo_text="Nothing to undo; `inv maintenance on` puts the site back in maintenance.",
    timeout=60,
)

# The release's own pair, with `inv release --maintenance`: on before migrate, off once
# the new release is verified; an aborted release removes the flag as its undo.
RELEASE_MAINTENANCE_ON = Step(
    name="maintenance_on",
    title="Maintenance mode on (with --maintenance)",
    why=(
        "Only with `inv release --maintenance`, for migrations the live release cannot "
        "run against: every web host answers 503 with `Retry-After` from here until the "
        "new release is verified. " + MAINTENANCE_ON.why.split(". ", 1)[1]
    ),
    roles=MAINTENANCE_ON.roles,
    commands=MAINTENANCE_ON.commands,
    verify=MAINTENANCE_ON.verify,
    verify_text=MAINTENANCE_ON.verify_text,
    undo=MAINTENANCE_ON.undo,
    undo_text="An aborted release removes the flag again (this undo).",
    timeout=60,
)
RELEASE_MAINTENANCE_OFF = Step(
    name="maintenance_off",
    title="Maintenance mode off (with --maintenance)",
    why=(
        "Only with `inv release --maintenance`: the new release answered its readiness "
        "probe (releasebook's probe is let through maintenance), so the site opens again."
    ),
    roles=MAINTENANCE_OFF.roles,
    phase="finish",
    commands=MAINTENANCE_OFF.commands,
    verify=MAINTENANCE_OFF.verify,
    verify_text=MAINTENANCE_OFF.verify_text,
    undo_text="`inv maintenance off --env=ENV` if it failed on a host.",
    timeout=60,
)
RELEASE_MAINTENANCE_STEPS = (RELEASE_MAINTENANCE_ON.name, RELEASE_MAINTENANCE_OFF.name)

# `inv rollback --maintenance`: on before the backup, the unapply and the switch, off once
# the release gone back to is verified. A rollback that fails before its switch removes
# the flag (this undo); one that fails at or after it leaves the site in maintenance and
# says so.
ROLLBACK_MAINTENANCE_ON = Step(
    name="maintenance_on",
    title="Maintenance mode on (with --maintenance)",
    why=(
        "Only with `inv rollback --maintenance`, for a schema change or a switch the site "
        "must not serve through: every web host answers 503 with `Retry-After` from here "
        "until the release gone back to is verified. " + MAINTENANCE_ON.why.split(". ", 1)[1]
    ),
    roles=MAINTENANCE_ON.roles,
    commands=MAINTENANCE_ON.commands,
    verify=MAINTENANCE_ON.verify,
    verify_text=MAINTENANCE_ON.verify_text,
    undo=MAINTENANCE_ON.undo,
    undo_text=(
        "A rollback that fails before its switch removes the flag again (this undo); one "
        "that fails at or after the switch leaves it, says so, and `inv maintenance off "
        "--env=ENV` removes it once the hosts serve."
    ),
    timeout=60,
)
ROLLBACK_MAINTENANCE_OFF = Step(
    name="maintenance_off",
    title="Maintenance mode off (with --maintenance)",
    why=(
        "Only with `inv rollback --maintenance`: the release gone back to answered its "
        "readiness probe (releasebook's probe is let through maintenance), so the site "
        "opens again."
    ),
    roles=MAINTENANCE_OFF.roles,
    phase="finish",
    commands=MAINTENANCE_OFF.commands,
    verify=MAINTENANCE_OFF.verify,
    verify_text=MAINTENANCE_OFF.verify_text,
    undo_text=(
        "The rollback warns naming the hosts where it failed: `inv maintenance off "
        "--env=ENV` there."
    ),
    timeout=60,
)
ROLLBACK_MAINTENANCE_STEPS = (ROLLBACK_MAINTENANCE_ON.name, ROLLBACK_MAINTENANCE_OFF.name)
