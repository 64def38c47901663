"""The release runbook, as data: every step from taking the lock to recording the run.

Steps before ``switch`` prepare the new release while the old one serves; each one's
``undo`` removes what it made, and an aborted release runs the undo of every step it
began, newest first. From ``switch`` on a failure rolls every host back (the rollback
runbook). ``cleanup``, ``record`` and ``unlock`` run once the release is verified.
"""

from __future__ import annotations

from releasebook.gate.command import GATE_COMMAND, MIGRATION_STATE_IN_RELEASE, STATIC_INPUTS
from releasebook.masking import GENERATED_PREFIX
from releasebook.runbooks.backup import BACKUP_BEFORE_MIGRATE
from releasebook.runbooks.bookkeeping import LOCK, RECORD, UNLOCK
from releasebook.runbooks.maintenance import RELEASE_MAINTENANCE_OFF, RELEASE_MAINTENANCE_ON
from releasebook.runbooks.model import Runbook, Step, Upload, cmd
from releasebook.shipped import DJANGO_DIST

BOTH = ("before", "after")
MIGRATE_AND_RECORD = f"{MIGRATION_STATE_IN_RELEASE} migrate --json"

SETUP = Step(
    name="setup",
    title="Prepare the host layout",
    why=(
        "Creates the directories every later step relies on (`releases/`, `shared/`, "
        "`venvs/` and releasebook's own state, with a directory only the deploy user can "
        "enter for the inventory's secrets, when it declares some) and the operator's env "
        "file `shared/.env` (mode 0600), where it adds the secrets the inventory says to "
        "generate on the host the first time they are missing: they never leave the host. "
        "Nothing live reads these: each release gets its own env file when it is "
        "configured, so a release that stops here changes nothing that serves."
    ),
    commands=(
        cmd("mkdir -p {releases} {venvs} {media} {logs} {artifacts}"),
        cmd("mkdir -p {shared_path}", each="linked_dirs"),
        cmd("mkdir -p {shared_parent}", each="linked_files"),
        cmd("mkdir -p {secrets_dir} && chmod 700 {secrets_dir}", when="secret_delivery"),
        cmd("touch {env_file} && chmod 600 {env_file}"),
        cmd(
            "grep -q {pattern} {env_file} || printf '%s=%s\\n' {name} "
            f'"$({{python}} -c \'import secrets; print("{GENERATED_PREFIX}" + '
            "secrets.token_urlsafe(50))')\" >> {env_file}",
            each="env_generate",
        ),
    ),
    verify=(cmd("test -d {releases} && test -f {env_file}"),),
    verify_text="The directories exist and the env file is mode 0600.",
    undo_text="Nothing to undo: the layout is shared by every release.",
    timeout=120,
)

PREFLIGHT = Step(
    name="preflight",
    title="Preflight: can the hosts take a release",
    why=(
        "Refuses to start when a host cannot take the release: not enough free disk under "
        "the deploy path, no Python of the implementation and version the wheels were "
        "built for, or a required environment variable missing from `shared/.env` (names "
        "only; values are never read into the output; the inventory's values and secrets "
        "arrive with the release). Nothing live has changed yet."
    ),
    commands=(
        cmd(
            "avail_kb=$(df -Pk {deploy} | awk 'NR==2 {{print $4}}')\n"
            'if [ "$avail_kb" -lt {min_free_kb} ]; then\n'
            "  printf 'only %s MB free under %s; need %s MB\\n' \"$((avail_kb / 1024))\" "
            "{deploy} {min_free_mb} >&2; exit 1\n"
            "fi"
        ),
        cmd(
            "host_python=$({python} -c 'import sys, sysconfig; "
            'print(sys.implementation.name, "%d.%d" % sys.version_info[:2], '
            "sysconfig.get_platform())') || "
            "{{ printf '%s not found on this host\\n' {python} >&2; exit 1; }}\n"
            'if [ "$host_python" != {python_abi} ]; then\n'
            "  printf '%s here is %s; the wheels are built for %s: set app.python to "
            "such an interpreter on every host\\n' "
            '{python} "$host_python" {python_abi} >&2; exit 1\n'
            "fi"
        ),
        cmd("missing_env=0"),
        cmd(
            "grep -q {pattern} {env_file} || "
            "{{ printf 'required env var %s is missing or empty in %s\\n' {name} {env_file} >&2; "
            "missing_env=1; }}",
            each="env_required",
        ),
        cmd('test "$missing_env" = 0'),
    ),
    verify_text="Every host printed nothing on stderr and exited 0.",
    undo_text="Nothing to undo: preflight only reads.",
    timeout=120,
)

