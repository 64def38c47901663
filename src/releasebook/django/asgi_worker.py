"""gunicorn's worker class for an ASGI app: uvicorn-worker's, saying what a stop closes.

releasebook's program definitions run an ASGI app with
``--worker-class releasebook.django.asgi_worker.UvicornWorker``. It is uvicorn-worker's
``UvicornWorker`` (needs the ``uvicorn-worker`` package), whose server logs, as it starts
a graceful shutdown (gunicorn's TERM), how many WebSocket connections it is closing::

    releasebook: closing 3 WebSocket connection(s) with 1012 (service restart)

Each open WebSocket then gets a close frame with code 1012, so its client knows to
reconnect; the restart step adds these lines up into the release's report.
"""

from __future__ import annotations

import logging
import socket
import sys

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

# releasebook.deploy.release reads these lines back (the tests keep the two in step).
CLOSING = "releasebook: closing %d WebSocket connection(s) with 1012 (service restart)"

logger = logging.getLogger("uvicorn.error")


class _Server(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        protocol = self.config.ws_protocol_class
        closing = sum(
            1
            for connection in self.server_state.connections
            if protocol is not None and isinstance(connection, protocol)
        )
        logger.info(CLOSING, closing)
        await super().shutdown(sockets)


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
