"""docker-compose.yml, the Dockerfile and deploy/ checked against the code.

No Docker engine (and no compose plugin) runs where the suite runs, so the compose file is
parsed and every service, command, variable and mount is checked against what the code
actually provides. Shell snippets in the file are run for real with stand-in executables.

| check | proves |
|---|---|
| services | redis, postgres, migrate, api, worker, beat, flower, simulator all exist |
| interpolation | nothing but ``deploy/fapiao.env`` is needed: every ``${VAR}`` has a default |
| migrate | one-shot ``fapiao db upgrade`` after postgres is healthy; api/worker/beat wait for it |
| health checks | every long-running service has one, probing its own port and route |
| ``depends_on`` | ``service_healthy`` only names services that have a health check |
| ``FAPIAO_*`` | every one in the compose file, the env example and the Dockerfile is a setting |
| settings | each service's environment builds a valid ``Settings`` aimed at the stack |
| ``fapiao`` verbs | each verb (and ``--option``) used is registered in ``producers.cli.app`` |
| ``celery -A worker`` | the app module builds, and the workers consume exactly its queues |
| flower | refuses to start without ``FLOWER_BASIC_AUTH=user:password``, then passes it on |
| flower options | ``worker.flower.flower_options``; its history file on a volume the image owns |
| beat | redbeat (no schedule file); the probe is ``python -m worker.beat`` |
| tenants file | mounted read-only where ``FAPIAO_TENANTS_FILE`` points; tenants on the simulator |
| Dockerfile | multi-stage, ``uv sync --frozen --no-dev``, venv copied, non-root ``USER`` |
| .dockerignore | admits what the Dockerfile copies, keeps secrets and the venv out |
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import stat
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from schemas.settings import ENV_PREFIX, Settings, SettingsError
from schemas.tenants import load_tenants
from worker.flower import flower_options

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "deploy" / "fapiao.env.example"

REQUIRED_SERVICES = ("redis", "postgres", "migrate", "api", "worker", "beat", "flower", "simulator")
ONE_SHOT = frozenset({"migrate"})
GATED_BY_MIGRATE = ("api", "worker", "beat")
# Services that run the bridge's own image and read its settings.
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower", "simulator")
FAPIAO_VERBS = {"migrate": ("db", "upgrade"), "api": ("api",), "simulator": ("simulator",)}
# `fapiao` verbs that pass their options on to a command of another room (imported lazily).
FORWARDED = {"simulator": "simulator.cli:simulator"}
CELERY_SUBCOMMANDS = {"worker": "worker", "beat": "beat", "flower": "flower"}


# --- compose interpolation ----------------------------------------------------------------------


class UnsetVariable(LookupError):
    """A ``${VAR}`` / ``${VAR:?msg}`` compose would refuse without VAR."""


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``/``-``, ``:?``/``?``, ``:+``/``+``."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        named = match.group("named")
        if named is not None:
            if named not in env:
                raise UnsetVariable(named)
            return env[named]
        braced = _BRACED.fullmatch(match.group("braced"))
        if braced is None:
            raise ValueError(f"invalid interpolation ${{{match.group('braced')}}}")
        name, op, arg = braced.group("name", "op", "arg")
        value = env.get(name)
        is_set = value is not None and (value != "" or op is None or not op.startswith(":"))
        if op is None:
            if value is None:
                raise UnsetVariable(name)
            return value
        if op.endswith("-"):
            return value if is_set and value is not None else arg
        if op.endswith("?"):
            if not is_set or value is None:
                raise UnsetVariable(f"{name}: {arg}")
            return value
        return arg if is_set else ""

    return _REFERENCE.sub(replace, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string in a parsed compose document."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a$$b $${X}", {}) == "a$b ${X}"
    assert (
        interpolate("${SET} $SET ${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${NOPE-d}", env) == "v v v d  d"
    )
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    with pytest.raises(UnsetVariable, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(UnsetVariable):
        interpolate("${NOPE}", env)


# --- loading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The file as compose sees it with an empty shell environment (defaults applied)."""
    resolved = resolve(raw_compose, {})
    assert isinstance(resolved, dict)
    return resolved


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as compose's ``env_file`` reads them (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def env_file_paths(service: Mapping[str, Any]) -> list[Path]:
    """The service's env files, read from their committed ``.example`` (the real ones are local)."""
    entries = service.get("env_file", [])
    if isinstance(entries, str | dict):
        entries = [entries]
    paths = []
    for entry in entries:
        path = ROOT / (entry["path"] if isinstance(entry, dict) else entry)
        example = path.with_name(path.name + ".example")
        paths.append(example if example.exists() else path)
    return paths


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in env_file_paths(service):
        env.update(read_env_file(path))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.partition("=")[::2] for item in declared)
    env.update({str(k): "" if v is None else str(v) for k, v in declared.items()})
    return env


