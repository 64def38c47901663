"""From fresh Debian 12 servers to production: ``inv provision`` then ``inv release``.

Two fresh Debian hosts (``debhosts.py``: their own debootstrapped root filesystem, their
own namespaces, sshd on 127.0.0.100+) are shared by the tests of this module, in order:
provisioned twice (the second run changes nothing), released to, served through nginx with
TLS, rebooted. Everything is asserted from outside: exit codes, HTTP through nginx, files
on the hosts' disks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from debhosts import DebianFleet, DebianHost, missing_prerequisites
from e2e_project import CONTROLLER_PYTHON, HOST_HEADER, Project, make_project, released_id
from services import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENV = "e2e"
UNIT = f"releasebook-{ENV}.service"


def inventory(fleet: DebianFleet, database_url: str) -> str:
    web1, web2 = fleet.hosts["web1"], fleet.hosts["web2"]
    return f"""
app:
  source: example
  settings: config.settings.prod
  wsgi: config.wsgi:application
  celery_app: config
  python: {CONTROLLER_PYTHON}
deploy:
  path: /srv/app
  keep_releases: 3
ssh:
  user: deploy
  port: 2222
  identity_file: {fleet.client_key}
  known_hosts: {fleet.known_hosts}
  connect_timeout: 10
web:
  workers: 2
worker:
  concurrency: 1
  stop_timeout: 30
health:
  host_header: {HOST_HEADER}
  timeout: 120
env:
  required: [DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL, CELERY_BROKER_URL]
  generate: [DJANGO_SECRET_KEY]
  values:
    DJANGO_ALLOWED_HOSTS: "{HOST_HEADER}"
    DJANGO_CSRF_TRUSTED_ORIGINS: "https://{HOST_HEADER}"
    DATABASE_URL: "{database_url}"
    CELERY_BROKER_URL: "redis://127.0.0.1:6379/9"
provision:
  nginx:
    listen: address
    client_max_body_size: 5m
    tls:
      certificate: certs/app.crt
      key: certs/app.key
      hsts_max_age: 600
hosts:
  web1:
    address: {web1.address}
    roles: [web, migrate]
  web2:
    address: {web2.address}
    roles: [web, worker, beat]
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianFleet]:
    problems = missing_prerequisites()
    if problems:
        if os.environ.get("CI"):
            pytest.fail("fresh Debian hosts unavailable: " + "; ".join(problems))
        pytest.skip("fresh Debian hosts unavailable: " + "; ".join(problems))
    # The wheels a release installs are resolved for the controller's exact Python
    # (3.11.7 here; Debian 12's python3 is 3.11.2, and markers such as
    # python_full_version < '3.11.3' differ), so the hosts run the releases with the
    # controller's interpreter, visible read-only at its own path, as simhosts does.
    fleet = DebianFleet(
        tmp_path_factory.mktemp("debhosts"),
        ["web1", "web2"],
        shares=(Path(sys.base_prefix).resolve(),),
    )
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="module")
def project(fleet: DebianFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with fresh_database("provision") as database_url:
        project = make_project(tmp_path_factory.mktemp("provision"), inventory(fleet, database_url))
        certs = project.root / "certs"
        certs.mkdir()
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={HOST_HEADER}",
                "-keyout",
                str(certs / "app.key"),
                "-out",
                str(certs / "app.crt"),
            ],
            check=True,
            capture_output=True,
        )
        yield project


