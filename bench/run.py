"""Benchmark releases and rollbacks on N simulated hosts, under steady HTTP load.

For each N it starts N simulated hosts (real OpenSSH servers on loopback addresses, each
in its own mount namespace), makes a first release (setup, not measured), then measures
a release with no dependency change and a rollback:

- wall time, and the marginal cost of one more host: (T(N) - T(1)) / (N - 1)
- SSH sessions per host (sshd's "Starting session" lines, LogLevel VERBOSE)
- CPU seconds and peak memory of the controller (the `inv` process and its children)
- failed requests under load (every web host's /healthz at 20 requests/s, throughout)

Usage:  .venv/bin/python bench/run.py [--hosts 1,5,10,20] [--out docs/performance.md]
Needs root (mount namespaces), PostgreSQL and Redis on 127.0.0.1, like the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from e2e_project import HOST_HEADER, WHEEL_CACHE, Project, make_project, ssh_inventory  # noqa: E402
from load import Load  # noqa: E402
from services import fresh_database  # noqa: E402
from simhosts import SimFleet  # noqa: E402

# Steady load per web host. Unthrottled load would eat the two cores the simulated hosts
# share and measure the load generator rather than the release.
LOAD_RATE = 20.0


@dataclass
class Measure:
    action: str
    hosts: int
    seconds: float
    cpu: float
    peak_mb: float
    sessions_max: int
    sessions_mean: float
    requests: int
    failed: int


def _run_inv(
    project: Project, *args: str
) -> tuple[subprocess.CompletedProcess[str], float, float, float]:
    """Run `inv` and return (result, wall seconds, CPU seconds, peak RSS MB) of it."""
    env = {
        **os.environ,
        "RELEASEBOOK_ROOT": str(project.root),
        "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
    }
    inv = str(Path(sys.executable).with_name("inv"))
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([inv, *args], cwd=project.root, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        done = subprocess.CompletedProcess([inv, *args], code, out.read(), err.read())
    cpu = usage.ru_utime + usage.ru_stime
    return done, wall, cpu, usage.ru_maxrss / 1024


def _roles(n: int) -> dict[str, list[str]]:
    if n == 1:
        return {"host1": ["web", "worker", "beat", "migrate"]}
    roles = {f"host{i}": ["web"] for i in range(1, n + 1)}
    roles["host1"] = ["web", "migrate"]
    roles[f"host{n}"] = ["web", "worker", "beat"]
    return roles


def _measure(project: Project, fleet: SimFleet, action: str, n: int, *args: str) -> Measure:
    before = {h.name: h.session_count() for h in fleet.hosts}
    urls = [f"http://{h.address}:8000/healthz" for h in fleet.hosts]
    with Load(urls, HOST_HEADER, threads_per_url=1, max_seconds=900, rate=LOAD_RATE) as load:
        done, wall, cpu, peak = _run_inv(project, action, "--env=e2e", *args)
    if done.returncode != 0:
        raise SystemExit(f"{action} on {n} hosts failed:\n{done.stdout}\n{done.stderr}")
    sessions = [h.session_count() - before[h.name] for h in fleet.hosts]
    for failure in load.report.failures[:5]:
        print(f"  N={n}: {action}: failed request: {failure}", flush=True)
    return Measure(
        action,
        n,
        wall,
        cpu,
        peak,
        max(sessions),
        sum(sessions) / len(sessions),
        load.report.total,
        len(load.report.failures),
    )


def bench(n: int, base: Path) -> list[Measure]:
    with (
        fresh_database("rb_bench") as database,
        SimFleet.start(n, base / f"fleet{n}", names=list(_roles(n))) as fleet,
    ):
        inventory = ssh_inventory(
            fleet,
            database_url=database,
            broker_url="redis://127.0.0.1:6379/9",
            timeout=300,
            roles=_roles(n),
        )  # web.workers: 2, served by one gunicorn master per host
        project = make_project(base / f"project{n}", inventory)
        done, wall, _, _ = _run_inv(project, "release", "--env=e2e")
        if done.returncode != 0:
            raise SystemExit(f"first release on {n} hosts failed:\n{done.stdout}\n{done.stderr}")
        print(f"  N={n}: first release (setup) {wall:.1f}s", flush=True)
        css = project.root / "example" / "notes" / "static" / "notes" / "site.css"
        css.write_text(css.read_text() + "\n/* bench */\n")
        project.commit("a code change, no dependency change")
        measures = [_measure(project, fleet, "release", n)]
        measures.append(_measure(project, fleet, "rollback", n))
        for m in measures:
            print(f"  N={n}: {m.action} {m.seconds:.1f}s", flush=True)
        return measures


def _table(measures: list[Measure]) -> str:
    rows = [
        "| action | hosts | wall s | marginal s/host | SSH sessions/host (max, mean) "
        "| controller CPU s | controller peak MB | requests | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    first = {m.action: m.seconds for m in measures if m.hosts == 1}
    for m in measures:
        marginal = (
            f"{(m.seconds - first[m.action]) / (m.hosts - 1):.2f}"
            if m.hosts > 1 and m.action in first
            else "-"
        )
        rows.append(
            f"| {m.action} | {m.hosts} | {m.seconds:.1f} | {marginal} | "
            f"{m.sessions_max}, {m.sessions_mean:.1f} | {m.cpu:.1f} | {m.peak_mb:.0f} | "
            f"{m.requests} | {m.failed} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,5,10,20", help="comma-separated host counts")
    parser.add_argument("--out", type=Path, help="write the table into this markdown file")
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp:
        for n in counts:
            print(f"N={n} ...", flush=True)
            measures.extend(bench(n, Path(tmp)))
    table = _table(measures)
    print(table)
    if args.out:
        text = args.out.read_text() if args.out.exists() else ""
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        stamp = (
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
            f"Python {platform.python_version()}.\n\n"
        )
        block = f"{start}\n{stamp}{table}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text += "\n" + block + "\n"
        args.out.write_text(text)


if __name__ == "__main__":
    main()