BUILD = Step(
    name="build",
    title="Build the artifact",
    why=(
        "Builds once, on the controller, so every host gets identical bits: the app's "
        "source at the deployed git revision with its manifest (`release.json`) and the "
        "readiness gate, and a wheelhouse of its locked requirements so hosts install "
        "offline, with `releasebook-django` (releasebook's Django app alone, written from "
        "the installed releasebook) added to them, chosen with the environment markers of "
        "the hosts' Python version. releasebook's host tools (supervisor and uv) get a "
        "wheelhouse and archive of their own, built only when a host lacks them (as the "
        "probe reports it), so a requirements change does not ship them again. The "
        "controller builds the wheels when "
        "the hosts' Python (as the lock step's probe reports it) runs what it builds: the "
        "same implementation, minor version and platform, a C library as new. Otherwise "
        "it downloads the wheels made for the hosts' Python and platform, and a "
        "requirement without one must be built on a host and put in `releasebook/wheels/`. "
        "The wheelhouse is cached by the hash of the requirements, that wheel and the "
        "Python version; the tools' by the hash of the tools' versions and the Python "
        "version. Every file is written under "
        "a temporary name and renamed once complete, so a build cut short (Ctrl-C, a full "
        "disk) is never reused. "
        "Secrets the inventory declares (`env.secrets`) are read here, from the "
        "controller's environment or files, into a file only its owner can read: the "
        "command names where each value comes from, never the value."
    ),
    where="controller",
    once=True,
    commands=(
        cmd("rm -rf {build_app} && mkdir -p {build_app} {build_out}"),
        cmd("git -C {repo} archive --format=tar {git_tree} | tar -x -C {build_app}"),
        cmd("printf '%s\\n' {manifest_json} > {build_app}/release.json"),
        cmd("{controller_python} -m releasebook.shipped gate {build_app}/.releasebook"),
        # One command per line: under `set -e`, a failure inside `a && b` that is not
        # the last command is ignored, and so is the status of a group built on it.
        # The controller builds the wheels when the hosts' Python runs what it builds...
        cmd(
            "if ! test -f {wheelhouse}/.complete; then\n"
            "  rm -rf {wheelhouse_tmp}\n"
            "  {controller_python} -m releasebook.shipped wheel {wheelhouse_tmp}\n"
            "  {controller_python} -m releasebook.shipped pip {markers_version} wheel --quiet "
            "--wheel-dir {wheelhouse_tmp} "
            "--find-links {wheelhouse_tmp} -r {build_app}/{requirements} {django_requirement}\n"
            "  touch {wheelhouse_tmp}/.complete\n"
            "  rm -rf {wheelhouse}\n"
            "  mv {wheelhouse_tmp} {wheelhouse}\n"
            "fi",
            when="native_build",
        ),
        cmd(
            "if ! test -f {tools_wheelhouse}/.complete; then\n"
            "  rm -rf {tools_wheelhouse_tmp}\n"
            "  {controller_python} -m releasebook.shipped pip {markers_version} wheel --quiet "
            "--wheel-dir {tools_wheelhouse_tmp} {tools_requirement}\n"
            "  touch {tools_wheelhouse_tmp}/.complete\n"
            "  rm -rf {tools_wheelhouse}\n"
            "  mv {tools_wheelhouse_tmp} {tools_wheelhouse}\n"
            "fi",
            when="native_tools_build",
        ),
        # ...else it downloads the wheels made for the hosts' Python and platform.
        cmd(
            "if ! test -f {wheelhouse}/.complete; then\n"
            "  rm -rf {wheelhouse_tmp}\n"
            "  {controller_python} -m releasebook.shipped wheel {wheelhouse_tmp}\n"
            "  mkdir -p {host_wheels}\n"
            "  if ! {controller_python} -m releasebook.shipped pip {markers_version} download "
            "--quiet --dest {wheelhouse_tmp} "
            "--find-links {wheelhouse_tmp} --find-links {host_wheels} {target_args} "
            "-r {build_app}/{requirements} {django_requirement}; then\n"
            "    printf '%s\\n' {no_wheel_message} >&2; exit 1\n"
            "  fi\n"
            "  touch {wheelhouse_tmp}/.complete\n"
            "  rm -rf {wheelhouse}\n"
            "  mv {wheelhouse_tmp} {wheelhouse}\n"
            "fi",
            when="cross_build",
        ),
        cmd(
            "if ! test -f {tools_wheelhouse}/.complete; then\n"
            "  rm -rf {tools_wheelhouse_tmp}\n"
            "  mkdir -p {host_wheels}\n"
            "  if ! {controller_python} -m releasebook.shipped pip {markers_version} download "
            "--quiet --dest {tools_wheelhouse_tmp} --find-links {host_wheels} {target_args} "
            "{tools_requirement}; then\n"
            "    printf '%s\\n' {no_wheel_message} >&2; exit 1\n"
            "  fi\n"
            "  touch {tools_wheelhouse_tmp}/.complete\n"
            "  rm -rf {tools_wheelhouse}\n"
            "  mv {tools_wheelhouse_tmp} {tools_wheelhouse}\n"
            "fi",
            when="cross_tools_build",
        ),
        cmd("tar -czf {artifact_local_tmp} -C {build_app} ."),
        cmd("mv {artifact_local_tmp} {artifact_local}"),
        cmd(
            "if ! test -f {wheels_local}; then\n"
            "  tar -cf {wheels_local_tmp} --exclude=.complete -C {wheelhouse} .\n"
            "  mv {wheels_local_tmp} {wheels_local}\n"
            "fi"
        ),
        cmd(
            "if ! test -f {tools_local}; then\n"
            "  tar -cf {tools_local_tmp} --exclude=.complete -C {tools_wheelhouse} .\n"
            "  mv {tools_local_tmp} {tools_local}\n"
            "fi",
            when="tools_build",
        ),
        cmd("(cd {build_out}; sha256sum {artifact_name} > {artifact_name}.sha256)"),
        cmd("(cd {build_out}; sha256sum {wheels_name} > {wheels_name}.sha256)"),
        cmd("(cd {build_out}; sha256sum {tools_name} > {tools_name}.sha256)", when="tools_build"),
        cmd(
            "{controller_python} -m releasebook.inventory.secrets {secrets_local} {secret_sources}",
            when="secret_delivery",
        ),
    ),
    verify_text=(
        "The artifact, the wheel archive and, when a host lacks the tools, the tools' "
        "archive exist next to their `.sha256` files."
    ),
    undo=(
        cmd("rm -rf {build_app}"),
        cmd("rm -f {artifact_local} {artifact_local}.sha256 {artifact_local_tmp}"),
        cmd("rm -f {secrets_local}", when="secret_delivery"),
    ),
    undo_text="Remove the build directory and this release's files; nothing reached a host.",
    timeout=1800,
)

