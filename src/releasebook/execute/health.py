"""Readiness verification: GET the health URL until it names the expected release.

The probe sends the site's real Host header and ``X-Forwarded-Proto`` so that
ALLOWED_HOSTS and SECURE_SSL_REDIRECT answer as they do for users, and retries with
backoff until the deadline: a server still booting or still running the old release
is retried, never accepted.

For an ASGI app with ``health.websocket_path`` it then opens a WebSocket to that path
on the same server, with the same Host header and the Origin a browser on the site
sends, requires the upgrade (101) and an echo of a fresh token; when the answer is
releasebook's consumer (JSON with ``echo`` and ``release``) the release must match too.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect
from websockets.typing import Origin

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
    if probe.websocket_url:
        ok, detail = _websocket_once(probe, timeout)
        if not ok:
            return False, detail
        ready = detail
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
    headers = {"Host": probe.host_header, "X-Forwarded-Proto": probe.forwarded_proto}
    try:
        if url.startswith("https://"):
            # nginx's certificate names the site, not the host's address this goes to;
            # nothing secret is sent, and what is checked is only that CSS is served.
            with httpx.Client(verify=False, trust_env=False) as direct:  # noqa: S501
                response = direct.get(url, headers=headers, timeout=timeout)
        else:
            response = client.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}: {exc}"
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not content_type.startswith("text/css"):
        return False, (
            f"GET {url}: HTTP {response.status_code} {content_type or 'no content type'}, "
            "expected 200 text/css: static files are not served"
        )
    return True, f"GET {static}: 200 text/css"


def _websocket_once(probe: HttpProbe, timeout: float) -> tuple[bool, str]:
    """Open the WebSocket through this host's server (the socket goes to the bind
    address; the URL, hence the Host header, names the site), send a token, read the echo."""
    assert probe.websocket_url is not None
    parts = urlsplit(probe.websocket_url)
    where = f"WebSocket {probe.websocket_url}"
    url = f"ws://{probe.host_header}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    token = f"releasebook-verify-{secrets.token_hex(8)}"
    try:
        sock = _connect_socket(parts.netloc, timeout)
    except OSError as exc:
        return False, f"{where}: {type(exc).__name__}: {exc}"
    try:
        with connect(
            url,
            sock=sock,
            origin=Origin(probe.origin) if probe.origin else None,
            open_timeout=timeout,
            close_timeout=timeout,
            proxy=None,
            compression=None,
        ) as ws:
            ws.send(token)
            answer = ws.recv(timeout=timeout)
    except InvalidStatus as exc:
        code = exc.response.status_code
        return False, f"{where}: no upgrade, HTTP {code} (Origin {probe.origin})"
    except (OSError, TimeoutError, WebSocketException) as exc:
        return False, f"{where}: {type(exc).__name__}: {exc}"
    finally:
        sock.close()
    text = answer if isinstance(answer, str) else answer.decode(errors="replace")
    if text == token:
        return True, f"GET {probe.url}: HTTP 200, release {probe.expect_release}; {where}: echo"
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("echo") != token:
        return False, f"{where}: upgraded but answered {text[:100]!r}, not the echo"
    if body.get("release") != probe.expect_release:
        return False, (
            f"{where}: served by release {body.get('release')!r}, expected {probe.expect_release!r}"
        )
    return True, (
        f"GET {probe.url}: HTTP 200, release {probe.expect_release}; "
        f"{where}: upgraded, echo from release {probe.expect_release}"
    )


def _connect_socket(netloc: str, timeout: float) -> socket.socket:
    host, _, port = netloc.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


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
