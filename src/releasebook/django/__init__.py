"""releasebook's Django app: health probes, a readiness gate and request IDs.

Add ``"releasebook.django"`` to INSTALLED_APPS (label ``releasebook``),
``path("", include("releasebook.django.urls"))`` to the URLconf, and
``"releasebook.django.middleware.RequestIdMiddleware"`` at the top of MIDDLEWARE.

- ``GET /healthz``: liveness; touches no dependency.
- ``GET /readyz``: readiness; database, migrations, cache and Celery broker, each
  bounded by its own timeout (see ``checks``). 200 when all pass, else 503.
- ``manage.py readiness``: the same checks plus required environment variables, as a
  deploy gate (exit 0 ready, 1 not ready, 2 bad usage or configuration).

Probes usually reach the app port by IP and over plain http, so they must send the
site's real ``Host`` header (one of ALLOWED_HOSTS, else Django answers 400) and
``X-Forwarded-Proto: https`` (which SECURE_PROXY_SSL_HEADER trusts, else
SECURE_SSL_REDIRECT answers 301). For load balancers that cannot send it, exempt the
probes: ``SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]`` (when included at
the URL root).

Settings read (all optional): RELEASEBOOK_MANIFEST, RELEASEBOOK_CHECK_TIMEOUT,
RELEASEBOOK_CHECK_TIMEOUTS, RELEASEBOOK_REQUIRED_ENV, CELERY_BROKER_URL (or the
environment variable of that name), CELERY_BROKER_TRANSPORT_OPTIONS, DATABASES,
CACHES and BASE_DIR.
"""