UPLOAD = Step(
    name="upload",
    title="Upload the artifact",
    why=(
        "Copies the artifact to every host and checks its SHA-256 there, so a truncated or "
        "altered upload never gets installed. The wheel archive is sent only to hosts "
        "that do not already have a virtualenv for these exact requirements, and the "
        "tools' archive (supervisor and uv) only to hosts that do not have releasebook's "
        "tools installed. The "
        "inventory's secrets travel as a file into the private directory, so their values "
        "are never part of a command."
    ),
    uploads=(
        Upload("artifact_local", "artifact"),
        Upload("artifact_local", "artifact", ".sha256"),
        Upload("wheels_local", "wheels", skip_if="{venv_ready}", needed="wheels_needed"),
        Upload("wheels_local", "wheels", ".sha256", skip_if="{venv_ready}", needed="wheels_needed"),
        Upload("tools_local", "tools_archive", skip_if="{tools_ready}", needed="tools_needed"),
        Upload(
            "tools_local",
            "tools_archive",
            ".sha256",
            skip_if="{tools_ready}",
            needed="tools_needed",
        ),
        Upload("secrets_local", "secrets_upload", when="secret_delivery"),
    ),
    verify=(
        cmd("cd {artifacts} && sha256sum --quiet -c {artifact_name}.sha256"),
        cmd("{venv_ready} || {{ cd {artifacts} && sha256sum --quiet -c {wheels_name}.sha256; }}"),
        cmd("{tools_ready} || {{ cd {artifacts} && sha256sum --quiet -c {tools_name}.sha256; }}"),
    ),
    verify_text="`sha256sum -c` accepts the uploaded files.",
    undo=(
        cmd("rm -f {artifact} {artifact}.sha256 {tools_archive} {tools_archive}.sha256"),
        cmd("rm -f {secrets_upload}", when="secret_delivery"),
    ),
    undo_text=(
        "Remove this release's uploaded files and the tools' archive (the next release to "
        "a host without the tools sends it again). A wheel archive stays: it is the cache "
        "of its virtualenv, removed by cleanup with it."
    ),
    timeout=1800,
)

