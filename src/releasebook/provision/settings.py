"""The ``provision:`` section of ``inventories/<env>.yml``: what ``inv provision`` sets up
on the hosts. Validated before any host is contacted, with the inventory loader's
conventions: every error names the file, the line and the key (exit 2)::

    provision:
      user: root                    # who provisioning logs in as (a fresh server's admin)
      authorized_keys: [~/.ssh/id_ed25519.pub]   # for the deploy user (ssh.user)
      nginx:
        server_name: www.example.com   # default: health.host_header
        listen: all                    # or "address": each host's inventory address
        http_port: 80
        https_port: 443
        client_max_body_size: 10m
        tls: {certificate: certs/site.crt, key: certs/site.key, hsts_max_age: 31536000}
      postgresql: {host: db1, database: app, user: app, password: DATABASE_PASSWORD}
      redis: {host: db1}
      logrotate: true
      firewall: true
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasebook.inventory.load import _matches, _one_of, _port, _Reader, _resolve
from releasebook.inventory.model import Environment
from releasebook.inventory.yamlfile import read_yaml

_KEYS = (
    "user",
    "identity_file",
    "authorized_keys",
    "nginx",
    "postgresql",
    "redis",
    "logrotate",
    "firewall",
)
_NGINX_KEYS = ("server_name", "listen", "http_port", "https_port", "client_max_body_size", "tls")
_TLS_KEYS = ("certificate", "key", "hsts_max_age")
_POSTGRES_KEYS = ("host", "database", "user", "password")
_REDIS_KEYS = ("host",)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SERVER_NAME = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.*-]*( [A-Za-z0-9*][A-Za-z0-9.*-]*)*")
_SIZE = re.compile(r"[0-9]+[kKmMgG]?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class TlsSettings:
    certificate: Path
    key: Path
    hsts_max_age: int


@dataclass(frozen=True)
class NginxSettings:
    server_name: str
    listen: str  # "all" or "address"
    http_port: int
    https_port: int
    client_max_body_size: str
    tls: TlsSettings | None


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    database: str
    user: str
    password: str  # the name of an env.secrets entry, never the value


@dataclass(frozen=True)
class ProvisionSettings:
    user: str
    identity_file: Path | None
    authorized_keys: tuple[Path, ...]
    nginx: NginxSettings
    postgresql: PostgresSettings | None
    redis_host: str | None
    logrotate: bool
    firewall: bool


def load_provision(env: Environment, *, check_files: bool = True) -> ProvisionSettings:
    """Read and check ``provision:`` of ``env``'s inventory file. ``check_files=False``
    (rendering the setup runbook): files named need not exist on this machine."""
    data, lines = read_yaml(env.file)
    r = _Reader(env.file, lines)
    raw = r.mapping(data.get("provision"), "provision", _KEYS)
    p = "provision"
    ssh = env.hosts[0].ssh
    identity = r.get(raw, p, "identity_file", str, None)
    keys_raw = raw.get("authorized_keys")
    if keys_raw is None:
        if ssh.identity_file is None and not check_files:
            keys: tuple[Path, ...] = (Path("~/.ssh/id_ed25519.pub"),)
        elif ssh.identity_file is None:
            raise r.error(
                p,
                f"{p}.authorized_keys: missing; expected the public key files the deploy "
                f"user ({ssh.user}) logs in with",
            )
        else:
            keys = (Path(f"{ssh.identity_file}.pub"),)
        where = f"{p}.authorized_keys (default: ssh.identity_file + .pub)"
    else:
        keys = tuple(_resolve(k, env.root) for k in r.str_list(raw, p, "authorized_keys"))
        where = f"{p}.authorized_keys"
        if not keys:
            raise r.error(where, f"{where}: expected at least one public key file")
    for key in keys if check_files else ():
        _file(r, where if keys_raw is None else f"{p}.authorized_keys", key, "public key")
    host_names = tuple(h.name for h in env.hosts)
    postgres = _postgres(r, raw.get("postgresql"), env, host_names)
    redis_raw = raw.get("redis")
    redis_host = None
    if redis_raw not in (None, False):
        section = {} if redis_raw is True else r.mapping(redis_raw, f"{p}.redis", _REDIS_KEYS)
        redis_host = _host(r, section, f"{p}.redis", env, host_names)
    return ProvisionSettings(
        user=r.get(raw, p, "user", str, "root", _matches(_USER, "expected a user name")),
        identity_file=_resolve(identity, env.root) if identity else None,
        authorized_keys=keys,
        nginx=_nginx(r, raw.get("nginx"), env, check_files),
        postgresql=postgres,
        redis_host=redis_host,
        logrotate=r.get(raw, p, "logrotate", bool, True),
        firewall=r.get(raw, p, "firewall", bool, False),
    )


def _file(r: _Reader, where: str, path: Path, what: str) -> None:
    if not path.is_file():
        raise r.error(where, f"{where}: {what} file not found: {path}")


def _nginx(r: _Reader, value: Any, env: Environment, check_files: bool) -> NginxSettings:
    p = "provision.nginx"
    raw = r.mapping(value, p, _NGINX_KEYS)
    tls_raw = raw.get("tls")
    tls = None
    if tls_raw is not None:
        section = r.mapping(tls_raw, f"{p}.tls", _TLS_KEYS)
        paths = {}
        for key in ("certificate", "key"):
            path = _resolve(r.get(section, f"{p}.tls", key, str), env.root)
            if check_files:
                _file(r, f"{p}.tls.{key}", path, "TLS " + key)
            paths[key] = path
        tls = TlsSettings(
            certificate=paths["certificate"],
            key=paths["key"],
            hsts_max_age=r.get(section, f"{p}.tls", "hsts_max_age", int, 31536000, _zero_up),
        )
    return NginxSettings(
        server_name=r.get(
            raw,
            p,
            "server_name",
            str,
            env.health.host_header,
            _matches(_SERVER_NAME, "expected host names separated by spaces"),
        ),
        listen=r.get(raw, p, "listen", str, "all", _one_of(("all", "address"))),
        http_port=r.get(raw, p, "http_port", int, 80, _port),
        https_port=r.get(raw, p, "https_port", int, 443, _port),
        client_max_body_size=r.get(
            raw,
            p,
            "client_max_body_size",
            (str, int),
            "10m",
            _matches(_SIZE, "expected a size such as 10m, 512k or 1g"),
        ),
        tls=tls,
    )


def _postgres(
    r: _Reader, value: Any, env: Environment, host_names: tuple[str, ...]
) -> PostgresSettings | None:
    if value in (None, False):
        return None
    p = "provision.postgresql"
    raw = r.mapping(value, p, _POSTGRES_KEYS)
    name = _matches(_NAME, "expected letters, digits and '_'")
    password = r.get(raw, p, "password", str)
    if password not in env.env_file.secrets:
        raise r.error(
            f"{p}.password",
            f"{p}.password: {password!r} is not declared in env.secrets; name the secret "
            "that holds the database password",
        )
    return PostgresSettings(
        host=_host(r, raw, p, env, host_names),
        database=r.get(raw, p, "database", str, check=name),
        user=r.get(raw, p, "user", str, check=name),
        password=password,
    )


def _host(
    r: _Reader, raw: Mapping[str, Any], p: str, env: Environment, host_names: tuple[str, ...]
) -> str:
    default = env.hosts_with("migrate")[0].name
    host: str = r.get(raw, p, "host", str, default)
    if host not in host_names:
        raise r.error(
            f"{p}.host", f"{p}.host: no host {host!r}; expected one of " + ", ".join(host_names)
        )
    return host


def _zero_up(value: Any) -> str | None:
    return None if value >= 0 else "expected 0 or a positive number"
