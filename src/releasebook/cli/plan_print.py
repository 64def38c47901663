"""``--dry-run``: a plan printed whole, every step, target and command, then a summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from releasebook.plan.model import Plan


def print_plan(plan: Plan, out: Callable[[str], None], checked: Sequence[str] = ()) -> None:
    """Every step, target and command of ``plan``, and the frame each host script runs
    in, shown once; then what was checked on this machine, as a summary."""
    env = plan.environment
    action = next(iter(plan.frames.values())).action if plan.frames else plan.kind
    out(f"# {action} plan for {env.name}: {plan.release_id} (dry run)")
    out(
        "\n## How each host runs its steps\n"
        "Each host's consecutive steps run as one script in this frame: the host's step "
        "lock held, the fence first, then for each step its start marker, its commands "
        "under its time limit, and a journal line."
    )
    if plan.frames:
        host, frame = next(iter(plan.frames.items()))
        out(f"### {host} (the others alike)")
        out(frame.script([("STEP", ("COMMANDS OF THE STEP",), 600)]).rstrip("\n"))
    for planned in plan.steps:
        out(f"\n## {planned.number}. {planned.step.name}: {planned.step.title}")
        for work in planned.work:
            out(f"### {work.target}  (time limit {work.timeout:g}s)")
            if work.probe is not None:
                p = work.probe
                out(
                    f"GET {p.url}  Host: {p.host_header}  X-Forwarded-Proto: {p.forwarded_proto}"
                    f"  expect release {p.expect_release} within {p.deadline:g}s"
                )
                if p.static_base is not None:
                    out(f"GET {p.static_base}<the answer's static path>  expect 200 text/css")
            for upload in work.uploads:
                skip = f"  (skipped when: {upload.skip_if})" if upload.skip_if else ""
                out(f"put {upload.local} -> {upload.remote}{skip}")
            for command in work.commands + work.verify:
                out(command)
            if work.undo:
                out("# undo:")
                for command in work.undo:
                    out(command)
    hosts = len(env.hosts)
    if checked:
        out("\n## Checked on this machine")
        for line in checked:
            out(f"ok: {line}")
    counted = f"\ndry run: {len(plan.steps)} steps on {hosts} host{'s' * (hosts != 1)}; "
    if plan.kind == "rollback":
        out(counted + "nothing was contacted or changed")
        return
    out(
        counted + f"{len(checked)} local check(s) passed (the secrets are readable); the "
        "hosts' own checks run in the real run's preflight step; nothing was contacted or "
        "changed"
    )
