"""Load ``inventories/<env>.yml`` into a typed :class:`Environment`.

Layering for host settings (``ssh``, ``web``, ``worker``): built-in defaults, then the
environment's top level, then each of the host's roles (in the order listed), then the
host itself. Every error names the file, the line and the key path, and what was
expected; nothing here opens a connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from releasebook.errors import InventoryError
from releasebook.gate.registry import unknown_ids
from releasebook.inventory.backups import parse_backup
from releasebook.inventory.hops import parse_hops
from releasebook.inventory.migrations import parse_migrations
from releasebook.inventory.model import (
    AppSettings,
    EnvFileSettings,
    Environment,
    HealthSettings,
    Host,
    SecretSource,
    SshSettings,
    WebSettings,
    WorkerSettings,
)
from releasebook.inventory.yamlfile import read_yaml
from releasebook.runbooks.release import RELEASE_STEPS
from releasebook.runbooks.rollback import ROLLBACK_STEPS

ROLES = ("web", "worker", "beat", "migrate")
TRANSPORTS = ("ssh", "local")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")
ADDRESS = re.compile(r"^[A-Za-z0-9._:-]+$")
BIND = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$|^unix:[A-Za-z0-9._/-]+$")
HOOK_TIMES = ("before", "after")
ENV_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# --- validation helpers -----------------------------------------------------------


class _Reader:
    def __init__(self, file: Path, lines: Mapping[str, int]) -> None:
        self.file = file
        self.lines = lines

    def error(self, key_path: str, message: str) -> InventoryError:
        line = self.lines.get(key_path)
        while line is None and "." in key_path:
            key_path_parent = key_path.rsplit(".", 1)[0]
            line = self.lines.get(key_path_parent)
            if line is None:
                key_path = key_path_parent
        where = f"{self.file}:{line}" if line else str(self.file)
        return InventoryError(f"{where}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"{path}: expected a mapping, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.error(
                    f"{path}.{key}" if path else key,
                    f"{path + '.' if path else ''}{key}: unknown key; expected one of "
                    + ", ".join(allowed),
                )
        return value

    def get(
        self,
        section: Mapping[str, Any],
        path: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in section or section[key] is None:
            if default is ...:
                raise self.error(path or key, f"{full}: missing; expected {_describe(kind)}")
            return default
        value = section[key]
        if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
            raise self.error(full, f"{full}: expected {_describe(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(full, f"{full}: expected {_describe(kind)}, got {_kind(value)}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.error(full, f"{full}: {problem}")
        return value

    def str_list(self, section: Mapping[str, Any], path: str, key: str) -> tuple[str, ...]:
        full = f"{path}.{key}" if path else key
        value = section.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(full, f"{full}: expected a list of strings")
        return tuple(value)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


def _positive(value: Any) -> str | None:
    return None if value > 0 else "expected a positive number"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "expected 0 or a positive number"


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else "expected a port number between 1 and 65535"


# --- the inventory ----------------------------------------------------------------

_SSH_KEYS = ("user", "port", "identity_file", "known_hosts", "connect_timeout", "gateway")
_WEB_KEYS = ("port", "workers", "timeout", "preload", "graceful_timeout")
_WORKER_KEYS = ("concurrency", "stop_timeout")
_LAYERED = ("ssh", "web", "worker")
_HOST_KEYS = ("address", "roles", "transport", "bind", *_LAYERED, "env")
_TOP_KEYS = (
    "app",
    "deploy",
    "transport",
    "max_parallel",
    "disk",
    "health",
    "env",
    "hooks",
    "gate",
    "timeouts",
    "migrations",
    "provision",  # read by releasebook.provision.settings
    "backup",
    "roles",
    "hosts",
    *_LAYERED,
)

_SSH_DEFAULTS: dict[str, Any] = {"user": "deploy", "port": 22, "connect_timeout": 10}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ssh": {},  # applied in _ssh, under what the inventory sets and ~/.ssh/config
    "web": {"port": 8000, "workers": 2, "timeout": 30, "preload": True},
    "worker": {"concurrency": 2, "stop_timeout": 60},
}


def load_environment(name: str, root: Path) -> Environment:
    """Load ``<root>/inventories/<name>.yml``."""
    if not ENV_FILE_NAME.fullmatch(name):
        raise InventoryError(
            f"--env {name!r}: expected a name made of letters, digits, '-' and '_'"
        )
    return load_inventory(root / "inventories" / f"{name}.yml", root=root)


def load_inventory(file: Path, *, root: Path | None = None) -> Environment:
    data, lines = read_yaml(file)
    r = _Reader(file, lines)
    root = (root or file.resolve().parent.parent).resolve()
    r.mapping(data, "", _TOP_KEYS)

    default_transport = r.get(data, "", "transport", str, "ssh", _one_of(TRANSPORTS))
    app = _app(r, data, root)
    deploy = r.mapping(
        data.get("deploy"), "deploy", ("path", "keep_releases", "linked_dirs", "linked_files")
    )
    deploy_path_raw = r.get(deploy, "deploy", "path", str)
    keep = r.get(deploy, "deploy", "keep_releases", int, 5)
    if keep < 2:
        raise r.error("deploy.keep_releases", "deploy.keep_releases: expected 2 or more")
    if not SAFE_PATH.fullmatch(deploy_path_raw) or ".." in deploy_path_raw.split("/"):
        raise r.error(
            "deploy.path",
            f"deploy.path: expected a path of letters, digits, '.', '_', '-' and '/', "
            f"got {deploy_path_raw!r}",
        )
    deploy_path = Path(deploy_path_raw)
    if not deploy_path.is_absolute() and default_transport != "local":
        raise r.error("deploy.path", "deploy.path: expected an absolute path for ssh hosts")

    env_layers = {k: r.mapping(data.get(k), k, _layer_keys(k)) for k in _LAYERED}
    for layer, values in env_layers.items():
        _check_layer(r, layer, values, layer)
    role_layers = _roles(r, data)
    hosts = _hosts(r, data, root, default_transport, env_layers, role_layers)
    if not deploy_path.is_absolute() and any(h.transport == "ssh" for h in hosts):
        raise r.error("deploy.path", "deploy.path: expected an absolute path for ssh hosts")

    health_raw = r.mapping(
        data.get("health"),
        "health",
        (
            "path",
            "host_header",
            "timeout",
            "forwarded_proto",
            "check_static",
            "websocket_path",
        ),
    )
    health = HealthSettings(
        path=r.get(health_raw, "health", "path", str, "/readyz", _absolute_url_path),
        host_header=r.get(health_raw, "health", "host_header", str),
        timeout=float(r.get(health_raw, "health", "timeout", (int, float), 60, _positive)),
        forwarded_proto=r.get(
            health_raw, "health", "forwarded_proto", str, "https", _one_of(("https", "http"))
        ),
        check_static=r.get(health_raw, "health", "check_static", bool, True),
        websocket_path=r.get(health_raw, "health", "websocket_path", str, None, _absolute_url_path),
    )
    if health.websocket_path and not app.asgi:
        raise r.error(
            "health.websocket_path",
            "health.websocket_path: WebSockets need an ASGI app; set app.asgi instead of app.wsgi",
        )
    env_raw = r.mapping(data.get("env"), "env", ("required", "values", "generate", "secrets"))
    env_file = _env_file(r, env_raw)
    _one_source(r, hosts, env_file)
    hooks = _hooks(r, data)
    disk = r.mapping(data.get("disk"), "disk", ("min_free_mb",))
    return Environment(
        name=file.stem,
        file=file,
        root=root,
        app=app,
        deploy_path=deploy_path,
        keep_releases=keep,
        hosts=hosts,
        health=health,
        env_file=env_file,
        hooks=hooks,
        max_parallel=r.get(data, "", "max_parallel", int, 10, _positive),
        min_free_mb=r.get(disk, "disk", "min_free_mb", int, 500, _not_negative),
        gate_skips=_gate_skips(r, data),
        timeouts=_timeouts(r, data),
        migrations=parse_migrations(r, data),
        backup=parse_backup(r, data),
        **_linked(r, deploy),
        lines=lines,
    )


# What a linked path may not be: releasebook's own files in a release, or what it links.
_RELEASE_OWN = (".releasebook", "venv", ".env")


def _linked(r: _Reader, deploy: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``deploy.linked_dirs`` (default ``[media]``) and ``deploy.linked_files``: paths
    relative to the release, each linked to the same path under ``shared/``."""
    out: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for key, default in (("linked_dirs", ["media"]), ("linked_files", [])):
        where = f"deploy.{key}"
        raw = deploy.get(key, default)
        if raw is None:
            raw = []
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise r.error(where, f"{where}: expected a list of paths relative to the release")
        for value in raw:
            parts = value.split("/")
            if (
                not SAFE_PATH.fullmatch(value)
                or value.startswith("/")
                or any(part in ("", ".", "..") for part in parts)
            ):
                raise r.error(
                    where,
                    f"{where}: {value!r}: expected a relative path of letters, digits, "
                    "'.', '_', '-' and '/', without '..'",
                )
            if parts[0] in _RELEASE_OWN:
                raise r.error(where, f"{where}: {value!r}: releasebook manages {parts[0]}")
            if value in seen:
                raise r.error(where, f"{where}: {value!r} is also in {seen[value]}")
            seen[value] = where
        out[key] = tuple(raw)
    return out


