"""Liveness (/healthz) and readiness (/readyz) endpoints plus the release identity.

Self-contained (Django and the standard library only) so it can move into a library.
Optional settings: RELEASE_MANIFEST (default BASE_DIR / "release.json") and
HEALTH_CHECK_TIMEOUT (seconds, default 3).
"""
