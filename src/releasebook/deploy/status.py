"""``inv status``: each host's facts, read without the lock (a run may be under way)."""

from __future__ import annotations

from releasebook.deploy.connection import connect
from releasebook.execute.lock import read_facts
from releasebook.inventory import Environment
from releasebook.masking import Masker
from releasebook.plan.facts import HostFacts


def status(env: Environment, masker: Masker) -> dict[str, HostFacts]:
    with connect(env, masker) as transports:
        return read_facts(env, transports)
