"""Verify's HTTP decisions: readiness names the release, then the named CSS file is served."""

from __future__ import annotations

import httpx
import pytest

from releasebook.execute.health import _check_once
from releasebook.plan.model import HttpProbe

PROBE = HttpProbe(
    url="http://10.0.0.1:8000/readyz",
    host_header="app.example.com",
    forwarded_proto="https",
    expect_release="r2",
    deadline=5.0,
    static_base="http://10.0.0.1:8000",
)


def _client(static: object, css_status: int = 200, css_type: str = "text/css") -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["host"] == "app.example.com"
        assert request.headers["x-forwarded-proto"] == "https"
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ok", "release": "r2", "static": static})
        if request.url.path == "/static/admin/css/base.css":
            return httpx.Response(css_status, headers={"content-type": css_type}, text="body{}")
        return httpx.Response(404, headers={"content-type": "text/html"}, text="no")

    return httpx.Client(transport=httpx.MockTransport(answer))


def test_ready_and_css_served_passes() -> None:
    ok, detail = _check_once(_client("/static/admin/css/base.css"), PROBE, 1.0)
    assert ok, detail
    assert "text/css" in detail


@pytest.mark.parametrize(
    ("static", "status", "content_type", "expected"),
    [
        ("/static/missing.css", 200, "text/css", "HTTP 404 text/html"),
        ("/static/admin/css/base.css", 200, "text/html; charset=utf-8", "expected 200 text/css"),
        ("/static/admin/css/base.css", 403, "text/css", "HTTP 403"),
        ("http://evil.example/x.css", 200, "text/css", "not a URL path"),
        ("/static/\x1b[31mx.css", 200, "text/css", "not a URL path"),
        (42, 200, "text/css", "not a URL path"),
    ],
)
def test_unserved_static_fails_naming_why(
    static: object, status: int, content_type: str, expected: str
) -> None:
    ok, detail = _check_once(_client(static, status, content_type), PROBE, 1.0)
    assert not ok
    assert expected in detail


def test_no_collected_css_or_check_off_passes_on_readiness_alone() -> None:
    ok, detail = _check_once(_client(None), PROBE, 1.0)
    assert ok and "no collected CSS" in detail
    off = HttpProbe(**{**PROBE.__dict__, "static_base": None})
    ok, detail = _check_once(_client("/static/missing.css"), off, 1.0)
    assert ok and "static" not in detail