def https(host: DebianHost, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(
        f"https://{host.address}{path}",
        headers={"Host": HOST_HEADER},
        verify=False,
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def sessions(host: DebianHost) -> int:
    log = host.upper / "var/log/sshd-test.log"
    return log.read_text().count("Accepted publickey") if log.exists() else 0


def recap(output: str) -> dict[str, dict[str, int]]:
    counts = {}
    for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        counts[match[1]] = {k: int(v) for k, v in (p.split("=") for p in match[2].split())}
    return counts


def test_bad_inventory_is_refused_before_any_host_is_contacted(
    fleet: DebianFleet, project: Project
) -> None:
    file = project.root / "inventories" / f"{ENV}.yml"
    good = file.read_text()
    before = {name: sessions(h) for name, h in fleet.hosts.items()}
    try:
        file.write_text(good.replace("certs/app.key", "certs/missing.key"))
        done = project.inv("provision", f"--env={ENV}")
        assert done.returncode == 2, done.stdout + done.stderr
        line = next(n for n, t in enumerate(good.splitlines(), 1) if "key: certs/" in t)
        assert f"{file}:{line}: provision.nginx.tls.key: TLS key file not found" in done.stderr
        file.write_text(
            good.replace("    listen: address\n", "    listen: address\n    gzip: on\n")
        )
        done = project.inv("provision", f"--env={ENV}")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "provision.nginx.gzip: unknown key" in done.stderr
    finally:
        file.write_text(good)
    assert {name: sessions(h) for name, h in fleet.hosts.items()} == before


def test_provision_two_fresh_hosts_then_a_second_run_changes_nothing(
    fleet: DebianFleet, project: Project
) -> None:
    done = project.inv("provision", f"--env={ENV}", timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    assert "TASK [nginx : Install the site]" in done.stdout
    first = recap(done.stdout)
    assert set(first) == {"web1", "web2"}
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in first.values()), first

    again = project.inv("provision", f"--env={ENV}", timeout=1200)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr
    second = recap(again.stdout)
    assert all(c["changed"] == 0 for c in second.values()), again.stdout[-6000:]
    assert "OK: provisioned e2e: 2 hosts, 0 tasks changed" in again.stdout

    for host in fleet.hosts.values():
        # The deploy user logs in with the key; passwords are refused; it owns the path.
        whoami = fleet.ssh(host, "id -un && stat -c %U /srv/app", user="deploy")
        assert whoami.stdout.split() == ["deploy", "deploy"], whoami.stderr
        sshd = fleet.ssh(host, "/usr/sbin/sshd -T | grep -i '^passwordauthentication'")
        assert sshd.stdout.strip() == "passwordauthentication no"
        unit = (host.upper / "etc/systemd/system" / UNIT).read_text()
        assert "ExecStart=/srv/app/.releasebook/tools/bin/supervisord --nodaemon" in unit
        assert (host.upper / "etc/systemd/system/multi-user.target.wants" / UNIT).is_symlink()
        # nginx answers before any release: the app behind it is not there yet.
        assert https(host, "/").status_code == 502


def test_release_is_served_styled_through_nginx(fleet: DebianFleet, project: Project) -> None:
    done = project.inv("release", f"--env={ENV}", timeout=1500)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    live = released_id(done)
    for host in fleet.hosts.values():
        page = https(host, "/admin/login/")
        assert page.status_code == 200, (page.status_code, page.headers)
        assert page.headers["strict-transport-security"] == "max-age=600"
        css = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', page.text)
        assert css, page.text[:2000]
        style = https(host, css[1])
        assert style.status_code == 200
        assert style.headers["content-type"].startswith("text/css")
        assert "max-age=" in style.headers["cache-control"]
        # Plain HTTP is redirected to HTTPS by nginx; the app itself does not loop.
        plain = httpx.get(
            f"http://{host.address}/admin/login/", headers={"Host": HOST_HEADER}, timeout=10
        )
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://{HOST_HEADER}/admin/login/"
        assert https(host, "/readyz").json()["release"] == live
        # Uploads come from shared/media.
        media = fleet.ssh(
            host,
            "echo uploaded-on-$(hostname) > /srv/app/shared/media/hello.txt",
            user="deploy",
        )
        assert media.returncode == 0, media.stderr
        served = https(host, "/media/hello.txt")
        assert (served.status_code, served.text) == (200, f"uploaded-on-{host.name}\n")
        # Maintenance mode: the flag file in shared/ turns every page into the 503 page.
        fleet.ssh(host, "touch /srv/app/shared/maintenance", user="deploy")
        down = https(host, "/admin/login/")
        assert down.status_code == 503 and "maintenance" in down.text
        fleet.ssh(host, "rm /srv/app/shared/maintenance", user="deploy")
        assert https(host, "/admin/login/").status_code == 200
    project.live = live  # type: ignore[attr-defined]


def test_reboot_brings_the_live_release_back(fleet: DebianFleet, project: Project) -> None:
    live = project.live  # type: ignore[attr-defined]
    host = fleet.hosts["web1"]
    verify = fleet.ssh(host, f"systemd-analyze verify /etc/systemd/system/{UNIT} 2>&1")
    assert verify.returncode == 0, verify.stdout
    fleet.stop(host)  # every process of the host, at once
    with pytest.raises(httpx.TransportError):
        https(host, "/readyz")
    fleet.start(host)
    fleet.boot_units(host, ["nginx.service", UNIT])
    deadline = time.monotonic() + 90
    answer: object = None
    while time.monotonic() < deadline:
        try:
            response = https(host, "/readyz")
            if response.status_code == 200:
                answer = response.json()["release"]
                break
            answer = response.status_code
        except httpx.TransportError as exc:
            answer = exc
        time.sleep(0.2)
    assert answer == live
    assert https(host, "/admin/login/").status_code == 200
    # Both masters start at boot; the first can answer before supervisord's startsecs
    # has passed for either.
    while True:
        status = fleet.ssh(
            host,
            "/srv/app/.releasebook/tools/bin/supervisorctl "
            "-c /srv/app/.releasebook/supervisord.conf status",
            user="deploy",
        )
        if "STARTING" not in status.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status.stdout.count("RUNNING") == 2, status.stdout
