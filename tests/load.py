"""Steady HTTP load on web hosts, recording which release answered each request.

Bounded in time and count, loopback addresses only; used by the fleet tests and the
benchmark to show that a release or rollback fails no request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadReport:
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (url, release)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answered.values()) + len(self.failures)

    def releases(self, url: str | None = None) -> set[str]:
        return {r for (u, r) in self.answered if url is None or u == url}


class Load:
    def __init__(
        self,
        urls: list[str],
        host_header: str,
        *,
        threads_per_url: int = 2,
        max_seconds: float = 600,
        max_requests: int = 500_000,
        rate: float | None = None,
        keep_alive: bool = True,
    ) -> None:
        """``rate``: requests per second per thread (steady load); None: as fast as it can.
        ``keep_alive`` False: one connection per request (``Connection: close``), as a
        reverse proxy such as nginx talks to its upstream by default."""
        self._urls = urls
        self._headers = {"Host": host_header, "X-Forwarded-Proto": "https"}
        if not keep_alive:
            self._headers["Connection"] = "close"
        self._threads_per_url = threads_per_url
        self._deadline = time.monotonic() + max_seconds
        self._budget = max_requests
        self._interval = 1 / rate if rate else 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.report = LoadReport()

    def __enter__(self) -> Load:
        for url in self._urls:
            for _ in range(self._threads_per_url):
                thread = threading.Thread(target=self._hammer, args=(url,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _take(self) -> bool:
        with self._lock:
            if self._budget <= 0 or time.monotonic() > self._deadline:
                return False
            self._budget -= 1
            return True

    def _hammer(self, url: str) -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            while self._take():
                if self._interval and self._stop.wait(self._interval):
                    break
                if self._stop.is_set():
                    break
                try:
                    response = client.get(url, headers=self._headers)
                except httpx.HTTPError as exc:
                    self._record_failure(f"{url}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self._record_failure(f"{url}: HTTP {response.status_code}")
                    continue
                with self._lock:
                    self.report.answered[(url, str(response.json().get("release")))] += 1

    def _record_failure(self, text: str) -> None:
        with self._lock:
            self.report.failures.append(text)
