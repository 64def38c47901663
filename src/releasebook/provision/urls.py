"""Where users reach a host: through nginx where the inventory provisions it, else the
app's own bind. Verify fetches a release's static file from there, the path users take."""

from __future__ import annotations

from pathlib import Path

from releasebook.inventory.model import Environment, Host
from releasebook.inventory.yamlfile import read_yaml
from releasebook.provision.settings import NginxSettings, load_provision

_seen: dict[tuple[Path, int], NginxSettings | None] = {}


def _nginx(env: Environment) -> NginxSettings | None:
    key = (env.file, env.file.stat().st_mtime_ns)
    if key not in _seen:
        data, _ = read_yaml(env.file)
        provisioned = data.get("provision") is not None
        _seen[key] = load_provision(env, check_files=False).nginx if provisioned else None
    return _seen[key]


def user_base(env: Environment, host: Host) -> str:
    """``scheme://host[:port]`` of the site on ``host`` as users reach it."""
    nginx = _nginx(env)
    if nginx is None:
        return f"http://{host.bind}"
    if nginx.tls is not None:
        port = "" if nginx.https_port == 443 else f":{nginx.https_port}"
        return f"https://{host.address}{port}"
    port = "" if nginx.http_port == 80 else f":{nginx.http_port}"
    return f"http://{host.address}{port}"
