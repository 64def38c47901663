"""releasebook: release, verify and roll back Django apps from one runbook definition."""

__version__ = "0.1.0"
