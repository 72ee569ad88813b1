"""The whole bridge on one machine: Redis, database, simulator, HTTP app, worker, beat, Flower.

``running_stack(options)`` starts everything (below) as children of the demo on free loopback
ports, with a work directory (default ``.demo/``) holding the SQLite file, the tenants file
and one log per process, and stops all of it when the block ends (Ctrl-C included).

| step | how | ready when |
|---|---|---|
| Redis | ``demo.redis_source`` (configured / redis-server / fakeredis) | PING answers |
| tenants file | ``demo/tenants.toml`` with the simulator's origin | |
| migrate | ``fapiao db upgrade`` (``python -m producers.cli``) | exit code 0 |
| simulator | ``python -m simulator`` (short delays, callbacks to the API) | ``/_sim/healthz`` |
| HTTP app | ``fapiao api`` | ``/healthz`` |
| Flower | ``celery -A worker flower --basic-auth=…`` (+ ``worker.flower``) | ``/healthcheck`` |
| worker | ``celery -A worker worker`` (prefork, 2 processes) | logs "ready" |
| beat | ``celery -A worker beat`` (redbeat: schedule, lock in Redis) | logs "beat: Starting" |

Flower starts before the worker so that it sees every task event from the first one; it
keeps its history in ``flower.db`` of the work directory (``--persistent``), so a Flower
restarted during a demo still lists the earlier tasks.

Compressed timing (``DemoOptions``; the environment of every child, ``FAPIAO_*``):

| knob | demo value | production default |
|---|---|---|
| simulator issue delay | 1.5 s | (cloud: ~2 min) |
| token lifetime (simulator) / refresh margin | 30 s / 5 s | 7200 s / 600 s |
| ``FAPIAO_POLL__SCHEDULE_SECONDS`` / ``_CAP_SECONDS`` | 2,3,5,8 / 8 | 5,15,60,… / 21600 |
| ``FAPIAO_PUSH__BACKOFF_BASE_SECONDS`` / ``_CAP_SECONDS`` | 0.5 / 5 | 2 / 300 |
| simulator callback retries | 1, 2, 4 s | contract schedule |

The children get the demo's own ``FAPIAO_*`` settings only: any ``FAPIAO_*`` variable of the
calling shell is dropped so that the demo can never touch a real database or tenant.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from demo.processes import ProcessGroup, free_port, wait_for_log, wait_http
from demo.redis_source import RedisSource, redis_for_demo
from worker.flower import flower_options

__all__ = ["REPO_ROOT", "DemoOptions", "DemoStack", "demo_env_text", "running_stack"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TENANTS_TEMPLATE = Path(__file__).resolve().parent / "tenants.toml"
TEMPLATE_ORIGIN = "http://127.0.0.1:8765"
HOST = "127.0.0.1"
DEMO_FLOWER_SAVE_MS = 5_000  # a demo is short: save Flower's history often


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workdir: Path = REPO_ROOT / ".demo"
    database_url: str | None = None  # default: sqlite file in workdir
    redis_url: str | None = None  # default: FAPIAO_REDIS_URL, then redis-server, then fakeredis
    allow_redis_server: bool = True
    flower_user: str = "demo"
    flower_password: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    issue_delay: float = 1.5
    token_ttl: float = 30.0
    seed: int = 7
    python: str = sys.executable
    start_timeout: float = 60.0


@dataclass
class DemoStack:
    """What is running and how to reach it."""

    options: DemoOptions
    redis: RedisSource
    database_url: str
    env: dict[str, str]
    api_url: str
    api_key: str
    simulator_url: str
    flower_url: str
    callback_secret: str
    processes: ProcessGroup

    @property
    def flower_auth(self) -> tuple[str, str]:
        return (self.options.flower_user, self.options.flower_password)

    @property
    def workdir(self) -> Path:
        return self.options.workdir

    @property
    def logs(self) -> Path:
        return self.options.workdir / "logs"

    @property
    def env_file(self) -> Path:
        """The demo's ``FAPIAO_*`` settings plus ``FAPIAO_API_URL`` / ``FAPIAO_API_KEY``.

        For a shell: ``set -a; . .demo/demo.env; set +a``.
        """
        return self.options.workdir / "demo.env"

    def check_alive(self) -> None:
        """Raise ``ChildExited`` if any child died."""
        for process in self.processes.processes:
            process.check_alive()


def demo_env_text(env: dict[str, str], *, api_url: str, api_key: str) -> str:
    """``.demo/demo.env``: the children's ``FAPIAO_*`` settings plus what a client needs.

    ``FAPIAO_API_URL`` and ``FAPIAO_API_KEY`` (the README's curl examples) are read by no
    process: ``Settings`` ignores unknown ``FAPIAO_*`` names.
    """
    values = {k: v for k, v in env.items() if k.startswith("FAPIAO_")}
    values.update(FAPIAO_API_URL=api_url, FAPIAO_API_KEY=api_key)
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _fresh_workdir(workdir: Path) -> None:
    """Forget the previous run: its database, Flower history, logs (only files the demo owns)."""
    workdir.mkdir(parents=True, exist_ok=True)
    patterns = (
        "fapiao.db*",
        "flower.db*",
        "celerybeat-schedule*",
        "tenants.toml",
        "demo.env",
        "logs/*.log",
    )
    for pattern in patterns:
        for path in workdir.glob(pattern):
            path.unlink(missing_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)


def _child_env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FAPIAO_")}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    # The children import schemas/, store/, worker/ ... from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def _write_tenants(workdir: Path, simulator_origin: str) -> Path:
    text = TENANTS_TEMPLATE.read_text(encoding="utf-8").replace(TEMPLATE_ORIGIN, simulator_origin)
    path = workdir / "tenants.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _migrate(options: DemoOptions, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(
            [options.python, "-m", "producers.cli", "db", "upgrade"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"fapiao db upgrade failed (exit {result.returncode}); see {log}")


def _settings_env(
    options: DemoOptions,
    redis_url: str,
    database_url: str,
    tenants_file: Path,
    api_key: str,
    callback_secret: str,
) -> dict[str, str]:
    return {
        "FAPIAO_ENVIRONMENT": "development",
        "FAPIAO_DATABASE_URL": database_url,
        "FAPIAO_BROKER_URL": redis_url,
        "FAPIAO_REDIS_URL": redis_url,
        "FAPIAO_TENANTS_FILE": str(tenants_file),
        "FAPIAO_API_KEYS": api_key,
        "FAPIAO_CALLBACK_SECRET": callback_secret,
        "FAPIAO_LOG_FORMAT": "console",
        "FAPIAO_LOG_LEVEL": "INFO",
        "FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS": "5",
        "FAPIAO_POLL__SCHEDULE_SECONDS": "2,3,5,8",
        "FAPIAO_POLL__CAP_SECONDS": "8",
        "FAPIAO_PUSH__BACKOFF_BASE_SECONDS": "0.5",
        "FAPIAO_PUSH__BACKOFF_CAP_SECONDS": "5",
        "FAPIAO_HTTP__READ_TIMEOUT_SECONDS": "10",
    }


@contextmanager
def running_stack(options: DemoOptions) -> Iterator[DemoStack]:
    """Start everything (module table); stop everything when the block ends."""
    processes = ProcessGroup()
    _fresh_workdir(options.workdir)
    logs = options.workdir / "logs"
    configured_redis = options.redis_url or os.environ.get("FAPIAO_REDIS_URL") or None
    try:
        with redis_for_demo(
            configured_redis,
            processes,
            options.workdir,
            allow_server=options.allow_redis_server,
        ) as redis_source:
            try:
                yield _start(options, redis_source, processes, logs)
            finally:
                processes.stop_all()
    finally:
        processes.stop_all()


def _start(
    options: DemoOptions, redis_source: RedisSource, processes: ProcessGroup, logs: Path
) -> DemoStack:
    python = options.python
    timeout = options.start_timeout
    sim_port, api_port, flower_port = free_port(), free_port(), free_port()
    simulator_url = f"http://{HOST}:{sim_port}"
    api_url = f"http://{HOST}:{api_port}"
    flower_url = f"http://{HOST}:{flower_port}"
    api_key = "demo-key-" + secrets.token_urlsafe(12)
    callback_secret = "demo-cb-" + secrets.token_urlsafe(12)
    database_url = options.database_url or f"sqlite:///{options.workdir / 'fapiao.db'}"
    tenants_file = _write_tenants(options.workdir, simulator_url)
    env = _child_env(
        _settings_env(
            options, redis_source.url, database_url, tenants_file, api_key, callback_secret
        )
    )

    (options.workdir / "demo.env").write_text(
        demo_env_text(env, api_url=api_url, api_key=api_key), encoding="utf-8"
    )
    _migrate(options, env, logs / "migrate.log")

    simulator = processes.start(
        "simulator",
        [python, "-m", "simulator", "--host", HOST, "--port", str(sim_port),
         "--tenants-file", str(tenants_file),
         "--callback-url", f"{api_url}/callbacks/kingdee/{callback_secret}",
         "--issue-delay", str(options.issue_delay), "--token-ttl", str(options.token_ttl),
         "--callback-retry-schedule", "1,2,4", "--callback-timeout", "5",
         "--seed", str(options.seed), "--log-level", "warning",
         "--unknown-originals", "assumed"],  # the red sample reverses a real-world invoice
        env=env, log_path=logs / "simulator.log", cwd=REPO_ROOT,
    )  # fmt: skip
    api = processes.start(
        "api",
        [python, "-m", "producers.cli", "api", "--host", HOST, "--port", str(api_port),
         "--log-level", "warning"],
        env=env, log_path=logs / "api.log", cwd=REPO_ROOT,
    )  # fmt: skip
    flower = processes.start(
        "flower",
        [python, "-m", "celery", "-A", "worker", "flower", f"--address={HOST}",
         f"--port={flower_port}",
         f"--basic-auth={options.flower_user}:{options.flower_password}",
         *flower_options(db=options.workdir / "flower.db",
                         state_save_interval_ms=DEMO_FLOWER_SAVE_MS),
         "--logging=warning"],
        env=env, log_path=logs / "flower.log", cwd=REPO_ROOT,
    )  # fmt: skip
    wait_http(f"{simulator_url}/_sim/healthz", timeout=timeout, process=simulator)
    wait_http(f"{api_url}/healthz", timeout=timeout, process=api)
    wait_http(f"{flower_url}/healthcheck", timeout=timeout, process=flower)

    worker = processes.start(
        "worker",
        [python, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO",
         "--concurrency=2", f"--hostname=demo-{api_port}@%h"],
        env=env, log_path=logs / "worker.log", cwd=REPO_ROOT,
    )  # fmt: skip
    beat = processes.start(
        "beat",
        [python, "-m", "celery", "-A", "worker", "beat", "--loglevel=INFO"],
        env=env, log_path=logs / "beat.log", cwd=REPO_ROOT,
    )  # fmt: skip
    wait_for_log(worker, " ready.", timeout=timeout)
    wait_for_log(beat, "beat: Starting", timeout=timeout)

    return DemoStack(
        options=options,
        redis=redis_source,
        database_url=database_url,
        env=env,
        api_url=api_url,
        api_key=api_key,
        simulator_url=simulator_url,
        flower_url=flower_url,
        callback_secret=callback_secret,
        processes=processes,
    )
