"""Definitions x environment x host facts -> a plan of exact commands (``build``), its
data model (``model``), the values that fill the templates (``values``), the hosts'
facts (``facts``), the order steps run in (``schedule``), and what is released
(``source``). Nothing here touches a network."""

from releasebook.plan.build import Run, build_plan, lock_hosts
from releasebook.plan.model import (
    Frame,
    HostWork,
    HttpProbe,
    Plan,
    PlanKind,
    PlannedStep,
    ReleaseInfo,
    Source,
)
from releasebook.plan.values import gate_argv, gate_options

__all__ = [
    "Frame",
    "HostWork",
    "HttpProbe",
    "Plan",
    "PlanKind",
    "PlannedStep",
    "ReleaseInfo",
    "Run",
    "Source",
    "build_plan",
    "gate_argv",
    "gate_options",
    "lock_hosts",
]
