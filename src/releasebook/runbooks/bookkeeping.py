"""releasebook's own bookkeeping on a host, as definitions like every other step.

- The **environment lock**: ``<deploy>/.releasebook/lock/``, made with ``mkdir`` (atomic:
  exactly one of two racing controllers gets it) and holding ``info.json`` (who, from
  where, what for, a random token, a lease). The ``lock`` step takes it on the first
  host (by address) alone, then on the others, and reads the host's state in the same
  script (the probe); the ``unlock`` step releases it where the run's token still holds
  it; a running release renews the lease with :data:`RENEW`.
- The **script frame**: every step script runs under the host's step lock (``flock``),
  so an undo waits for a script still running there; starts with the **fence**, which
  stops it when the run no longer holds the environment lock (broken by ``inv unlock``);
  runs each step under its time limit; marks where each step begins with a per-run
  token no step can know, and journals each completed step.
- The **history**: the ``record`` step appends one JSON line per run to
  ``history.jsonl``.

The command templates are filled by :mod:`releasebook.plan` (the lock's values by
``plan.values.lock_values``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from releasebook.runbooks.model import Step, cmd

LEASE = 300.0  # seconds a lock is good for unless renewed
RENEW_EVERY = 120.0
STEP_LOCK_WAIT = 300  # seconds a script waits for another one still running on the host
BUSY = 75  # flock's exit status when that wait ran out
LOCK_LOST = 76  # the fence found that this run no longer holds the environment lock
TIMED_OUT = 124  # timeout(1)'s exit status
# A lease is a time: anything outside this range was not written by releasebook.
_LEASE_RANGE = (0.0, 4_102_444_800.0)  # 1970 .. 2100


def iso(epoch: float) -> str:
    if not math.isfinite(epoch) or not _LEASE_RANGE[0] <= epoch <= _LEASE_RANGE[1]:
        return "an unreadable time"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockInfo:
    """What ``info.json`` holds. Read from a host, it is untrusted: :meth:`parse` never
    raises, and a lock whose info cannot be read (``token`` empty, an acquire killed
    half-way or a file someone wrote) counts as stale."""

    user: str
    controller: str
    pid: int
    started: str
    command: str
    release: str
    token: str
    lease_until: float

    def stale(self, now: float | None = None) -> bool:
        return self.lease_until < (time.time() if now is None else now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def token_mark(self) -> str:
        return token_mark(self.token)

    @classmethod
    def parse(cls, text: str) -> LockInfo:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return UNREADABLE

        def text_of(key: str) -> str:
            value = data.get(key)
            return value[:200] if isinstance(value, str) else "?"

        raw_lease = data.get("lease_until")
        pid = data.get("pid")
        token = data.get("token")
        lease = 0.0
        if isinstance(raw_lease, int | float) and not isinstance(raw_lease, bool):
            candidate = float(raw_lease)
            if math.isfinite(candidate) and _in_range(candidate):
                lease = candidate
        return cls(
            user=text_of("user"),
            controller=text_of("controller"),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            started=text_of("started"),
            command=text_of("command"),
            release=text_of("release"),
            token=token if isinstance(token, str) and token.isalnum() else "",
            lease_until=lease,
        )

    def describe(self, now: float | None = None) -> str:
        if not self.token:
            return "an unreadable lock (no valid info.json: an acquire killed half-way?)"
        lease = (
            f"stale since {iso(self.lease_until)}"
            if self.stale(now)
            else f"lease active until {iso(self.lease_until)}"
        )
        return (
            f"{self.user} on {self.controller} (pid {self.pid}) since {self.started}, "
            f"running `{self.command}` of release {self.release or '(none)'}; {lease}"
        )

    def holder(self) -> dict[str, Any]:
        """What a history record says of a broken lock's holder (never the token)."""
        return {k: v for k, v in asdict(self).items() if k != "token"}


def _in_range(value: float) -> bool:
    return _LEASE_RANGE[0] <= value <= _LEASE_RANGE[1]


UNREADABLE = LockInfo("?", "?", 0, "?", "?", "?", "", 0.0)


def token_mark(token: str) -> str:
    """How ``LockInfo.to_json`` writes the token: what the scripts look for."""
    return json.dumps({"token": token})[1:-1]


# --- the state probe: read-only, one line per fact -------------------------------------