INSTALL = Step(
    name="install",
    title="Install the release",
    why=(
        "Unpacks the artifact into a new `releases/<id>/` and points it at a virtualenv "
        "for its requirements. Virtualenvs live in `venvs/<requirements hash>/` and are "
        "shared by every release with the same requirements, so an unchanged release "
        "installs nothing. A new one is made offline from the uploaded wheels, with uv: "
        "the requirements are resolved against the wheels (`uv pip compile`), and where "
        "the live release's virtualenv was made the same way (the same `pyvenv.cfg`: "
        "interpreter, uv, relocatable) the new one starts as a hard-linked copy of it, so "
        "`uv pip sync` installs only the packages whose version differs (releasebook's "
        "Django app always), removes those no longer required, and writes new files "
        "without touching the live one's; otherwise it installs every package. It is "
        "compiled to bytecode as it installs so that the gate, migrate and collectstatic "
        "after it do not each compile Django again, at a lower CPU priority (`nice`) so "
        "that the live release's requests come first. The resolved list is kept as the "
        "virtualenv's `.complete`. uv and supervisord are releasebook's "
        "tools, installed once per host from the tools' archive when they are missing (the "
        "archive is removed once they are installed; until then every release sends it "
        "again)."
    ),
    commands=(
        cmd("mkdir {release_dir}"),
        cmd("tar -xzf {artifact} -C {release_dir}"),
        cmd(
            "if ! {tools_ready}; then\n"
            "  rm -rf {tools_dir} {tools}\n"
            "  mkdir -p {tools_dir}\n"
            "  tar -xf {tools_archive} -C {tools_dir}\n"
            "  {python} -m venv {tools}\n"
            "  {tools}/bin/python -m pip install --quiet --no-index --find-links {tools_dir} "
            "{tools_requirement}\n"
            "  rm -rf {tools_dir} {tools_archive} {tools_archive}.sha256\n"
            "fi"
        ),
        cmd(
            "if ! {venv_ready}; then\n"
            "  rm -rf {wheel_dir}\n"
            "  mkdir -p {wheel_dir}\n"
            "  tar -xf {wheels} -C {wheel_dir}\n"
            "  rm -rf {venv}\n"
            "  {uv} venv --quiet --relocatable --python {python} {venv}\n"
            "  printf '%s\\n' {django_requirement} | {uv} pip compile --quiet --no-cache "
            "--no-index --find-links {wheel_dir} --python {venv}/bin/python --no-header "
            "--no-annotate -o {wheel_dir}/.resolved {release_dir}/{requirements} -\n"
            # The live virtualenv, hard-linked, is the start when it was made the same way
            # (same interpreter, uv, relocatable): only what differs is then installed.
            "  live_venv=$(realpath {current}/venv 2>/dev/null || true)\n"
            '  if [ -f "$live_venv/.complete" ] && cmp -s "$live_venv/pyvenv.cfg" '
            "{venv}/pyvenv.cfg; then\n"
            "    rm -rf {venv}\n"
            '    cp -al "$live_venv" {venv}\n'
            "    rm -f {venv}/.complete\n"
            '    echo "starting from the live virtualenv $(basename "$live_venv") (hard links)"\n'
            "  fi\n"
            "  nice -n 10 {uv} pip sync --quiet --no-cache --compile-bytecode --no-index "
            f"--find-links {{wheel_dir}} --reinstall-package {DJANGO_DIST} "
            "--python {venv}/bin/python {wheel_dir}/.resolved\n"
            "  cp {wheel_dir}/.resolved {venv}/.complete\n"
            "  rm -rf {wheel_dir}\n"
            "fi"
        ),
        cmd("ln -sfn {venv} {release_dir}/venv"),
    ),
    verify=(cmd("{release_dir}/venv/bin/python -c 'import django'"),),
    verify_text="The release's interpreter imports Django.",
    undo=(cmd("rm -rf {release_dir} {wheel_dir} {tools_dir}"),),
    undo_text=(
        "Remove the half-made release directory; `current` still points at the live one. "
        "A new virtualenv stays for the next try; cleanup removes it once no release uses it."
    ),
    hooks=("after",),
    timeout=1800,
)