def _layer_keys(section: str) -> tuple[str, ...]:
    return {"ssh": _SSH_KEYS, "web": _WEB_KEYS, "worker": _WORKER_KEYS}[section]


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else "expected one of " + ", ".join(options)

    return check


def _absolute_url_path(value: Any) -> str | None:
    return None if str(value).startswith("/") else "expected a URL path starting with '/'"


def _app(r: _Reader, data: Mapping[str, Any], root: Path) -> AppSettings:
    raw = r.mapping(
        data.get("app"),
        "app",
        ("source", "settings", "wsgi", "asgi", "requirements", "celery_app", "python"),
    )
    if "app" not in data:
        raise r.error("", "app: missing; expected a mapping with source, settings and wsgi")
    given = [key for key in ("wsgi", "asgi") if raw.get(key) is not None]
    if len(given) != 1:
        raise r.error(
            "app.asgi" if len(given) == 2 else "app",
            "app: expected exactly one of wsgi (a WSGI app served by gunicorn) and asgi "
            "(an ASGI app served by gunicorn with uvicorn workers), "
            + ("got both" if given else "got neither"),
        )
    source = Path(r.get(raw, "app", "source", str))
    if not (root / source / "manage.py").is_file():
        raise r.error(
            "app.source", f"app.source: expected a Django project (manage.py) at {root / source}"
        )
    requirements = r.get(raw, "app", "requirements", str, "requirements.txt")
    if not (root / source / requirements).is_file():
        raise r.error(
            "app.requirements", f"app.requirements: file not found: {root / source / requirements}"
        )
    dotted = _matches(DOTTED, "expected a dotted Python module path")
    callable_path = _matches(
        re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"), "expected 'module.path:callable'"
    )
    return AppSettings(
        source=source,
        settings_module=r.get(raw, "app", "settings", str, check=dotted),
        wsgi=r.get(raw, "app", "wsgi", str, None, callable_path),
        asgi=r.get(raw, "app", "asgi", str, None, callable_path),
        requirements=requirements,
        celery_app=r.get(raw, "app", "celery_app", str, None, dotted),
        python=r.get(raw, "app", "python", str, "python3"),
    )


