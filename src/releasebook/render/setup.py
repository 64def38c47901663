"""``runbooks/<env>/setup.md``: the setup runbook, rendered from ``playbooks/provision.yml``
(its plays, roles and tasks, read as data) and the inventory.

Each task is shown with the shell commands that do the same by hand, derived from the
task's module and arguments with the environment's values filled in, and the files it
writes (the nginx site, the systemd unit) rendered as the hosts get them. So the runbook
changes when a role does, and CI's drift check notices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from releasebook.errors import TemplateError
from releasebook.inventory import Environment, Host
from releasebook.provision.inventory import (
    ansible_inventory,
    environment_vars,
    host_vars,
    playbook_dir,
    templates_dir,
    unit_name,
)
from releasebook.provision.settings import ProvisionSettings, load_provision
from releasebook.quoting import quote
from releasebook.render.templating import markdown_environment, template_dirs
from releasebook.runbooks.layout import LAUNCHER, HostLayout


@dataclass(frozen=True)
class Task:
    name: str
    manual: tuple[str, ...]  # shell commands, run as root on the host
    condition: str = ""


@dataclass(frozen=True)
class Role:
    name: str
    hosts: str  # the play's host pattern
    targets: tuple[str, ...]  # the inventory's hosts it runs on
    purpose: str
    switch: str  # "" when always on, else what turns it on
    tasks: tuple[Task, ...]


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read the playbook: {exc}") from None


def _purpose(tasks_file: Path) -> str:
    """The comment block at the top of a role's tasks file."""
    lines = []
    for line in tasks_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("---"):
            continue
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