CONFIGURE = Step(
    name="configure",
    title="Configure the release",
    why=(
        "Writes the release's own configuration inside its directory, where nothing live "
        "reads it until the switch: its env file `.releasebook/env` (mode 0600: "
        "`shared/.env` without the names the inventory sets, then the inventory's values, "
        "then its secrets, whose uploaded copy is removed), the launcher that loads it "
        "and exports the settings module, and the process manager's program definitions "
        "for this host. It links what outlives releases: `.env` to `shared/.env` (for "
        "apps that read such a file) and each of the inventory's `deploy.linked_dirs` "
        "(default `media`) and `deploy.linked_files` to the same path under `shared/`, so "
        "uploads survive every deploy and rollback (a linked file missing from `shared/` "
        "stops the release here). A rollback brings the older configuration back with "
        "the older code."
    ),
    commands=(
        cmd("mkdir -p {release_state}"),
        cmd(
            "( umask 077\n"
            '  {{ grep -v -E {inventory_names_pattern} {env_file} || test "$?" = 1; }} '
            "> {release_env_tmp} )",
            when="inventory_names",
        ),
        cmd("( umask 077 && cat {env_file} > {release_env_tmp} )", when="no_inventory_names"),
        cmd("printf '%s\\n' {line} >> {release_env_tmp}", each="env_values"),
        cmd(
            "cat {secrets_upload} >> {release_env_tmp} && rm -f {secrets_upload}",
            when="secret_delivery",
        ),
        cmd("mv {release_env_tmp} {release_env}"),
        cmd("cat > {launcher} <<'RELEASEBOOK_EOF'\n{launcher_text}\nRELEASEBOOK_EOF"),
        cmd("chmod 755 {launcher}"),
        cmd("cat > {programs} <<'RELEASEBOOK_EOF'\n{programs_text}\nRELEASEBOOK_EOF"),
        cmd("ln -sfn {env_file} {release_dir}/.env"),
        cmd(
            "rm -rf {link} && {link_mkdir}ln -sfn {shared_path} {link}",
            each="linked_dirs",
        ),
        cmd(
            "test -f {shared_path} || {{ printf '%s\\n' {missing} >&2; exit 1; }}",
            each="linked_files",
        ),
        cmd(
            "rm -rf {link} && {link_mkdir}ln -sfn {shared_path} {link}",
            each="linked_files",
        ),
    ),
    verify=(
        cmd('test "$(stat -c %a {release_env})" = 600 && test -x {launcher} && test -f {programs}'),
    ),
    verify_text=(
        "The release's env file is mode 0600, its launcher and program definitions exist, "
        "and `.env` and the linked paths link into `shared/`."
    ),
    undo_text="Nothing of its own: all it wrote is inside the release directory.",
    hooks=BOTH,
    timeout=120,
)

GATE = Step(
    name="gate",
    title="Readiness gate: the production checklist",
    why=(
        "Runs the production-readiness checklist against the new release on every host, "
        "with the release's own settings and env file, before anything live changes: "
        "required env vars, `check --deploy` findings, DEBUG, hosts, cookies, HTTPS and "
        "HSTS, static and media, the database and its pending migrations, cache and broker, "
        "disk, committed secrets, gunicorn's config. An error blocks the release; a warning "
        "is reported. The table of checks is in `production-readiness.md`. Nothing live "
        "is touched: the files it writes are the new release's "
        "`.releasebook/static-inputs`, for the collectstatic step, and "
        "`.releasebook/pending-migrations`, for the backup before migrating."
    ),
    commands=(cmd(GATE_COMMAND),),
    reports=True,
    verify_text="The gate printed its report with no failed error-severity check.",
    undo_text=(
        "Nothing of its own: the gate only reads, and writes only inside the new release. "
        "Fix what the failed checks name, or skip one with `--skip ID --reason ...` "
        "(recorded in the history)."
    ),
    hooks=BOTH,
    timeout=600,
)

