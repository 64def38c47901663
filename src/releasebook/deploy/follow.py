"""``inv app.logs --follow``: every host's new log lines as they are written, after the
newest lines merged by time, until Ctrl-C."""

from __future__ import annotations

import threading
from collections.abc import Callable

from releasebook.deploy.connection import Opener, connect, open_real
from releasebook.deploy.ops import LogLine, check_log_args, read_logs
from releasebook.errors import OperationFailed
from releasebook.execute.runner import plain_script
from releasebook.inventory import Environment
from releasebook.masking import Masker, strip_controls
from releasebook.plan.ops import DEFAULT_LINES, ops_plan
from releasebook.runbooks import ops as book
from releasebook.transport import Result, Transport

# How long every host has to start its tails before following gives up on it.
START_DEADLINE = 30.0


class _Follower:
    """One host's follow script, run in a thread: its lines held until ``release``, then
    handed to ``out`` as they come."""

    def __init__(self, name: str, transport: Transport, script: str, timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self.started = threading.Event()
        self.ended = threading.Event()
        self.outcome = ""
        self._transport = transport
        self._script = script
        self._lock = threading.Lock()
        self._held: list[LogLine] = []
        self._out: Callable[[LogLine], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _line(self, raw: str) -> None:
        self.started.set()  # the first heartbeat comes once every tail is running
        file, _, text = strip_controls(raw).partition(" ")
        if not file:
            return
        line = LogLine(self.name, file, None, text)
        with self._lock:
            if self._out is None:
                self._held.append(line)
                return
            self._out(line)

    def release(self, out: Callable[[LogLine], None], seen: set[tuple[str, str, str]]) -> None:
        """From now on, hand lines to ``out``; the held ones first, less those in ``seen``
        (already printed with the newest lines)."""
        with self._lock:
            for line in self._held:
                if (line.host, line.file, line.text) not in seen:
                    out(line)
            self._held.clear()
            self._out = out

    def _run(self) -> None:
        try:
            result = self._transport.run(self._script, timeout=self._timeout, on_line=self._line)
            self.outcome = _ended(result)
        except Exception as exc:
            self.outcome = f"{type(exc).__name__}: {exc}"
        finally:
            self.started.set()
            self.ended.set()


def _ended(result: Result) -> str:
    tail = strip_controls(result.tail(3)).strip()
    return f"its follow script ended (exit {result.exited})" + (f": {tail}" if tail else "")


def follow(
    env: Environment,
    masker: Masker,
    out: Callable[[str], None],
    note: Callable[[str], None],
    *,
    role: str | None = None,
    request_id: str = "",
    since: str = "",
    lines: int = DEFAULT_LINES,
    opener: Opener = open_real,
) -> None:
    """Print the newest ``lines`` (merged by time) and then each new line of every host's
    logs until Ctrl-C; ``note`` gets what is said about the following itself. Both get
    masked text. No line is lost between the two: the tails start first."""
    after, request_id = check_log_args(env, role, since, lines, request_id)
    printed = threading.Lock()

    def show(line: LogLine) -> None:
        with printed:
            out(masker.screen(line.show()))

    def say(text: str) -> None:
        note(masker.screen(text))

    with connect(env, masker, opener=opener) as transports:
        plan = ops_plan(
            env, book.LOGS_FOLLOW, facts={}, role=role, request_id=request_id or None, lines=lines
        )
        newest, tails = plan.steps
        followers = [
            _Follower(w.target, transports[w.target], plain_script(w.commands), w.timeout)
            for w in tails.work
        ]
        for follower in followers:
            follower.start()
        try:
            _await_start(followers)
            newest_lines = read_logs(env, newest, transports, since=after, lines=lines)
            for line in newest_lines:
                show(line)
            seen = {(line.host, line.file, line.text) for line in newest_lines}
            for follower in followers:
                follower.release(show, seen)
            names = ", ".join(f.name for f in followers)
            say(f"releasebook: following the logs of {names} (Ctrl-C stops)")
            _until_all_end(followers, say)
        except KeyboardInterrupt:
            say("releasebook: stopped following")
            return
    raise OperationFailed(
        "stopped following: "
        + "; ".join(f"{f.name}: {f.outcome}" for f in sorted(followers, key=lambda f: f.name))
    )


def _await_start(followers: list[_Follower]) -> None:
    for follower in followers:
        follower.started.wait(START_DEADLINE)
    failed = [f for f in followers if f.ended.is_set() or not f.started.is_set()]
    if failed:
        raise OperationFailed(
            "cannot follow the logs on "
            + "; ".join(f"{f.name}: {f.outcome or 'its tails did not start'}" for f in failed)
        )


def _until_all_end(followers: list[_Follower], out: Callable[[str], None]) -> None:
    """Wait (Ctrl-C ends it); say so when a host stops, return when all have."""
    reported: set[str] = set()
    while len(reported) < len(followers):
        for follower in followers:
            if follower.ended.wait(0.5) and follower.name not in reported:
                reported.add(follower.name)
                out(f"releasebook: {follower.name}: stopped following: {follower.outcome}")
