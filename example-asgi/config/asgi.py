"""The ASGI application: Django for HTTP, Channels consumers for WebSockets.

gunicorn runs it with uvicorn's worker class (``-k uvicorn_worker.UvicornWorker``).
WebSocket routes only accept pages of the site's own hosts: the Origin header must name
one of ALLOWED_HOSTS, so another site cannot open a socket with a user's cookies.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")
# Django first: the consumers' imports need the app registry ready.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
