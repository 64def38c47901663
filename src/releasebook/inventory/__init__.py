"""The inventory: ``inventories/<env>.yml`` loaded and validated into a typed
:class:`Environment` (``load``), its data model (``model``) and the jump-host syntax
(``hops``)."""

from releasebook.inventory.load import ROLES, load_environment, load_inventory
from releasebook.inventory.model import (
    AppSettings,
    EnvFileSettings,
    Environment,
    HealthSettings,
    Host,
    MigrationSettings,
    SecretSource,
    SshSettings,
    WebSettings,
    WorkerSettings,
)

__all__ = [
    "ROLES",
    "AppSettings",
    "EnvFileSettings",
    "Environment",
    "HealthSettings",
    "Host",
    "MigrationSettings",
    "SecretSource",
    "SshSettings",
    "WebSettings",
    "WorkerSettings",
    "load_environment",
    "load_inventory",
]