PROBE = (
    # The hosts' Python, for the wheels (releasebook.plan.target): never fails the probe.
    cmd("printf 'python=%s\\n' \"$({python} -c {python_probe} 2>/dev/null || true)\""),
    cmd("cd {deploy} 2>/dev/null || exit 0"),
    cmd('if [ -L current ]; then printf \'current=%s\\n\' "$(basename "$(readlink current)")"; fi'),
    cmd("if [ -d releases ]; then ls -1 releases | sed 's/^/release=/'; fi"),
    cmd("if [ -f {history} ]; then tail -n 200 {history} | sed 's/^/history=/'; fi"),
    cmd(
        'for done in venvs/*/.complete; do if [ -e "$done" ]; then '
        'printf \'venv=%s\\n\' "$(basename "$(dirname "$done")")"; fi; done'
    ),
    cmd("if [ -x {supervisord} ] && [ -x {uv} ]; then echo tools=ready; fi"),
    cmd("if [ -f {journal} ]; then tail -n 40 {journal} | sed 's/^/journal=/'; fi"),
    cmd("if [ -f {lock_info} ]; then printf 'lock=%s\\n' \"$(tr -d '\\n' < {lock_info})\"; fi"),
)

READ_HISTORY = (cmd("if [ -f {history} ]; then tail -n {limit} {history}; fi"),)

# --- the environment lock -------------------------------------------------------------

_WRITE_INFO = (
    "printf '%s\\n' {lock_info_json} > {lock_info_tmp} && mv -f {lock_info_tmp} {lock_info}"
)
# A lock directory seen without info.json is usually an acquire between its mkdir and
# its write: give that writer two seconds before reporting what is there.
_WAIT_FOR_INFO = (
    'n=0; while [ -d {lock_dir} ] && [ ! -f {lock_info} ] && [ "$n" -lt 20 ]; do '
    "sleep 0.1; n=$((n + 1)); done"
)
_SHOW_HOLDER = (
    "if [ -f {lock_info} ]; then printf 'info=%s\\ndigest=%s\\n' "
    "\"$(tr -d '\\n' < {lock_info})\" \"$(sha256sum {lock_info} | cut -d' ' -f1)\"; "
    "else echo digest=-; fi"
)

ACQUIRE = (
    cmd("mkdir -p {state}"),
    cmd(
        "if mkdir {lock_dir} 2>/dev/null; then\n"
        f"  if {_WRITE_INFO}; then echo state=acquired\n"
        "  else rm -rf {lock_dir}; echo 'cannot write the lock info' >&2; exit 1; fi\n"
        "else\n"
        f"  {_WAIT_FOR_INFO}\n"
        "  if [ -d {lock_dir} ]; then echo state=held; else echo state=gone; fi\n"
        f"  {_SHOW_HOLDER}\n"
        "  exit 0\n"
        "fi"
    ),
)

LOCK = Step(
    name="lock",
    title="Take the environment lock",
    why=(
        "Makes this run the only release, rollback or preflight on the environment: "
        "`mkdir` of the lock directory succeeds for exactly one of two runs, and its "
        "`info.json` says who holds it, for what and until when (a lease the run renews "
        "every two minutes; a lease that ran out means its run died). The first host (by "
        "address) is locked alone first, so of two runs started at once one goes on and "
        "the other stops there; then the others. In the same script, once the lock is "
        "held, the host's state is read: the live release, the releases kept, their "
        "history, the virtualenvs; the rest of the plan is decided from it."
    ),
    phase="prepare",
    commands=(*ACQUIRE, *PROBE),
    verify_text="Each host printed `state=acquired`.",
    undo=(
        cmd(
            "if grep -qF {lock_token_mark} {lock_info} 2>/dev/null; then\n"
            '  mv {lock_dir} {lock_gone}."$$" && rm -rf {lock_gone}."$$"\n'
            "  echo state=released\n"
            "else echo state=lost; fi"
        ),
    ),
    undo_text="Release the lock where this run still holds it.",
    timeout=120,
    framed=False,
    first_alone=True,
    bookkeeping=True,
)

RENEW = (
    cmd(
        "if grep -qF {lock_token_mark} {lock_info} 2>/dev/null; then\n"
        f"  {_WRITE_INFO}\n"
        "  echo state=renewed\n"
        "else echo state=lost; fi"
    ),
)

