"""Day-2 operations, as data: maintenance mode, the app's processes, its logs, commands
run with a release's environment, and the incident checks of ``inv doctor``.

Like release and rollback, each is a :class:`~releasebook.runbooks.model.Runbook` whose
steps hold the exact commands; :mod:`releasebook.plan.ops` fills them in for the live
release of each host, ``inv ... --dry-run`` prints them and ``runbooks/<env>/operations.md``
and ``incident.md`` render them. They run outside the release lock and leave no journal
line: none of them makes or removes a release.
"""

from __future__ import annotations

from releasebook.runbooks.maintenance import MAINTENANCE_OFF, MAINTENANCE_ON
from releasebook.runbooks.model import Runbook, Step, cmd
from releasebook.runbooks.release import RESTART_WEB, RESTART_WORKERS

# --- maintenance ----------------------------------------------------------------------


MAINTENANCE = {
    "on": Runbook("maintenance-on", "Maintenance on", (MAINTENANCE_ON,)),
    "off": Runbook("maintenance-off", "Maintenance off", (MAINTENANCE_OFF,)),
}

# --- the app's processes ----------------------------------------------------------------

# Prints the state of the host's programs and exits 0 only where they are up: of the two
# web masters one serves between restarts (RUNNING) and the other waits for the next
# release (STOPPED); every other program is RUNNING. supervisord down fails.
PROGRAMS_UP = (
    "out=$({supervisorctl} status {role_programs} 2>&1) || true\n"
    "printf '%s\\n' \"$out\"\n"
    'printf \'%s\\n\' "$out" | awk \'$1 ~ /^web:/ {{ web++; if ($2 == "RUNNING") up++; '
    'else if ($2 != "STOPPED" && $2 != "STOPPING") bad++; next }} $2 != "RUNNING" {{ bad++ }} '
    "END {{ exit !(bad == 0 && (web == 0 || up > 0)) }}'"
)

