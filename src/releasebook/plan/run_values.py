"""A run's values for the generated Ansible playbooks, printed as JSON on the controller.

The playbooks run the symbolic plan (the runbooks' commands, whose run-specific values
are shell variables); their first play runs ``python -m releasebook.plan.run_values``
from the repository root to get those variables exactly as ``inv release`` and ``inv
rollback`` make them: the release id, git sha and requirements hash of
:func:`~releasebook.plan.source.new_release`, the tools' hash, a fresh lock token and
step marker, and who runs it and when (the history record's ``by`` and ``at``). Nothing
here touches a host.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from releasebook.errors import ReleasebookError, UsageError
from releasebook.inventory import load_environment
from releasebook.plan.source import find_source, new_release, tools_hash

KINDS = ("release", "rollback")


def run_values(kind: str, env_name: str, root: Path) -> dict[str, object]:
    if kind not in KINDS:
        raise UsageError(f"expected one of {', '.join(KINDS)}, not {kind!r}")
    env = load_environment(env_name, root)
    source = find_source(env)
    info = new_release(env, source)
    shell = {
        "COMMAND": kind,
        "LOCK_TOKEN": secrets.token_hex(16),
        "MARK": secrets.token_hex(8),
        "PYTHON_ABI": source.python_abi,
        "PYTHON_VERSION": source.python_version,
    }
    base: dict[str, object] = {"action": kind, "by": info.created_by, "at": info.created_at}
    if kind == "release":
        shell |= {
            "RELEASE": info.release_id,
            "GIT_SHA": info.git_sha,
            "REQ_HASH": info.requirements_hash,
            "TOOLS_HASH": tools_hash(source),
        }
        base |= {"release": info.release_id, "git_sha": info.git_sha}
    return {"env": shell, "base": base}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(
            "usage: python -m releasebook.plan.run_values release|rollback ENV ROOT",
            file=sys.stderr,
        )
        return 2
    try:
        values = run_values(argv[0], argv[1], Path(argv[2]).resolve())
    except ReleasebookError as exc:
        print(f"releasebook: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(values, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