READ_LOCK = (
    cmd(_WAIT_FOR_INFO),
    cmd("if [ ! -d {lock_dir} ]; then echo state=none; exit 0; fi"),
    cmd("echo state=held"),
    cmd(_SHOW_HOLDER),
)

# Breaks the lock only if it is still the one shown (same info.json, by digest).
BREAK_LOCK = (
    cmd("if [ ! -d {lock_dir} ]; then echo state=none; exit 0; fi"),
    cmd("digest=$(sha256sum {lock_info} 2>/dev/null | cut -d' ' -f1)"),
    cmd(
        'if [ "${{digest:--}}" = {shown_digest} ]; then\n'
        '  mv {lock_dir} {lock_gone}."$$" && rm -rf {lock_gone}."$$"\n'
        "  echo state=broken\n"
        "else\n"
        "  echo state=changed\n"
        f"  {_SHOW_HOLDER}\n"
        "fi"
    ),
)

FENCE = (
    cmd(
        "if ! grep -qF {lock_token_mark} {lock_info} 2>/dev/null; then\n"
        "  printf '%s\\n' {lock_lost_message} >&2; exit " + str(LOCK_LOST) + "\n"
        "fi"
    ),
)
LOCK_LOST_MESSAGE = (
    "this run no longer holds the environment lock on this host: it was broken "
    "(inv unlock) or taken over by another run; stopping before any change"
)

UNLOCK = Step(
    name="unlock",
    title="Release the environment lock",
    why=(
        "Ends the run: the lock is removed where this run's token still holds it (a lock "
        "someone broke and another run took is left alone). It is renamed away first, so "
        "a renewal racing with the removal cannot write into it."
    ),
    phase="finish",
    commands=LOCK.undo,
    verify_text="Each host printed `state=released`.",
    undo_text="Nothing to undo. A lock left behind is reported by `inv status` and "
    "broken with `inv unlock`.",
    timeout=60,
    bookkeeping=True,
)

# --- the script frame -------------------------------------------------------------------

# The script and each step's commands are passed to bash literally, through quoted
# heredocs: no quoting within quoting, and stdin stays the step's own.
SCRIPT_END = "RELEASEBOOK_SCRIPT"
STEP_END = "RELEASEBOOK_STEP"
SCRIPT = (
    "set -eu\n"
    "command -v flock >/dev/null || "
    "{{ echo 'flock (util-linux) is required on this host' >&2; exit 127; }}\n"
    "command -v timeout >/dev/null || "
    "{{ echo 'timeout (coreutils) is required on this host' >&2; exit 127; }}\n"
    "mkdir -p {state}\n"
    "rc=0\n"
    "flock -o -w " + str(STEP_LOCK_WAIT) + " -E " + str(BUSY) + " {steps_lock} "
    f"bash -c \"$(cat <<'{SCRIPT_END}'\n{{body}}\n{SCRIPT_END}\n)\" || rc=$?\n"
    'if [ "$rc" = ' + str(BUSY) + " ]; then printf '%s\\n' {busy_message} >&2; fi\n"
    'exit "$rc"'
)
BUSY_MESSAGE = (
    f"another releasebook script is still running on this host; waited {STEP_LOCK_WAIT}s "
    "for its step lock"
)
MARK = "printf '%s %s\\n' {marker} \"$(date +%s.%N)\"; printf '%s\\n' {marker} >&2"
RUN_STEP = (
    f"timeout -k 10 {{timeout}} bash -c \"$(cat <<'{STEP_END}'\n{{step_body}}\n{STEP_END}\n)\" "
    '|| {{ rc=$?; if [ "$rc" = ' + str(TIMED_OUT) + " ]; then "
    "printf 'timed out after %ss\\n' {timeout} >&2; fi; exit \"$rc\"; }}"
)
JOURNAL = "printf '%s %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {journal_entry} >> {journal}"

# --- the history record -------------------------------------------------------------------

RECORD = Step(
    name="record",
    title="Record the run in the history",
    why=(
        "Appends one JSON line to `.releasebook/history.jsonl` on each host: who, when, "
        "the git sha, the outcome, how long each step took, the release that was live "
        "before, what the readiness gate skipped and why. `inv history` reads it; a "
        "rollback picks its target from it."
    ),
    phase="finish",
    commands=(cmd("printf '%s\\n' {record} >> {history}"),),
    verify_text="The history's last line is this run's record.",
    undo_text="Nothing to undo: the history only grows.",
    timeout=60,
    bookkeeping=True,
)