APP_STATUS = Step(
    name="app_status",
    title="Show the app's processes",
    why=(
        "Asks supervisord on each host for the state of the programs its roles run "
        "(`web:*` for web, `worker`, `beat`). It exits non-zero where one is not up: "
        "one web master RUNNING (the other STOPPED until the next restart boots it, or "
        "STOPPING while it finishes the requests it had when the last restart ended it), "
        "worker and beat RUNNING."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(cmd(PROGRAMS_UP),),
    reports=True,
    verify_text="A web master and every other program listed is RUNNING.",
    undo_text="Nothing to undo: it only reads.",
    timeout=60,
)

APP_START = Step(
    name="app_start",
    title="Start the app's processes",
    why=(
        "Starts supervisord if it is not running (it reads the live release's program "
        "definitions through `current`), then the programs of the host's roles: one web "
        "master where none runs, the worker and beat."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(
        cmd(
            "if ! {supervisorctl} pid >/dev/null 2>&1; then\n"
            "  {supervisord} -c {supervisor_conf}\n"
            "  for _ in $(seq 100); do {supervisorctl} pid >/dev/null 2>&1 && break; sleep 0.1; "
            "done\n"
            "fi"
        ),
        # One web master serves; the other is for the next restart to boot.
        cmd(
            "if ! {supervisorctl} status 'web:*' | grep -q -e ' RUNNING ' -e ' STARTING '; "
            "then {supervisorctl} start web:web_0; fi",
            "web",
        ),
        cmd("{supervisorctl} start worker", "worker", when="celery"),
        cmd("{supervisorctl} start beat", "beat", when="celery"),
    ),
    verify=(cmd(PROGRAMS_UP),),
    verify_text="A web master, the worker and beat are RUNNING.",
    undo_text="`inv app.stop` stops them again.",
    timeout=300,
)

APP_STOP = Step(
    name="app_stop",
    title="Stop the app's processes",
    why=(
        "Stops the programs of the host's roles (TERM: gunicorn drains its requests, the "
        "Celery worker finishes its running tasks). supervisord itself keeps running, "
        "and its socket stays open, so `inv app.start` brings them back."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(cmd("{supervisorctl} stop {role_programs}"),),
    verify=(
        cmd(
            "if {supervisorctl} status {role_programs} | grep -q ' RUNNING '; then\n"
            "  echo 'a program is still RUNNING' >&2; exit 1\n"
            "fi"
        ),
    ),
    verify_text="No program of the host's roles is RUNNING.",
    undo_text="`inv app.start` starts them again.",
    timeout=900,
)

APP = {
    "status": Runbook("app-status", "App status", (APP_STATUS,)),
    "start": Runbook("app-start", "App start", (APP_START,)),
    "stop": Runbook("app-stop", "App stop", (APP_STOP,)),
    # The release's own restart steps: a web master boots beside the serving one.
    "restart": Runbook("app-restart", "App restart", (RESTART_WEB, RESTART_WORKERS)),
}

# --- logs ---------------------------------------------------------------------------------

APP_LOGS = Step(
    name="app_logs",
    title="Read the app's logs",
    why=(
        "Prints the newest lines of each process log under `shared/log/` of the host's "
        "roles (`web_*.log`, `worker.log`, `beat.log`), each prefixed with its file's "
        "name; with a request id, only the lines that hold it. The controller merges every "
        "host's lines by their timestamps (a line without one, a traceback's, stays after "
        "the line before it)."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(
        cmd(
            "for log in {log_files}; do\n"
            '  [ -f "$log" ] || continue\n'
            '  {{ {log_filter} "$log" || test "$?" = 1; }} | tail -n {lines} '
            '| sed "s|^|${{log##*/}} |"\n'
            "done"
        ),
    ),
    reports=True,
    verify_text="The lines were printed (none: no line matched).",
    undo_text="Nothing to undo: it only reads.",
    timeout=120,
)

LOGS = Runbook("app-logs", "App logs", (APP_LOGS,))

# The loop's empty lines are the heartbeat: the first says every tail has started, and
# once the controller has gone (Ctrl-C, connection lost) the next one fails, the shell
# ends, and each `tail --pid` ends with it: nothing is left running on the host.
APP_LOGS_FOLLOW = Step(
    name="app_logs_follow",
    title="Follow the app's logs",
    why=(
        "Prints each new line of the same logs as it is written (`tail -F`, so a rotated "
        "log is followed too), each prefixed with its file's name; with a request id, only "
        "the lines that hold it. It runs until Ctrl-C on the controller; an empty line "
        "every 2 s tells the controller the host is still there, and fails once the "
        "controller is gone, which ends the tails."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(
        cmd(
            "for log in {log_files}; do\n"
            '  [ -f "$log" ] || continue\n'
            '  tail -n 0 -F --pid="$$" "$log" | {log_filter} '
            '| sed -u "s|^|${{log##*/}} |" &\n'
            "done\n"
            "while echo; do sleep 2; done"
        ),
    ),
    reports=True,
    verify_text="New lines are printed as they come, until Ctrl-C.",
    undo_text="Nothing to undo: it only reads.",
    timeout=86400,
)

LOGS_FOLLOW = Runbook("app-logs-follow", "App logs, followed", (APP_LOGS, APP_LOGS_FOLLOW))

# --- a command with the release's environment -------------------------------------------

APP_EXEC = Step(
    name="app_exec",
    title="Run a command with the live release's environment",
    why=(
        "Runs one command on one host, in the live release's directory, through its "
        "launcher: its env file loaded and its settings module exported, as its processes "
        "run (`inv app.manage -- CMD` is `venv/bin/python manage.py CMD`). With a terminal "
        "it gets one (a pseudo-terminal over SSH), for interactive commands such as "
        "`createsuperuser` or `shell`."
    ),
    commands=(cmd("cd {release_dir} && exec {launcher} {argv}"),),
    verify_text="The command's own exit status.",
    undo_text="Whatever the command changed is the command's own.",
    timeout=86400,
)

EXEC = Runbook("app-exec", "App exec", (APP_EXEC,))

# --- the incident checks ------------------------------------------------------------------

# Each check prints what it found; its exit status says whether it is well. ``errors``
# and ``maintenance`` are advisory: shown, never failing the doctor.
ADVISORY = frozenset({"errors", "maintenance"})

CHECK_PROCESSES = Step(
    name="processes",
    title="The processes the roles need are RUNNING",
    why=(
        "supervisord on each host runs the programs of its roles: on web hosts one of the "
        "two gunicorn masters (`web:web_0`, `web:web_1`) serves and the other is STOPPED "
        "until the next restart boots it; `worker` and `beat` where those roles are. No "
        "web master RUNNING, a master FATAL or BACKOFF, a worker or beat not RUNNING, or "
        "supervisord down fails."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(cmd(PROGRAMS_UP),),
    verify_text="A web master and every other program of the host's roles is RUNNING.",
    undo_text=(
        "`inv app.start --env=ENV --role ROLE` starts what is stopped; read why it stopped "
        "in `inv app.logs --env=ENV --role ROLE` and `shared/log/supervisord.log`."
    ),
    timeout=60,
)

CHECK_READYZ = Step(
    name="readyz",
    title="/readyz answers 200 with the live release",
    why=(
        "Asks each web host's readiness endpoint as the release's verify step does (the "
        "site's Host header, `X-Forwarded-Proto: https`): 200 naming the release "
        "`current` points at. A 503 body names the failing check (database, migrations, "
        "cache, broker); another release id means a master still runs old code."
    ),
    where="controller",
    roles=frozenset({"web"}),
    http_check=True,
    verify_text="Every web host answered 200 with the live release id.",
    undo_text=(
        "Read the failing check in the body; `inv app.restart --env=ENV --role web` if "
        "the release id is stale; `inv rollback --env=ENV` if the release itself is bad."
    ),
    timeout=10,
)

CHECK_WORKER = Step(
    name="worker",
    title="The Celery worker answers a ping",
    why=(
        "Pings this host's worker through the broker (`celery inspect ping` to "
        "`celery@<hostname>`) with the live release's environment: it answers only when "
        "it is connected to the broker and consuming."
    ),
    roles=frozenset({"worker"}),
    commands=(
        cmd(
            "cd {release_dir} && {launcher} venv/bin/python -m celery -A {celery_app} "
            'inspect ping --timeout 3 --destination "celery@$(hostname)"',
            when="celery",
        ),
    ),
    verify_text="`pong` from the host's worker.",
    undo_text=(
        "Check the broker row; read `inv app.logs --env=ENV --role worker`; "
        "`inv app.restart --env=ENV --role worker`."
    ),
    timeout=60,
)

CHECK_BEAT = Step(
    name="beat",
    title="Exactly one beat runs",
    why=(
        "Celery beat sends the periodic tasks: two would send each twice, none sends "
        "nothing. Each host says whether its `beat` program is RUNNING; the controller "
        "counts them: exactly one must be."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(
        cmd(
            "if {supervisorctl} status beat 2>/dev/null | grep -q ' RUNNING '; then\n"
            "  echo 'beat RUNNING'\n"
            "else\n"
            "  echo 'no beat running'\n"
            "fi",
            when="celery",
        ),
    ),
    verify_text="One host, of all of them, prints `beat RUNNING`.",
    undo_text=(
        "None: `inv app.start --env=ENV --role beat`. Two: stop the one that is not on "
        "the inventory's beat host (`supervisorctl stop beat` there)."
    ),
    timeout=60,
)

CHECK_DEPENDENCIES = Step(
    name="dependencies",
    title="The database and the broker are reachable from the host",
    why=(
        "Runs the readiness checks (`manage.py readiness --json`: database, migrations, "
        "cache, broker, each under its time limit) on every host with the live release's "
        "environment, so a worker host that cannot reach the database or Redis is found "
        "even though no web request goes through it. Credentials stay in the env file; "
        "only each check's result is printed."
    ),
    commands=(cmd("cd {release_dir} && {launcher} venv/bin/python manage.py readiness --json"),),
    reports=True,
    verify_text="Each check of the JSON report is ok.",
    undo_text=(
        "The failing row names the dependency: check that the service runs and that the "
        "host reaches it (firewall, DNS, the URL in `shared/.env` or the inventory)."
    ),
    timeout=120,
)

CHECK_DISK = Step(
    name="disk",
    title="Free disk under the deploy path",
    why=(
        "A full disk stops uploads, logs and the next release: the free space under the "
        "deploy path must be at least the inventory's `min_free_mb`."
    ),
    commands=(
        cmd(
            "avail_kb=$(df -Pk {deploy} | awk 'NR==2 {{print $4}}')\n"
            "printf '%s MB free under %s\\n' \"$((avail_kb / 1024))\" {deploy}\n"
            'test "$avail_kb" -ge {min_free_kb}'
        ),
    ),
    verify_text="At least `min_free_mb` free.",
    undo_text="Free space: old logs in `shared/log/`, old backups; cleanup keeps releases few.",
    timeout=60,
)

CHECK_MAINTENANCE = Step(
    name="maintenance",
    title="Maintenance mode",
    why="Says whether the maintenance flag file is there: while it is, users get 503.",
    roles=frozenset({"web"}),
    commands=(
        cmd(
            "if test -e {maintenance_flag}; then\n"
            "  printf 'maintenance on since %s\\n' \"$(cat {maintenance_flag})\"\n"
            "else\n"
            "  echo 'maintenance off'\n"
            "fi"
        ),
    ),
    verify_text="`maintenance off`, unless you turned it on.",
    undo_text="`inv maintenance off --env=ENV`.",
    timeout=60,
)

CHECK_ERRORS = Step(
    name="errors",
    title="The newest errors in the logs",
    why=(
        "The newest ERROR and CRITICAL lines of the process logs, with their request ids: "
        "follow one with `inv app.logs --env=ENV --request-id ID` to see that request on "
        "every host, web and worker."
    ),
    roles=frozenset({"web", "worker", "beat"}),
    commands=(
        cmd(
            "for log in {log_files}; do\n"
            '  [ -f "$log" ] || continue\n'
            '  {{ grep -E \' (ERROR|CRITICAL) \' "$log" || test "$?" = 1; }} | tail -n 3 '
            '| sed "s|^|${{log##*/}} |"\n'
            "done"
        ),
    ),
    reports=True,
    verify_text="Advisory: the lines are shown, they do not fail the doctor.",
    undo_text="Read the request: `inv app.logs --env=ENV --request-id ID`.",
    timeout=60,
)

DOCTOR = Runbook(
    "doctor",
    "Doctor",
    (
        CHECK_PROCESSES,
        CHECK_READYZ,
        CHECK_WORKER,
        CHECK_BEAT,
        CHECK_DEPENDENCIES,
        CHECK_DISK,
        CHECK_MAINTENANCE,
        CHECK_ERRORS,
    ),
)

# What each role runs under supervisord.
ROLE_PROGRAMS = {"web": ("web:*",), "worker": ("worker",), "beat": ("beat",)}
# Their logs under shared/log/.
ROLE_LOGS = {"web": ("web_*.log",), "worker": ("worker.log",), "beat": ("beat.log",)}