# --- commands -----------------------------------------------------------------------------------


def process_argv(service: Mapping[str, Any]) -> list[str]:
    """The argv of the service's main process; ``sh -c`` scripts must ``exec`` it (PID 1)."""
    command = service["command"]
    assert isinstance(command, list), "write commands as lists (exec form)"
    if command[:2] != ["sh", "-c"]:
        return [str(part) for part in command]
    script = command[2]
    execs = [line.strip() for line in script.splitlines() if line.strip().startswith("exec ")]
    assert len(execs) == 1, f"the script must end by exec-ing its process: {script!r}"
    return shlex.split(execs[0])[1:]


def option_names(argv: list[str]) -> set[str]:
    return {part.split("=", 1)[0] for part in argv if part.startswith("-")}


def option_value(argv: list[str], *names: str) -> str:
    """The value of ``--name=value`` or ``--name value`` (first of ``names`` found)."""
    for index, part in enumerate(argv):
        for name in names:
            if part == name:
                return argv[index + 1]
            if part.startswith(name + "="):
                return part.split("=", 1)[1]
    raise AssertionError(f"none of {names} in {argv}")


def run_script(
    script: str, stand_in: str, env: Mapping[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run a service's ``sh -c`` script with ``stand_in`` replaced by a program echoing its args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / stand_in
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- the services -------------------------------------------------------------------------------


def test_every_required_service_exists(compose: dict[str, Any]) -> None:
    assert set(REQUIRED_SERVICES) <= set(services(compose))


def test_compose_needs_no_shell_variables_beyond_defaults(raw_compose: dict[str, Any]) -> None:
    # Only deploy/fapiao.env is needed to start the stack: every compose-time reference has a
    # default (runtime ones are written $${...} and left to the container's shell).
    resolve(raw_compose, {})
    with pytest.raises(UnsetVariable):
        resolve({"x": "${SOMETHING_REQUIRED:?set it}"}, {})


def test_migrate_is_one_shot_after_postgres(compose: dict[str, Any]) -> None:
    migrate = services(compose)["migrate"]
    assert process_argv(migrate)[:3] == ["fapiao", "db", "upgrade"]
    assert str(migrate.get("restart", "no")) == "no"
    assert "healthcheck" not in migrate and "ports" not in migrate
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", GATED_BY_MIGRATE)
def test_service_starts_only_after_migrate_succeeded(compose: dict[str, Any], name: str) -> None:
    depends = services(compose)[name]["depends_on"]
    assert isinstance(depends, dict), "use the long depends_on form with conditions"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no health check"
        assert not check.get("disable", False), name
        probe = check["test"]
        assert isinstance(probe, list) and probe[0] in ("CMD", "CMD-SHELL"), name
        assert len(probe) > 1, name


def test_healthy_conditions_name_services_with_health_checks(compose: dict[str, Any]) -> None:
    everything = services(compose)
    for name, service in everything.items():
        for target, spec in dict(service.get("depends_on", {})).items():
            assert target in everything, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in everything[target], f"{name} waits on {target}'s health"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"


def _probe_text(service: Mapping[str, Any]) -> str:
    return " ".join(str(part) for part in service["healthcheck"]["test"][1:])


@pytest.mark.parametrize(
    ("name", "route"),
    [("api", "/healthz"), ("flower", "/healthcheck"), ("simulator", "/_sim/healthz")],
)
def test_http_probes_hit_the_port_the_process_listens_on(
    compose: dict[str, Any], name: str, route: str
) -> None:
    service = services(compose)[name]
    port = option_value(process_argv(service), "--port")
    assert f"http://127.0.0.1:{port}{route}'" in _probe_text(service)
    published = [str(p) for p in service.get("ports", [])]
    assert all(p.endswith(f":{port}") for p in published), published


def test_worker_probe_pings_the_node_the_worker_names_itself(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    node = option_value(process_argv(worker), "--hostname", "-n")
    assert node.endswith("@%h")
    probe = _probe_text(worker)
    assert "celery -A worker inspect ping" in probe
    # In the container $HOSTNAME is what celery's %h expands to.
    assert f"--destination={node.removesuffix('%h')}${{HOSTNAME}}" in probe


def test_beat_runs_redbeat_and_its_probe_reads_the_shared_schedule(
    compose: dict[str, Any], clean_environment: pytest.MonkeyPatch
) -> None:
    beat = services(compose)["beat"]
    argv = process_argv(beat)
    # redbeat keeps the schedule and its lock in Redis: no schedule file, any number of beats.
    assert not option_names(argv) & {"--schedule", "-s", "--scheduler", "-S"}, argv
    from worker import create_app

    app = create_app(settings_of(beat, clean_environment))
    assert app.conf.beat_scheduler == "worker.beat:ResilientRedBeatScheduler"
    assert beat["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.beat"]
    assert importlib.util.find_spec("worker.beat") is not None


def test_flower_keeps_its_history_on_a_writable_volume(compose: dict[str, Any]) -> None:
    flower = services(compose)["flower"]
    database = option_value(process_argv(flower), "--db")
    directory = str(Path(database).parent)
    volumes = [m for m in flower["volumes"] if isinstance(m, str) and m.endswith(":" + directory)]
    assert volumes, f"Flower's history directory {directory} must be a volume"
    assert volumes[0].split(":")[0] in compose["volumes"]
    assert directory in _runtime_stage_text(), "the image must create it, owned by its user"


# --- settings -----------------------------------------------------------------------------------


def setting_env_names() -> set[str]:
    """Every ``FAPIAO_*`` name ``Settings`` reads: fields, and ``GROUP__FIELD`` of nested groups."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        top = ENV_PREFIX + field_name.upper()
        names.add(top)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f"{top}__{sub.upper()}" for sub in annotation.model_fields)
    return names


def test_setting_names_are_introspected() -> None:
    names = setting_env_names()
    assert {
        "FAPIAO_DATABASE_URL",
        "FAPIAO_TENANTS_FILE",
        "FAPIAO_PUSH__MAX_ATTEMPTS",
        "FAPIAO_STUCK_ALERT__IN_DOUBT",
    } <= names
    assert "FAPIAO_PUSH__MAX_ATTEMPT" not in names
    assert "FAPIAO_PUSH" in names  # a whole group may be given as JSON


@pytest.mark.parametrize("path", [COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE], ids=lambda p: p.name)
def test_every_fapiao_variable_is_a_setting(path: Path) -> None:
    # Commented-out suggestions count too: a typo there is copied by the next operator.
    used = set(re.findall(r"\bFAPIAO_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    assert used, f"{path.name} names no FAPIAO_ variable"
    assert used <= setting_env_names(), sorted(used - setting_env_names())


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


def settings_of(
    service: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch, **override: str
) -> Settings:
    for key, value in {**service_environment(service), **override}.items():
        monkeypatch.setenv(key, value)
    return Settings.load()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_environment_makes_valid_settings_for_the_stack(
    compose: dict[str, Any], clean_environment: pytest.MonkeyPatch, name: str
) -> None:
    everything = services(compose)
    settings = settings_of(everything[name], clean_environment)
    assert settings.database_url.startswith("postgresql+psycopg://")
    for url in (settings.database_url, settings.broker_url, settings.redis_url):
        assert urlsplit(url).hostname in everything, url
    database = urlsplit(settings.database_url)
    postgres_env = everything["postgres"]["environment"]
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres_env["POSTGRES_DB"]


def test_env_example_secrets_are_refused_in_production(
    compose: dict[str, Any], clean_environment: pytest.MonkeyPatch
) -> None:
    # Copying the example unchanged into production must not start a bridge.
    with pytest.raises(SettingsError, match="placeholder"):
        settings_of(services(compose)["api"], clean_environment, FAPIAO_ENVIRONMENT="production")


# --- the fapiao CLI -----------------------------------------------------------------------------


def subcommands(command: Any) -> dict[str, Any]:
    """A group's verbs (Typer's groups are not ``click.Group`` subclasses: duck-typed)."""
    found = getattr(command, "commands", None)
    return dict(found) if isinstance(found, Mapping) else {}


def forwarded_command(target: str) -> Any:
    """The click command of a ``module:function`` Typer command."""
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    wrapper = typer.Typer()
    wrapper.command()(function)
    return typer.main.get_command(wrapper)


def cli_root() -> Any:
    from producers.cli import app

    try:
        return typer.main.get_command(app)
    except RuntimeError:  # a Typer app without any command yet
        return None


def resolve_verb(root: Any, argv: list[str]) -> tuple[list[str], Any, list[str]]:
    """Walk ``argv`` down the command tree: (verb path found, its command, the rest)."""
    command, rest, path = root, list(argv), []
    while rest and rest[0] in subcommands(command):
        path.append(rest[0])
        command = subcommands(command)[rest.pop(0)]
    return path, command, rest


def test_fapiao_is_the_console_script_of_the_cli() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["fapiao"] == "producers.cli:main"
    from producers.cli import main

    assert callable(main)


def test_fapiao_verbs_in_the_file_are_the_ones_checked(compose: dict[str, Any]) -> None:
    invoked = {
        name: process_argv(service)
        for name, service in services(compose).items()
        if "command" in service and process_argv(service)[0] == "fapiao"
    }
    assert set(invoked) == set(FAPIAO_VERBS)
    for name, argv in invoked.items():
        verb = FAPIAO_VERBS[name]
        assert tuple(argv[1 : 1 + len(verb)]) == verb, argv


@pytest.mark.parametrize("name", sorted(FAPIAO_VERBS))
def test_fapiao_verb_and_options_are_registered(compose: dict[str, Any], name: str) -> None:
    argv = process_argv(services(compose)[name])
    verb = FAPIAO_VERBS[name]
    path, command, rest = resolve_verb(cli_root(), argv[1:])
    assert tuple(path) == verb, f"`fapiao {' '.join(verb)}` is not a registered command"
    assert not subcommands(command), f"`fapiao {' '.join(verb)}` is a group, not a command"
    if command.context_settings.get("ignore_unknown_options"):
        # The verb hands its arguments on to a command of another room, imported lazily.
        assert path[-1] in FORWARDED, f"`fapiao {path[-1]}` forwards its options to what?"
        command = forwarded_command(FORWARDED[path[-1]])
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    assert known, "the command declares no options"
    assert option_names(rest) <= known, sorted(option_names(rest) - known)


# --- celery -------------------------------------------------------------------------------------


def test_celery_services_name_the_worker_app(
    compose: dict[str, Any], clean_environment: pytest.MonkeyPatch
) -> None:
    everything = services(compose)
    celery_services = {
        name: process_argv(s)
        for name, s in everything.items()
        if "command" in s and process_argv(s)[0] == "celery"
    }
    assert {name: argv[3] for name, argv in celery_services.items()} == CELERY_SUBCOMMANDS
    for argv in celery_services.values():
        assert argv[1:3] == ["-A", "worker"], argv
    assert importlib.util.find_spec("worker") is not None
    from worker import create_app

    settings = settings_of(everything["worker"], clean_environment)
    app = create_app(settings)  # builds configuration only; connects to nothing
    assert app.conf.broker_url == settings.broker_url
    defined = {queue.name for queue in app.conf.task_queues}
    consumed = set(option_value(celery_services["worker"], "--queues", "-Q").split(","))
    assert consumed == defined, "every queue must have a consumer, and only defined ones"
    assert {route["queue"] for route in app.conf.task_routes.values()} <= consumed


def test_worker_has_time_to_finish_tasks_on_stop(compose: dict[str, Any]) -> None:
    grace = str(services(compose)["worker"]["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) >= 30


# --- flower -------------------------------------------------------------------------------------


def _flower_script(compose: Mapping[str, Any]) -> str:
    command = services(compose)["flower"]["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2])


def test_flower_exec_passes_basic_auth_from_the_environment(compose: dict[str, Any]) -> None:
    argv = process_argv(services(compose)["flower"])
    assert argv[:4] == ["celery", "-A", "worker", "flower"]
    assert option_value(argv, "--basic-auth") == "${FLOWER_BASIC_AUTH}"
    assert re.fullmatch(r"[^:\s]+:\S+", read_env_file(ENV_EXAMPLE)["FLOWER_BASIC_AUTH"])


@pytest.mark.parametrize("credentials", [None, "", "operator", "operator:", ":secret"])
def test_flower_refuses_to_start_without_basic_auth(
    compose: dict[str, Any], tmp_path: Path, credentials: str | None
) -> None:
    env = {} if credentials is None else {"FLOWER_BASIC_AUTH": credentials}
    result = run_script(_flower_script(compose), "celery", env, tmp_path)
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
    assert "flower" not in result.stdout  # celery never ran


def test_flower_starts_with_basic_auth(compose: dict[str, Any], tmp_path: Path) -> None:
    result = run_script(
        _flower_script(compose), "celery", {"FLOWER_BASIC_AUTH": "ops:s3cret-pw"}, tmp_path
    )
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv[:5] == ["-A", "worker", "flower", "--port=5555", "--basic-auth=ops:s3cret-pw"]
    # The rest are worker.flower's options, the same the demo uses (one source).
    database = option_value(argv, "--db")
    assert argv[5:] == flower_options(db=database)
    assert "kwargs" in option_value(argv, "--tasks_columns").split(",")


# --- simulator ----------------------------------------------------------------------------------


def test_simulator_calls_back_on_the_api_secret_path(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    everything = services(compose)
    script = str(everything["simulator"]["command"][2])
    api_port = option_value(process_argv(everything["api"]), "--port")
    result = run_script(script, "fapiao", {"FAPIAO_CALLBACK_SECRET": "s3cret-path-x"}, tmp_path)
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv[0] == "simulator"
    assert option_value(argv, "--callback-url") == (
        f"http://api:{api_port}/callbacks/kingdee/s3cret-path-x"
    )
    missing = run_script(script, "fapiao", {}, tmp_path)
    assert missing.returncode != 0 and "FAPIAO_CALLBACK_SECRET" in missing.stderr


# --- the tenants file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    bind: bool


def mounts(service: Mapping[str, Any]) -> Iterator[Mount]:
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target, _, mode = rest.partition(":")
            bind = source.startswith((".", "/", "~"))
            yield Mount(source, target, "ro" in mode.split(","), bind)
        else:
            yield Mount(
                str(volume.get("source", "")),
                str(volume["target"]),
                bool(volume.get("read_only", False)),
                volume.get("type") == "bind",
            )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_tenants_file_is_mounted_read_only_where_the_setting_points(
    compose: dict[str, Any], name: str
) -> None:
    service = services(compose)[name]
    target = service_environment(service)["FAPIAO_TENANTS_FILE"]
    found = [m for m in mounts(service) if m.target == target]
    assert len(found) == 1, f"{name}: nothing mounted at {target}"
    mount = found[0]
    assert mount.bind and mount.read_only, mount
    assert (ROOT / mount.source).is_file(), mount.source


def test_compose_tenants_live_on_the_simulator_service(compose: dict[str, Any]) -> None:
    everything = services(compose)
    simulator = everything["simulator"]
    environment = service_environment(simulator)
    target = environment["FAPIAO_TENANTS_FILE"]
    (mount,) = (m for m in mounts(simulator) if m.target == target)
    tenants = load_tenants(ROOT / mount.source, environment["FAPIAO_ENVIRONMENT"])
    port = int(option_value(process_argv(simulator), "--port"))
    assert len(tenants.tenants) >= 2
    for tenant in tenants.tenants:
        assert (tenant.base_url.host, tenant.base_url.port) == ("simulator", port), tenant.name
    paths = [tenant.base_url.path for tenant in tenants.tenants]
    assert len(set(paths)) == len(paths), "each tenant needs its own path on the simulator"


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]

    def arguments(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages() -> list[Stage]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, args = stripped.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, parts[0], []))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def builder_stage() -> Stage:
    """The stage the runtime copies its venv from."""
    stages = dockerfile_stages()
    sources = {
        match.group(1)
        for args in stages[-1].arguments("COPY")
        if (match := re.search(r"--from=(\S+)", args))
    }
    assert len(sources) == 1, sources
    (builder,) = [stage for stage in stages if stage.name in sources]
    return builder


def _runtime_stage_text() -> str:
    runtime = dockerfile_stages()[-1]
    return "\n".join(f"{kw} {args}" for kw, args in runtime.instructions)


def test_dockerfile_is_multi_stage_with_uv_from_the_lock() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    builder = builder_stage()
    builder_name = builder.name
    syncs = [args for args in builder.arguments("RUN") if "uv sync" in args]
    assert syncs and all("--frozen" in a and "--no-dev" in a for a in syncs), syncs
    assert any("--no-editable" in a for a in syncs), "the runtime has no source tree to link to"
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", " ".join(builder.arguments("ENV")))
    assert venv is not None
    assert any(
        f"--from={builder_name} {venv.group(1)} " in a + " " for a in runtime.arguments("COPY")
    )
    assert f"PATH={venv.group(1)}/bin:" in " ".join(runtime.arguments("ENV"))
    assert not any("uv" in args.split() for args in runtime.arguments("RUN")), "no uv at runtime"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    runtime = dockerfile_stages()[-1]
    users = runtime.arguments("USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    last_user = max(i for i, (kw, _) in enumerate(runtime.instructions) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in runtime.instructions[last_user:]), "RUN after USER"
    created = " ".join(runtime.arguments("RUN"))
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", created), "USER is never created"
    assert f"chown -R {user}:" in created


def test_dockerfile_copies_every_package_of_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    builder_copies = " ".join(builder_stage().arguments("COPY"))
    for package in packages:
        assert re.search(rf"(^|\s){package}\s", builder_copies + " "), package


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def docker_ignores(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        rules.append((negated, _pattern_regex(text.lstrip("!").strip("/"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_admits_what_the_dockerfile_copies() -> None:
    for stage in dockerfile_stages():
        for args in stage.arguments("COPY"):
            if "--from=" in args:
                continue
            for source in args.split()[:-1]:
                assert not docker_ignores(source.rstrip("/")), source
                assert (ROOT / source).exists(), source
    assert not docker_ignores("worker/app.py")
    assert not docker_ignores("migrations/versions/20261124_0001_initial_schema.py")


@pytest.mark.parametrize(
    "path",
    [
        "tenants.toml",
        "producers/tenants.toml",
        "deploy/fapiao.env",
        "worker/.env",
        ".venv/bin/python",
        ".git/config",
        "fapiao.db",
        "tests/conftest.py",
        "worker/__pycache__/app.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_secrets_and_local_state_out(path: str) -> None:
    assert docker_ignores(path)
