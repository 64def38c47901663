"""gunicorn's worker class for an ASGI app: uvicorn-worker's, saying what a stop closes.

releasebook's program definitions run an ASGI app with
``--worker-class releasebook.django.asgi_worker.UvicornWorker``. It is uvicorn-worker's
``UvicornWorker`` (needs the ``uvicorn-worker`` package), whose server logs, as it starts
a graceful shutdown (gunicorn's TERM), how many WebSocket connections it is closing::

    releasebook: closing 3 WebSocket connection(s) with 1012 (service restart)

Each open WebSocket then gets a close frame with code 1012, so its client knows to
reconnect; the restart step adds these lines up into the release's report.

A connection the worker accepted just before the stop but whose request it has not read
yet would be closed by uvicorn without a response (its HTTP protocol closes every
connection with no request in progress). The server stops accepting first, then gives
such connections up to ``ACCEPTED_GRACE`` seconds to deliver their request, which it then
answers before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

# releasebook.deploy.release reads these lines back (the tests keep the two in step).
CLOSING = "releasebook: closing %d WebSocket connection(s) with 1012 (service restart)"

logger = logging.getLogger("uvicorn.error")

# Clients send their request as they connect: well under this on a loaded host.
ACCEPTED_GRACE = 1.0


class _Server(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        protocol = self.config.ws_protocol_class
        closing = sum(
            1
            for connection in self.server_state.connections
            if protocol is not None and isinstance(connection, protocol)
        )
        logger.info(CLOSING, closing)
        for server in self.servers:
            server.close()
        await self._read_accepted(ACCEPTED_GRACE)
        await super().shutdown(sockets)

    async def _read_accepted(self, grace: float) -> None:
        """Wait, up to ``grace`` seconds, until no HTTP connection is still without its
        first request (uvicorn's protocols set ``cycle`` when one arrives)."""
        protocol = self.config.ws_protocol_class
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            getattr(connection, "cycle", False) is None
            for connection in self.server_state.connections
            if protocol is None or not isinstance(connection, protocol)
        ):
            await asyncio.sleep(0.01)


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
