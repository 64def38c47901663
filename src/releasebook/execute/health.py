"""Readiness verification: GET the health URL until it names the expected release.

The probe sends the site's real Host header and ``X-Forwarded-Proto`` so that
ALLOWED_HOSTS and SECURE_SSL_REDIRECT answer as they do for users, and retries with
backoff until the deadline: a server still booting or still running the old release
is retried, never accepted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from releasebook.plan.model import HttpProbe

REQUEST_TIMEOUT = 5.0
# The static file's URL path comes from the host's answer: untrusted, so only a plain path.
STATIC_PATH = re.compile(r"/[A-Za-z0-9._~/%+-]{1,400}")
# Lets releasebook's probe through maintenance mode (releasebook.django.maintenance): a
# release run in maintenance is verified before the site opens again.
PROBE_HEADER = ("X-Releasebook-Probe", "readiness")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    attempts: int
    duration: float
    detail: str


def _check_once(client: httpx.Client, probe: HttpProbe, timeout: float) -> tuple[bool, str]:
    try:
        response = client.get(
            probe.url,
            headers={
                "Host": probe.host_header,
                "X-Forwarded-Proto": probe.forwarded_proto,
                PROBE_HEADER[0]: PROBE_HEADER[1],
            },
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return False, f"GET {probe.url}: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return False, f"GET {probe.url}: HTTP {response.status_code}: {response.text[:300]}"
    try:
        body = response.json()
    except ValueError:
        return False, f"GET {probe.url}: HTTP 200 but the body is not JSON"
    release = body.get("release") if isinstance(body, dict) else None
    if release != probe.expect_release:
        return False, (
            f"GET {probe.url}: serving release {release!r}, expected {probe.expect_release!r}"
        )
    ready = f"GET {probe.url}: HTTP 200, release {release}"
    if probe.static_base is None:
        return True, ready
    static = body.get("static")
    if static is None:
        return True, f"{ready}; no collected CSS file to check"
    ok, detail = _check_static(client, probe, static, timeout)
    return ok, f"{ready}; {detail}" if ok else detail


def _check_static(
    client: httpx.Client, probe: HttpProbe, static: object, timeout: float
) -> tuple[bool, str]:
    if not isinstance(static, str) or not STATIC_PATH.fullmatch(static):
        return False, f"GET {probe.url}: 'static' is not a URL path: {str(static)[:80]!r}"
    url = f"{probe.static_base}{static}"
    try:
        response = client.get(
            url,
            headers={"Host": probe.host_header, "X-Forwarded-Proto": probe.forwarded_proto},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}: {exc}"
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not content_type.startswith("text/css"):
        return False, (
            f"GET {url}: HTTP {response.status_code} {content_type or 'no content type'}, "
            "expected 200 text/css: static files are not served"
        )
    return True, f"GET {static}: 200 text/css"


def wait_ready(probe: HttpProbe) -> ProbeResult:
    started = time.monotonic()
    deadline = started + probe.deadline
    delay = 0.1
    attempts = 0
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            ok, detail = _check_once(client, probe, max(0.1, min(REQUEST_TIMEOUT, remaining)))
            if ok:
                return ProbeResult(True, attempts, time.monotonic() - started, detail)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ProbeResult(
                    False,
                    attempts,
                    time.monotonic() - started,
                    f"not ready after {probe.deadline:g}s ({attempts} attempts); last: {detail}",
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)


def check_once(probe: HttpProbe) -> tuple[bool, str]:
    """One GET of the probe, no retry: whether it passed, and what it answered."""
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        return _check_once(client, probe, min(REQUEST_TIMEOUT, probe.deadline))