def _matches(pattern: re.Pattern[str], message: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if pattern.fullmatch(str(value)) else f"{message}, got {value!r}"

    return check


def _roles(r: _Reader, data: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    raw = r.mapping(data.get("roles"), "roles", ROLES)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for role, value in raw.items():
        section = r.mapping(value, f"roles.{role}", (*_LAYERED, "env"))
        out[role] = {
            k: r.mapping(section.get(k), f"roles.{role}.{k}", _layer_keys(k)) for k in _LAYERED
        }
        for layer, values in out[role].items():
            _check_layer(r, layer, values, f"roles.{role}.{layer}")
    return out


def _gateway(value: Any) -> str | None:
    try:
        parse_hops(str(value))
    except ValueError as exc:
        return f"{exc} (a ~/.ssh/config alias, comma-separated hops, or none)"
    return None


_LAYER_TYPES: dict[
    str, dict[str, tuple[type | tuple[type, ...], Callable[[Any], str | None] | None]]
] = {
    "ssh": {
        "user": (str, None),
        "port": (int, _port),
        "identity_file": (str, None),
        "known_hosts": (str, None),
        "connect_timeout": ((int, float), _positive),
        "gateway": (str, _gateway),
    },
    "web": {
        "port": (int, _port),
        "workers": (int, _positive),
        "timeout": (int, _positive),
        "preload": (bool, None),
        "graceful_timeout": (int, _positive),
    },
    "worker": {"concurrency": (int, _positive), "stop_timeout": (int, _positive)},
}


def _check_layer(r: _Reader, layer: str, values: Mapping[str, Any], path: str) -> None:
    """Type-check a shared layer where it is written, so errors name that place."""
    for key in values:
        kind, check = _LAYER_TYPES[layer][key]
        r.get(values, path, key, kind, None, check)


def _hosts(
    r: _Reader,
    data: Mapping[str, Any],
    root: Path,
    default_transport: str,
    env_layers: Mapping[str, Mapping[str, Any]],
    role_layers: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> tuple[Host, ...]:
    raw = data.get("hosts")
    if not raw:
        raise r.error("hosts", "hosts: missing; expected a mapping of host name to settings")
    if not isinstance(raw, dict):
        raise r.error("hosts", f"hosts: expected a mapping, got {_kind(raw)}")
    hosts: list[Host] = []
    seen_targets: dict[tuple[str, int, str], str] = {}
    for name, value in raw.items():
        path = f"hosts.{name}"
        if not HOST_NAME.fullmatch(name):
            raise r.error(path, f"{path}: host names are letters, digits, '.', '-' and '_'")
        section = r.mapping(value, path, _HOST_KEYS)
        roles = r.str_list(section, path, "roles")
        if not roles:
            raise r.error(path, f"{path}.roles: missing; expected a list of {', '.join(ROLES)}")
        for role in roles:
            if role not in ROLES:
                raise r.error(
                    f"{path}.roles",
                    f"{path}.roles: unknown role {role!r}; expected one of {', '.join(ROLES)}",
                )
        transport = r.get(section, path, "transport", str, default_transport, _one_of(TRANSPORTS))
        address = r.get(
            section,
            path,
            "address",
            str,
            "127.0.0.1" if transport == "local" else ...,
            _matches(ADDRESS, "expected a host name or IP address"),
        )
        merged: dict[str, dict[str, Any]] = {}
        for layer in _LAYERED:
            values = dict(_DEFAULTS[layer])
            values.update(env_layers[layer])
            for role in roles:
                values.update(role_layers.get(role, {}).get(layer, {}))
            values.update(r.mapping(section.get(layer), f"{path}.{layer}", _layer_keys(layer)))
            merged[layer] = values
        ssh = _ssh(r, merged["ssh"], path, root, transport)
        web = WebSettings(
            port=r.get(merged["web"], f"{path}.web", "port", int, check=_port),
            workers=r.get(merged["web"], f"{path}.web", "workers", int, check=_positive),
            timeout=r.get(merged["web"], f"{path}.web", "timeout", int, check=_positive),
            preload=r.get(merged["web"], f"{path}.web", "preload", bool),
            graceful_timeout=r.get(
                merged["web"], f"{path}.web", "graceful_timeout", int, None, _positive
            ),
        )
        worker = WorkerSettings(
            concurrency=r.get(
                merged["worker"], f"{path}.worker", "concurrency", int, check=_positive
            ),
            stop_timeout=r.get(
                merged["worker"], f"{path}.worker", "stop_timeout", int, check=_positive
            ),
        )
        bind = r.get(
            section,
            path,
            "bind",
            str,
            f"{address}:{web.port}",
            _matches(BIND, "expected HOST:PORT or unix:/path"),
        )
        target = (address, ssh.port, transport)
        if target in seen_targets and transport == "ssh":
            raise r.error(
                path,
                f"{path}: duplicate host: {address}:{ssh.port} is also {seen_targets[target]}",
            )
        seen_targets[target] = path
        env_values: dict[str, str] = {}
        for role in roles:
            role_section = (data.get("roles") or {}).get(role) or {}
            env_values.update(_env_values(r, role_section.get("env"), f"roles.{role}.env"))
        env_values.update(_env_values(r, section.get("env"), f"{path}.env"))
        hosts.append(
            Host(name, address, roles, transport, ssh, web, worker, bind, env_values=env_values)
        )
    for role in ("migrate", "beat"):
        owners = [h.name for h in hosts if h.has(role)]
        if len(owners) > 1:
            raise r.error(
                "hosts",
                f"hosts: role {role!r} must be on exactly one host, found on " + ", ".join(owners),
            )
    if not any(h.has("migrate") for h in hosts):
        raise r.error("hosts", "hosts: no host has role 'migrate'; expected exactly one")
    if not any(h.has("web") for h in hosts):
        raise r.error("hosts", "hosts: no host has role 'web'; expected at least one")
    return tuple(hosts)


def _ssh(
    r: _Reader, values: Mapping[str, Any], path: str, root: Path, transport: str
) -> SshSettings:
    where = f"{path}.ssh"
    identity = r.get(values, where, "identity_file", str, None)
    known_hosts = r.get(values, where, "known_hosts", str, None)
    if known_hosts is None:
        if transport == "ssh":
            raise r.error(
                path,
                f"{where}.known_hosts: missing; expected the known_hosts file that pins this "
                "host's key (see `inv hosts --trust`)",
            )
        known_hosts = "/dev/null"
    defaults = _SSH_DEFAULTS
    return SshSettings(
        user=r.get(values, where, "user", str, defaults["user"]),
        port=r.get(values, where, "port", int, defaults["port"], _port),
        identity_file=_resolve(identity, root) if identity else None,
        known_hosts=_resolve(known_hosts, root),
        connect_timeout=float(
            r.get(
                values,
                where,
                "connect_timeout",
                (int, float),
                defaults["connect_timeout"],
                _positive,
            )
        ),
        gateway=r.get(values, where, "gateway", str, None, _gateway),
        explicit=frozenset(k for k, v in values.items() if v is not None),
    )


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _env_values(r: _Reader, raw: Any, where: str) -> dict[str, str]:
    """``env: {values: {NAME: value}}`` of a role or a host: names and values checked
    as the environment's ``env.values`` are."""
    section = r.mapping(raw, where, ("values",))
    path = f"{where}.values"
    values_raw = r.mapping(section.get("values"), path, tuple(section.get("values") or ()))
    values: dict[str, str] = {}
    for key, value in values_raw.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.error(f"{path}.{key}", f"{path}.{key}: expected a string")
        if not ENV_NAME.fullmatch(str(key)):
            raise r.error(path, f"{path}: {key!r} is not an environment variable name")
        values[str(key)] = str(value)
    return values


def _one_source(r: _Reader, hosts: tuple[Host, ...], env_file: EnvFileSettings) -> None:
    """A name set per role or host is not also a secret or generated."""
    for host in hosts:
        for name in host.env_values:
            for where, names in (
                ("env.secrets", env_file.secrets),
                ("env.generate", env_file.generate),
            ):
                if name in names:
                    raise r.error(
                        f"hosts.{host.name}",
                        f"hosts.{host.name}: env value {name} (its own or its role's) is also "
                        f"in {where}; give it one source",
                    )


def _env_file(r: _Reader, raw: Mapping[str, Any]) -> EnvFileSettings:
    required = r.str_list(raw, "env", "required")
    generate = r.str_list(raw, "env", "generate")
    values_raw = r.mapping(raw.get("values"), "env.values", tuple(raw.get("values") or ()))
    values: dict[str, str] = {}
    for key, value in values_raw.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.error(f"env.values.{key}", f"env.values.{key}: expected a string")
        values[key] = str(value)
    secrets = _secrets(r, raw)
    for where, names in (
        ("env.required", required),
        ("env.generate", generate),
        ("env.values", values),
        ("env.secrets", secrets),
    ):
        for name in names:
            if not ENV_NAME.fullmatch(name):
                raise r.error(where, f"{where}: {name!r} is not an environment variable name")
    for name in secrets:
        for where, names in (("env.values", values), ("env.generate", generate)):
            if name in names:
                raise r.error(
                    f"env.secrets.{name}",
                    f"env.secrets.{name}: also in {where}; give it one source",
                )
    return EnvFileSettings(required=required, values=values, generate=generate, secrets=secrets)


def _secrets(r: _Reader, raw: Mapping[str, Any]) -> dict[str, SecretSource]:
    section = r.mapping(raw.get("secrets"), "env.secrets", tuple(raw.get("secrets") or ()))
    secrets: dict[str, SecretSource] = {}
    for name, spec in section.items():
        where = f"env.secrets.{name}"
        source = r.mapping(spec, where, ("from_env", "from_file"))
        if len(source) != 1:
            raise r.error(where, f"{where}: expected one of from_env: VARIABLE or from_file: PATH")
        ((key, location),) = source.items()
        if not isinstance(location, str) or not location:
            raise r.error(f"{where}.{key}", f"{where}.{key}: expected a string")
        if key == "from_env" and not ENV_NAME.fullmatch(location):
            raise r.error(
                f"{where}.{key}",
                f"{where}.{key}: {location!r} is not an environment variable name",
            )
        secrets[name] = SecretSource("env" if key == "from_env" else "file", location)
    return secrets


def _gate_skips(r: _Reader, data: Mapping[str, Any]) -> dict[str, str]:
    gate = r.mapping(data.get("gate"), "gate", ("skip",))
    raw = gate.get("skip") or {}
    if not isinstance(raw, dict):
        raise r.error("gate.skip", "gate.skip: expected a mapping of check id to the reason")
    for check_id, reason in raw.items():
        where = f"gate.skip.{check_id}"
        if unknown_ids([check_id]):
            raise r.error(where, f"{where}: unknown readiness check id (see `inv preflight`)")
        if not isinstance(reason, str) or not reason.strip():
            raise r.error(where, f"{where}: expected the reason this check is skipped")
    return dict(raw)


def _hooks(r: _Reader, data: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Hooks run inside the new release's directory, so only in steps that run on hosts
    once it exists: after install, and before or after each step that follows it."""
    steps = {s.name: s for s in (*RELEASE_STEPS, *ROLLBACK_STEPS)}
    raw = r.mapping(data.get("hooks"), "hooks", HOOK_TIMES)
    hooks: dict[tuple[str, str], tuple[str, ...]] = {}
    for when, section in raw.items():
        takes = tuple(name for name, step in steps.items() if when in step.hooks)
        named = section if isinstance(section, dict) else {}
        for name in named:
            step = steps.get(name)
            if step is None or when in step.hooks:
                continue
            where = f"hooks.{when}.{name}"
            if step.where == "controller":
                why = f"{name} runs on the controller, where hooks do not run"
            elif step.bookkeeping:
                why = f"{name} is releasebook's own bookkeeping"
            else:
                why = f"{name} runs before the new release's directory exists"
            raise r.error(where, f"{where}: {why}; hooks run {when} the steps " + ", ".join(takes))
        section = r.mapping(section, f"hooks.{when}", takes)
        for name in section:
            hooks[(when, name)] = r.str_list(section, f"hooks.{when}", name)
    return hooks


def _timeouts(r: _Reader, data: Mapping[str, Any]) -> dict[str, float]:
    """``timeouts: {step: seconds}``: how long a step may run on a host before it is
    stopped (verify waits ``health.timeout``)."""
    names = tuple(
        dict.fromkeys(s.name for s in (*RELEASE_STEPS, *ROLLBACK_STEPS) if not s.http_check)
    )
    raw = r.mapping(data.get("timeouts"), "timeouts", names)
    return {
        name: float(r.get(raw, "timeouts", name, (int, float), check=_positive)) for name in raw
    }
