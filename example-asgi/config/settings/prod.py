"""Deployed hosts: everything host-specific is required from the environment.

DJANGO_HTTPS=0 turns off the HTTPS-only settings so a plain-http localhost deploy
works; ``manage.py check --deploy`` then (rightly) warns about them.
"""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_list, parse_database_url, require_env

from .base import *  # noqa: F403
from .base import BASE_DIR

DEBUG = False
SECRET_KEY = require_env("DJANGO_SECRET_KEY")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the site's host names (no '*')")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Each release lives in its own directory, so an implicit sqlite file in BASE_DIR
# would silently start empty after every deploy.
DATABASES = {"default": parse_database_url(require_env("DATABASE_URL"), BASE_DIR)}

# Checked by `manage.py readiness` (names only, values are never printed).
RELEASEBOOK_REQUIRED_ENV = ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL"]

HTTPS = env_bool("DJANGO_HTTPS", default=True)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = HTTPS
# releasebook's probe sends X-Forwarded-Proto: https; load balancers that probe the app
# port over plain http without it still get an answer instead of a redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = 3600 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = False
SECURE_HSTS_PRELOAD = False
# HSTS starts at one hour and is raised once HTTPS is proven on the host;
# includeSubDomains and preload are hard to take back, so they stay an explicit decision.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
