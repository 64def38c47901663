"""Render the seed's 36.15 production readiness document from the inventory and registry.

Environment variables are documented by name, purpose and example format only: a value
from the inventory (``env.values``) never reaches the document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from releasebook.errors import TemplateError
from releasebook.gate.registry import CHECKS, SECTIONS
from releasebook.inventory import Environment
from releasebook.render.templating import markdown_environment, template_dirs
from releasebook.runbooks.model import Step
from releasebook.runbooks.release import RELEASE_STEPS

TEMPLATE = "production-readiness.md.j2"

# name -> (purpose, example format). Examples are shapes, never anyone's real value.
KNOWN_VARIABLES: dict[str, tuple[str, str]] = {
    "DJANGO_SETTINGS_MODULE": (
        "settings module (exported by releasebook's launcher)",
        "`config.settings.prod`",
    ),
    "DJANGO_SECRET_KEY": (
        "signing key for sessions, CSRF tokens and password-reset links",
        "50+ random characters (`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)",
    ),
    "DJANGO_DEBUG": ("debug switch; production settings keep DEBUG off", "`0`"),
    "DJANGO_ALLOWED_HOSTS": (
        "host names the site answers to, comma-separated, no `*`",
        "`example.com,www.example.com`",
    ),
    "DJANGO_CSRF_TRUSTED_ORIGINS": (
        "https origins allowed to POST, comma-separated",
        "`https://example.com`",
    ),
    "DJANGO_HTTPS": (
        "turns the HTTPS-only settings on (redirect, secure cookies, HSTS)",
        "`1` or `0`",
    ),
    "DATABASE_URL": ("the database connection", "`postgres://USER:PASSWORD@HOST:5432/NAME`"),
    "SITE_URL": ("the public URL, used for canonical links", "`https://example.com`"),
    "SITE_NAME": ("the site's name shown to users", "`Release notes`"),
    "CELERY_BROKER_URL": ("Celery broker for web, worker and beat", "`redis://HOST:6379/0`"),
    "CELERY_BROKER_FOLDER": (
        "folder of a `filesystem://` broker, shared across releases",
        "`<deploy>/shared/broker`",
    ),
    "CELERY_RESULT_BACKEND": ("where Celery stores task results", "`redis://HOST:6379/1`"),
    "REDIS_URL": ("Redis for the cache or channel layer", "`redis://HOST:6379/2`"),
    "EMAIL_HOST": ("SMTP server", "`smtp.provider.example`"),
    "EMAIL_HOST_USER": ("SMTP user", "`apikey`"),
    "EMAIL_HOST_PASSWORD": ("SMTP password", "a secret from the provider"),
}
SECRET_SUFFIX = re.compile(r"_(SECRET|TOKEN|PASSWORD|KEY)$")


@dataclass(frozen=True)
class VariableDoc:
    name: str
    required: bool
    source: str
    purpose: str
    example: str


def _variable(env: Environment, name: str) -> VariableDoc:
    if name in env.env_file.generate:
        source = "generated on each host at first setup; never leaves it"
    elif name in env.env_file.secrets:
        origin = env.env_file.secrets[name].describe()
        source = f"inventory `env.secrets`: the controller's {origin}, at each release"
    elif name in env.env_file.values:
        source = "inventory `env.values`, written once to `shared/.env`"
    else:
        source = "operator, in `<deploy>/shared/.env`"
    purpose, example = KNOWN_VARIABLES.get(name, ("", ""))
    if not purpose:
        secret = SECRET_SUFFIX.search(name) is not None
        purpose = "a secret (e.g. a webhook signing secret)" if secret else "set per environment"
        example = "a random string from the provider" if secret else "see the app's settings"
    return VariableDoc(name, name in env.env_file.required, source, purpose, example)


def variables(env: Environment) -> list[VariableDoc]:
    """Required names first (in inventory order), then the optional ones."""
    env_file = env.env_file
    names = dict.fromkeys(
        [*env_file.required, *env_file.values, *env_file.generate, *env_file.secrets]
    )
    docs = [_variable(env, name) for name in names]
    return [d for d in docs if d.required] + [d for d in docs if not d.required]


def _where(step: Step) -> str:
    if step.http_check:
        return "controller, against every web host"
    if step.where == "controller":
        return "controller, once"
    hosts = ", ".join(sorted(step.roles)) + " hosts" if step.roles else "every host"
    return f"{hosts}, once" if step.once else hosts


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _environment(template_dir: Sequence[Path]) -> jinja2.Environment:
    return markdown_environment(template_dir, {"cell": _cell, "where": _where})


def render_readiness(env: Environment, template_dir: Path | None = None) -> str:
    """``docs/production-readiness.md`` for ``env``, from ``template_dir``'s template
    (default: the project's override, else the package's)."""
    dirs = [template_dir] if template_dir is not None else template_dirs(env.root)
    try:
        template = _environment(dirs).get_template(TEMPLATE)
        return template.render(
            env=env,
            variables=variables(env),
            steps=list(enumerate(RELEASE_STEPS, start=1)),
            checks=CHECKS,
            sections=SECTIONS,
            web_hosts=env.hosts_with("web"),
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{TEMPLATE}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"{' or '.join(str(d) for d in dirs)}: {exc.name}: template not found"
        ) from None