class _Values:
    """Fills ``{{ ... }}`` in the playbook's arguments with one host's variables."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.variables = variables
        # As Ansible's templating: trim_blocks on.
        self.jinja = jinja2.Environment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # shell and config files, not HTML  # noqa: S701
            trim_blocks=True,
        )
        self.jinja.filters["bool"] = lambda v: str(v).lower() in ("true", "yes", "on", "1")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return self.jinja.from_string(value).render(self.variables)
            except jinja2.UndefinedError as exc:
                raise TemplateError(f"playbooks: {value!r}: {exc.message}") from None
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value

    def truth(self, expression: str) -> bool:
        return bool(self.jinja.compile_expression(expression)(**self.variables))

    def file(self, template: str) -> str:
        path = Path(template)
        text = self.jinja.from_string(path.read_text(encoding="utf-8")).render(self.variables)
        return text.rstrip("\n")


def _path(path: str) -> str:
    """A path for the shell, with a leading ``~user`` left for the shell to expand."""
    if path.startswith("~"):
        home, _, rest = path.partition("/")
        return f"{home}/{quote(rest)}" if rest else home
    return quote(path)


def _owner(args: dict[str, Any], path: str) -> list[str]:
    out = []
    if "owner" in args:
        out.append(f"chown {quote(args['owner'] + ':' + args.get('group', args['owner']))} {path}")
    if "mode" in args:
        out.append(f"chmod {args['mode']} {path}")
    return out


def _heredoc(dest: str, content: str) -> str:
    return f"cat > {dest} <<'EOF'\n{content.rstrip(chr(10))}\nEOF"


def manual(module: str, args: Any, values: _Values, cwd: Path) -> tuple[str, ...]:
    """The shell commands that do what one task does."""
    name = module.removeprefix("ansible.builtin.")
    if name == "apt":
        packages = args["name"] if isinstance(args["name"], list) else [args["name"]]
        return ("apt-get update", "apt-get install -y " + " ".join(packages))
    if name == "user":
        user = quote(args["name"])
        return (
            f"id -u {user} >/dev/null 2>&1 || useradd --create-home --shell "
            f"{args.get('shell', '/bin/bash')} {user}",
            f"usermod -p {quote(args.get('password', '*'))} {user}   # no password can log in",
        )
    if name == "file":
        path = _path(args["path"] if "path" in args else args["dest"])
        state = args.get("state", "file")
        if state == "directory":
            return (f"mkdir -p {path}", *_owner(args, path))
        if state == "absent":
            return (f"rm -rf {path}",)
        if state == "link":
            return (f"ln -sfn {_path(args['src'])} {path}",)
    if name == "copy":
        dest = _path(args["dest"])
        if "content" in args:
            return (_heredoc(dest, args["content"]), *_owner(args, dest))
        source = Path(args["src"])
        shown = source.relative_to(cwd) if source.is_relative_to(cwd) else source
        return (f"# copy {shown} from the controller to {args['dest']}", *_owner(args, dest))
    if name == "template":
        dest = _path(args["dest"])
        return (_heredoc(dest, values.file(args["src"])), *_owner(args, dest))
    if name in ("command", "shell"):
        if isinstance(args, dict) and "argv" in args:
            text = " ".join(quote(a) for a in args["argv"])
            if "stdin" in args:
                return (text + " <<'EOF'\n" + args["stdin"].rstrip("\n") + "\nEOF",)
            return (text,)
        return (args if isinstance(args, str) else args["cmd"],)
    if name == "service":
        out = []
        if args.get("enabled"):
            out.append(f"systemctl enable {args['name']}")
        if args.get("state") == "started":
            out.append(f"systemctl start {args['name']}")
        return tuple(out)
    if name == "systemd_service" and args.get("daemon_reload"):
        return ("systemctl daemon-reload",)
    raise TemplateError(f"playbooks: no manual equivalent for module {module!r}")


_META = {"name", "when", "notify", "register", "args", "changed_when", "no_log", "environment"}


def _tasks(path: Path, values: _Values, root: Path) -> tuple[Task, ...]:
    out = []
    for raw in _load(path) or []:
        when = raw.get("when", "")
        if when and not values.truth(when):
            continue
        module = next(k for k in raw if k not in _META)
        args = values(raw[module])
        if isinstance(raw.get("args"), dict):
            args = {**({"cmd": args} if isinstance(args, str) else args), **values(raw["args"])}
        if isinstance(args, dict) and "environment" in raw:
            args = {**args, "environment": raw["environment"]}
        commands = manual(module, args, values, root)
        if "environment" in raw:
            names = " ".join(f"{k}=..." for k in raw["environment"])
            commands = tuple(f"{names} {c}" for c in commands)
        if isinstance(args, dict) and "creates" in args:
            commands = tuple(f"test -e {quote(args['creates'])} || {c}" for c in commands)
        notify = raw.get("notify")
        if notify:
            commands += (f"# then: {notify}",)
        out.append(Task(str(raw["name"]), commands))
    return tuple(out)


def roles(env: Environment, settings: ProvisionSettings) -> tuple[Role, ...]:
    playbooks = playbook_dir(env.root)
    inventory = ansible_inventory(env, settings)["all"]
    groups = {name: tuple(g["hosts"]) for name, g in inventory["children"].items()}
    shared = environment_vars(env, settings, read_keys=False)
    shared["releasebook_templates"] = str(templates_dir(env.root))
    out: list[Role] = []
    for play in _load(playbooks / "provision.yml"):
        pattern = play["hosts"]
        targets = tuple(inventory["hosts"]) if pattern == "all" else groups.get(pattern, ())
        if not targets:
            continue
        host = env.host(targets[0])
        for entry in play["roles"]:
            name = entry["role"] if isinstance(entry, dict) else entry
            variables = {
                **shared,
                **_host_vars(env, settings, host),
                "group_names": [g for g, members in groups.items() if host.name in members],
                "ansible_user": settings.user,
                "ansible_service_mgr": "systemd",
            }
            values = _Values(variables)
            when = entry.get("when", "") if isinstance(entry, dict) else ""
            if when and not values.truth(when):
                continue
            role_dir = playbooks / "roles" / name
            tasks = _tasks(role_dir / "tasks" / "main.yml", values, env.root)
            handlers_file = role_dir / "handlers" / "main.yml"
            handlers = _tasks(handlers_file, values, env.root) if handlers_file.is_file() else ()
            out.append(
                Role(
                    name=name,
                    hosts=pattern,
                    targets=targets,
                    purpose=_purpose(role_dir / "tasks" / "main.yml"),
                    switch=when,
                    tasks=tasks + tuple(Task(f"(handler) {h.name}", h.manual) for h in handlers),
                )
            )
    return tuple(out)


def _host_vars(env: Environment, settings: ProvisionSettings, host: Host) -> dict[str, Any]:
    return host_vars(env, settings, host)


def env_vars(env: Environment) -> list[tuple[str, str]]:
    """Each variable of the env file and where its value comes from."""
    files = env.env_file
    rows = []
    names = dict.fromkeys([*files.required, *files.values, *files.generate, *files.secrets])
    for name in names:
        if name in files.secrets:
            where = f"secret, read on the controller from {files.secrets[name].describe()}"
        elif name in files.generate:
            where = "generated once per host by the first release"
        elif name in files.values:
            where = "the inventory's env.values"
        else:
            where = "**the operator**: set it in `shared/.env` on each host before releasing"
        rows.append((name, where))
    return rows


def render_setup(env: Environment) -> str:
    settings = load_provision(env, check_files=False)
    layout = HostLayout(env.deploy_path)
    migrate = env.hosts_with("migrate")[0]
    root = str(env.root) + "/"
    template = markdown_environment(template_dirs(env.root), {})
    try:
        text = template.get_template("setup.md.j2").render(
            env=env,
            settings=settings,
            roles=roles(env, settings),
            env_vars=env_vars(env),
            unit=unit_name(env),
            layout=layout,
            migrate=migrate,
            launcher=layout.current / LAUNCHER,
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"setup.md.j2: {exc.message}") from None
    return text.replace(root, "")
