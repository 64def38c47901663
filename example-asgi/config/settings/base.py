"""Settings shared by dev and prod. Every secret and host-specific value comes from the
environment; see README.md for the contract."""

from pathlib import Path

from config.env import (
    env_bool,
    env_list,
    env_str,
    parse_cache_url,
    parse_database_url,
)

# The project root: the directory holding manage.py (and, once deployed, release.json).
BASE_DIR = Path(__file__).resolve().parent.parent.parent

DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

SITE_NAME = env_str("SITE_NAME", "releasebook example")
SITE_URL = env_str("SITE_URL", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "releasebook.django",
    "notes",
]

MIDDLEWARE = [
    # First, so every response (SSL redirects included) carries the id and is logged.
    "releasebook.django.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the collected static files from the app itself, where no nginx does.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": parse_database_url(env_str("DATABASE_URL", "sqlite:///db.sqlite3"), BASE_DIR),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": parse_cache_url(env_str("CACHE_URL", "locmem://"))}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = BASE_DIR / "media"

# Seconds each /readyz and `manage.py readiness` check may take before it counts as failed.
RELEASEBOOK_CHECK_TIMEOUT = 3.0

# Consumers in every worker of every web host share one Redis channel layer. Without
# CHANNELS_REDIS_URL (local work) the in-memory layer is used: one process only, which
# releasebook's gate (RB-ASGI-002) refuses for a deployed release.
CHANNELS_REDIS_URL = env_str("CHANNELS_REDIS_URL", "")
# Each idle consumer waits on the layer with a blocking BZPOPMIN of brpop_timeout (5 s).
# redis-py 8's default socket timeout is 5 s too: a read then times out, the consumer
# raises and uvicorn drops its WebSocket without a close frame (1006) seconds after it
# opened. No socket timeout, then: redis-py's TCP keepalive (on by default) still finds
# a dead Redis. A longer timeout is no better on Python 3.11, where the asyncio.wait_for
# redis-py writes through can swallow a consumer's cancellation: its receive then loops
# on BZPOPMIN for good, and a stopping worker waits for it until gunicorn kills it.
CHANNELS_REDIS_SOCKET_TIMEOUT = None
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {"address": CHANNELS_REDIS_URL, "socket_timeout": CHANNELS_REDIS_SOCKET_TIMEOUT}
            ]
        },
    }
    if CHANNELS_REDIS_URL
    else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "releasebook.django.requestid.RequestIdFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d "
            "request_id=%(request_id)s %(message)s"
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}