MIGRATE = Step(
    name="migrate",
    title="Apply database migrations",
    barrier=True,
    why=(
        "Runs once, on the migrate host, before any traffic reaches the new code. The old "
        "release keeps serving meanwhile, so migrations must be backward compatible with "
        "it (expand now, contract in a later release). The readiness gate recorded the "
        "pending migration plan with the release, and ran Django's system checks. One "
        "process (`migration_state.py migrate`, so Django boots once) runs Django's "
        "`migrate --noinput`, then asks what `migrate --check` asks, and prints the "
        "schema the release leaves, which its history keeps (a rollback reads it)."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(cmd("cd {release_dir} && {launcher} venv/bin/python " + MIGRATE_AND_RECORD),),
    verify_text=(
        'It printed `{"ok": true, "command": "migrate", ...}`: after migrating, the plan '
        "to every leaf migration is empty (no unapplied migrations, what `migrate --check` "
        "tests), and the applied leaf migration of every app, kept in the history."
    ),
    undo_text=(
        "Nothing is undone: migrations that applied stay applied, and the live release "
        "must tolerate them (that is the backward-compatibility rule above). To reverse "
        "one, run `manage.py migrate <app> <previous migration>` through the release's "
        "launcher, from the release that contains it, before it is removed."
    ),
    hooks=BOTH,
    timeout=3600,
)

# The gate wrote `root <STATIC_ROOT inside the release>` and `digest <hex>`; the root is
# read back from a file on the host, so only a plain relative path is used.
STATIC_FROM_LIVE_OR_COLLECT = (
    "inputs={release_dir}/" + STATIC_INPUTS + "\n"
    "root=$(sed -n 's/^root //p' \"$inputs\" 2>/dev/null | head -n 1)\n"
    'case "$root" in ""|/*|..|../*|*/..|*/../*|-*) root= ;; esac\n'
    'if [ -n "$root" ] && cmp -s "$inputs" {current}/' + STATIC_INPUTS + " \\\n"
    '  && [ -d {current}/"$root" ] && [ ! -e {release_dir}/"$root" ]; then\n'
    '  mkdir -p "$(dirname {release_dir}/"$root")"\n'
    '  cp -al {current}/"$root" {release_dir}/"$root" &&\n'
    '  echo "static inputs unchanged since the live release: its $root hard-linked"\n'
    "else\n"
    "  {django} collectstatic --noinput --verbosity 0\n"
    "fi"
)

COLLECTSTATIC = Step(
    name="collectstatic",
    title="Collect static files",
    why=(
        "Gathers static files into the release's own STATIC_ROOT on every web host, so the "
        "CSS that ships is the CSS that was built with this code, and a rollback brings "
        "the old files back with the old code. The gate recorded a digest of what "
        "collectstatic would read (each file it collects and its content, the storage, "
        "STATIC_URL, Django and the virtualenv's packages) in `.releasebook/static-inputs`; where "
        "the live release recorded the same, its STATIC_ROOT is the output already and "
        "is hard-linked into the new release instead of booting Django to collect again."
    ),
    roles=frozenset({"web"}),
    commands=(cmd(STATIC_FROM_LIVE_OR_COLLECT),),
    verify_text=(
        "collectstatic exited 0, or the line `static inputs unchanged` named the live "
        "release's STATIC_ROOT it linked; the gate checked STATIC_ROOT and a dry run "
        "before, and verify fetches the release's CSS file after the switch."
    ),
    undo_text="Nothing of its own: the files are inside the release directory.",
    hooks=BOTH,
    timeout=900,
)

SWITCH = Step(
    name="switch",
    title="Switch `current` to the release",
    barrier=True,
    why=(
        "Makes the release live with one atomic rename: a new symlink is created beside "
        "`current` and moved over it, so there is no instant without a `current`. Its code, "
        "env file and program definitions go live together. From here on a failure rolls "
        "every host back to the release it served before."
    ),
    phase="live",
    commands=(
        cmd("ln -sfn {release_dir} {current_link}"),
        cmd("mv -T {current_link} {current}"),
    ),
    verify=(cmd('test "$(readlink {current})" = {release_dir}'),),
    verify_text="`readlink current` names the release.",
    undo_text="Switch back: the rollback runbook, which `inv release` runs by itself.",
    hooks=BOTH,
    timeout=60,
)

# The host-level configuration is written when it differs; the restart steps' program
# (runbooks/supervise.py, sent as a heredoc) then starts supervisord if it is not
# running and loads the programs `current` now defines, as `supervisorctl update` does.
WRITE_SUPERVISOR_CONF = cmd(
    "conf_new=$(mktemp {supervisor_conf}.XXXXXX)\n"
    "cat > \"$conf_new\" <<'RELEASEBOOK_EOF'\n{main_conf_text}\nRELEASEBOOK_EOF\n"
    'if cmp -s "$conf_new" {supervisor_conf}; then rm -f "$conf_new"; '
    'else mv "$conf_new" {supervisor_conf}; fi'
)


def supervise(args: str) -> str:
    """A command running the restart steps' supervisord client with ``args``."""
    heredoc = " <<'RELEASEBOOK_EOF'\n{supervise_text}\nRELEASEBOOK_EOF"
    return "{supervise} --ensure " + args + heredoc


RESTART_WEB = Step(
    name="restart_web",
    title="Restart the web servers",
    why=(
        "Restarts gunicorn so it starts from `current`: the new code, virtualenv and env "
        "file. supervisord holds the listening socket, and of the two gunicorn masters "
        "that can share it one serves between releases. The idle one boots from "
        "`current` beside it; the one that served is stopped (TERM: a graceful shutdown, "
        "it drains its requests) only once the new one has forked its first worker (its "
        "app is loaded) and is RUNNING, so one always accepts and no request is refused. "
        "The step does not wait for the old one to finish its requests: it exits when "
        "they end, or supervisord kills it after the stop timeout (a restart that finds "
        "it still draining waits for it). "
        "A master that does not start is stopped, the one serving goes on serving, and "
        "the end of the new one's log is printed: the cause. An ASGI app's stopping "
        "workers close their WebSockets with 1012 (service restart), so clients "
        "reconnect to the new release, and log how many: for an ASGI app the step waits "
        "for the old master's exit, those lines of its log are printed, and the release, "
        "the rollback and `app.restart` report the sum. One Python process speaks "
        "supervisord's XML-RPC for the whole "
        "step (a `supervisorctl` costs ~0.2 CPU-seconds per call on a host)."
    ),
    roles=frozenset({"web"}),
    phase="live",
    commands=(WRITE_SUPERVISOR_CONF, cmd(supervise("{web_args}"))),
    verify_text=(
        "The step's program printed RUNNING, with the new pid, for the gunicorn master "
        "that now serves, and `stopping` for the one that served (`stopped`, waited "
        "for, with an ASGI app); `supervisorctl status 'web:*'`: one RUNNING, the other "
        "STOPPING until its requests end, then STOPPED."
    ),
    undo_text="Switch back and restart: the rollback runbook.",
    hooks=BOTH,
    timeout=600,
)

RESTART_WORKERS = Step(
    name="restart_workers",
    title="Restart Celery worker and beat",
    why=(
        "Restarts the Celery worker (TERM: a warm shutdown, running tasks finish within "
        "the stop timeout) and beat, which runs on exactly one host so no periodic task "
        "is sent twice. Both are started without waiting out `startsecs` in turn, then "
        "must reach RUNNING; the same program as the web restart speaks to supervisord."
    ),
    roles=frozenset({"worker", "beat"}),
    phase="live",
    commands=(WRITE_SUPERVISOR_CONF, cmd(supervise("{celery_args}"))),
    verify=(
        cmd(
            "pinged=0\n"
            "for _ in $(seq 15); do\n"
            "  if (cd {release_dir} && {launcher} venv/bin/python -m celery -A {celery_app} "
            'inspect ping --timeout 2 --destination "celery@$(hostname)" >/dev/null 2>&1); then\n'
            "    pinged=1; break\n"
            "  fi\n"
            "done\n"
            'test "$pinged" = 1 || {{ printf \'the Celery worker on %s does not answer inspect '
            'ping; the end of its log:\\n\' "$(hostname)" >&2; tail -n 15 {logs}/worker.log >&2; '
            "exit 1; }}",
            "worker",
        ),
    ),
    verify_text=(
        "The step's program printed RUNNING for each program, and the new worker answers "
        "`celery inspect ping`: it is connected to the broker and consuming."
    ),
    undo_text="Switch back and restart: the rollback runbook.",
    hooks=BOTH,
    timeout=900,
)

VERIFY = Step(
    name="verify",
    title="Verify readiness",
    why=(
        "Asks every web host's readiness endpoint, with the site's real Host header and "
        "`X-Forwarded-Proto: https` so ALLOWED_HOSTS and the SSL redirect answer as they "
        "would for users. It retries with backoff until the deadline and passes only when "
        "the answer is 200 and names the new release id: a server still running old code "
        "does not count. Then it fetches the one collected CSS file the answer names "
        "(`static`, the admin's `base.css` where there is one) the way users do and "
        "requires 200 `text/css`, so unserved static files fail here, not in a browser "
        "(`health.check_static: false` turns that off). Where the inventory names "
        "`health.websocket_path` (an ASGI app with WebSockets), it also opens a WebSocket "
        "there with the site's Host header and the Origin a browser on the site sends, and "
        "requires the upgrade (101) and an echo of a fresh token."
    ),
    where="controller",
    roles=frozenset({"web"}),
    phase="live",
    http_check=True,
    verify_text=(
        "Every web host answered 200 with the expected release id, its static CSS "
        "file 200 `text/css`, and, where a WebSocket path is named, the upgrade and the echo."
    ),
    undo_text="Roll back: the rollback runbook, which `inv release` runs by itself.",
)

_IN_USE = (
    "releases_physical=$(cd {releases} && pwd -P) || releases_physical={releases}\n"
    "in_use=$(\n"
    "  {{ readlink /proc/[0-9]*/cwd /proc/[0-9]*/exe /proc/[0-9]*/fd/*\n"
    "    cat /proc/[0-9]*/cmdline | tr '\\0' '\\n'\n"
    "  }} 2>/dev/null | while IFS= read -r path; do\n"
    '    for dir in {releases} "$releases_physical"; do\n'
    '      case "$path" in "$dir"/?*) rest=${{path#"$dir"/}}; '
    "printf '%s\\n' \"${{rest%%/*}}\" ;; esac\n"
    "    done\n"
    "  done | sort -u\n"
    ")"
)

CLEANUP = Step(
    name="cleanup",
    title="Remove old releases",
    phase="finish",
    why=(
        "Keeps the newest releases (the inventory's `keep_releases`, counted in the order "
        "the history says they were made) and never removes the current or the previous "
        "one, so a rollback target always exists; which releases go is decided on the "
        "controller and named here. Nor does it remove one a running process still uses: "
        "its working directory, its program, an open file or an argument is inside the "
        "release (a long Celery task, an old shell); only the processes the deploy user "
        "may inspect are seen. Entries of `releases/` that are not release ids are left "
        "alone. Switch links and artifacts left behind by interrupted runs go, and so do "
        "virtualenvs no release uses any more, with their wheel archives."
    ),
    commands=(
        cmd(
            _IN_USE + "\n"
            "for old in {cleanup_releases}; do\n"
            '  if printf \'%s\\n\' "$in_use" | grep -qx "$old"; then\n'
            "    printf 'kept %s: a running process still uses it\\n' \"$old\"; continue\n"
            "  fi\n"
            '  rm -rf {releases}/"$old" {artifacts}/"$old".tar.gz '
            '{artifacts}/"$old".tar.gz.sha256\n'
            "done"
        ),
        cmd(
            'for link in {deploy}/.current-*; do\n  if [ -L "$link" ]; then rm -f "$link"; fi\ndone'
        ),
        cmd(
            "for tarball in {artifacts}/*.tar.gz; do\n"
            '  [ -e "$tarball" ] || continue\n'
            "  id=${{tarball##*/}}; id=${{id%.tar.gz}}\n"
            '  [ -d {releases}/"$id" ] || rm -f "$tarball" "$tarball".sha256\n'
            "done"
        ),
        cmd(
            "for venv in {venvs}/*; do\n"
            '  [ -d "$venv" ] || continue\n'
            "  used=0\n"
            "  for link in {releases}/*/venv; do\n"
            '    [ "$(readlink "$link")" = "$venv" ] && used=1\n'
            "  done\n"
            '  [ "$used" = 1 ] || rm -rf "$venv" {artifacts}/wheels-"${{venv##*/}}".tar '
            '{artifacts}/wheels-"${{venv##*/}}".tar.sha256\n'
            "done"
        ),
    ),
    verify=(cmd("test -d {release_dir}"),),
    verify_text="The current release is still there.",
    undo_text="Nothing to undo; removed releases are gone (they were older than the kept ones).",
    hooks=BOTH,
)

RELEASE = Runbook(
    name="release",
    title="Release",
    steps=(
        LOCK,
        SETUP,
        PREFLIGHT,
        BUILD,
        UPLOAD,
        INSTALL,
        CONFIGURE,
        GATE,
        RELEASE_MAINTENANCE_ON,
        BACKUP_BEFORE_MIGRATE,
        MIGRATE,
        COLLECTSTATIC,
        SWITCH,
        RESTART_WEB,
        RESTART_WORKERS,
        VERIFY,
        RELEASE_MAINTENANCE_OFF,
        CLEANUP,
        RECORD,
        UNLOCK,
    ),
)
RELEASE_STEPS = RELEASE.steps
RELEASE_STEP_NAMES = RELEASE.step_names
