"""The bridge as separate processes for a benchmark run, on private Redis and PostgreSQL.

``running_bench_stack(options)`` starts, on free loopback ports, and stops at the end:

| step | how | ready when |
|---|---|---|
| PostgreSQL | ``bench.pgcluster.private_postgres`` (own cluster, restartable) | ``SELECT 1`` |
| Redis | ``redis-server`` (own, no persistence, flushable) | PING |
| migrate | ``python -m producers.cli db upgrade`` | exit 0 |
| simulator | ``python -m simulator``: ``options.faults``, ``.dialect``, callbacks | healthz |
| HTTP app | ``python -m producers.cli api`` | ``/healthz`` |
| workers | ``celery -A worker worker`` × ``options.workers`` (prefork, ``-c`` each) | "ready" |
| beat | ``celery -A worker beat`` (sweeps, polls, token refresh) | "beat: Starting" |

All are started before any is waited for (their imports overlap on a busy machine).

The process plumbing (own sessions, logs, stop in reverse order, readiness) is the demo's
(``demo.processes``); the settings differ from the demo's (a benchmark needs no Flower, a high
per-tenant rate limit, and its own fault plan), hence this composition root of its own.
Children get only the ``FAPIAO_*`` variables set here.

``options.dialect`` (switch → value of ``schemas.cloud_contract.DIALECT_SWITCHES``) is the
reading the simulator plays (``--dialect``); ``options.tenants_cloud`` is what the tenants file
declares under every tenant's ``[tenants.cloud]`` (empty: nothing declared, every switch
unknown to the bridge).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.pgcluster import PgCluster, private_postgres
from demo.processes import ManagedProcess, ProcessGroup, free_port, wait_for_log, wait_http
from simulator.testing import sim_tenant_specs, write_tenants_toml

__all__ = [
    "REPO_ROOT",
    "BenchOptions",
    "BenchStack",
    "declare_tenants_cloud",
    "running_bench_stack",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass(frozen=True)
class BenchOptions:
    workdir: Path
    faults: Mapping[str, float] = field(default_factory=dict)
    dialect: Mapping[str, str] = field(default_factory=dict)  # simulator --dialect NAME=VALUE
    tenants_cloud: Mapping[str, str] = field(default_factory=dict)  # [tenants.cloud] declared
    seed: int = 7
    issue_delay: float = 0.2
    token_ttl: float = 7200.0
    workers: int = 1
    concurrency: int = 2
    pool: str = "prefork"  # celery --pool: prefork, threads, solo
    beat: bool = True
    api: bool = True
    # Run the API under a wrapper module (e.g. ``("-m", "bench.cprofile_threads", OUT)``).
    api_wrapper: tuple[str, ...] = ()
    callbacks: bool = True
    rate_limit_per_second: float = 10000.0
    settings: Mapping[str, str] = field(default_factory=dict)  # extra FAPIAO_* overrides
    start_timeout: float = 60.0
    python: str = sys.executable


@dataclass
class BenchStack:
    options: BenchOptions
    postgres: PgCluster
    database_url: str
    redis_url: str
    redis_process: ManagedProcess
    simulator_url: str
    api_url: str
    api_key: str
    callback_secret: str
    tenants_file: Path
    specs: list[dict[str, Any]]
    env: dict[str, str]
    processes: ProcessGroup
    workers: list[ManagedProcess] = field(default_factory=list)
    beat: ManagedProcess | None = None

    @property
    def logs(self) -> Path:
        return self.options.workdir / "logs"

    def sim(self) -> httpx.Client:
        return httpx.Client(base_url=self.simulator_url, timeout=30.0)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=120.0,
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def start_worker(self, index: int) -> ManagedProcess:
        process = self.spawn_worker(index)
        wait_for_log(process, " ready.", timeout=self.options.start_timeout)
        return process

    def spawn_worker(self, index: int) -> ManagedProcess:
        """Start worker ``index`` (replacing a dead one) without waiting for it to be ready."""
        o = self.options
        process = self.processes.start(
            f"worker{index}",
            [o.python, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO",
             f"--concurrency={o.concurrency}", f"--pool={o.pool}",
             f"--hostname=bench{index}-{secrets.token_hex(3)}@%h",
             "-Q", "push,poll,callbacks,erp,maintenance"],
            env=self.env, log_path=self.logs / f"worker{index}.log", cwd=REPO_ROOT,
        )  # fmt: skip
        if index < len(self.workers):
            self.workers[index] = process
        else:
            self.workers.append(process)
        return process

    def spawn_beat(self) -> ManagedProcess:
        """Start (or start again) beat without waiting for it to be ready."""
        o = self.options
        self.beat = self.processes.start(
            "beat",
            [o.python, "-m", "celery", "-A", "worker", "beat", "--loglevel=INFO",
             f"--schedule={o.workdir / 'celerybeat-schedule'}"],
            env=self.env, log_path=self.logs / "beat.log", cwd=REPO_ROOT,
        )  # fmt: skip
        return self.beat

    def restart_beat_if_exited(self) -> int | None:
        """Start beat again if it exited, as a supervisor would (compose: ``restart:
        unless-stopped``); its exit code, or None when it was running (or never started)."""
        if self.beat is None or self.beat.running():
            return None
        code = self.beat.popen.returncode
        self.spawn_beat()
        return code

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker's whole process group (main process and prefork children)."""
        process = self.workers[index]
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.popen.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        """Every process of every worker (main and prefork children), from /proc."""
        groups = {w.pid for w in self.workers if w.running()}
        # fields[2] is /proc's field 5: the process group id.
        return [pid for pid, fields in _proc_stats() if int(fields[2]) in groups]

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each part of the stack, from /proc.

        ``worker`` sums every worker's group (main process and prefork children, and the
        children its main process reaped: a recycled prefork child still counts); ``api``,
        ``simulator``, ``redis-server``, ``beat`` their own groups (same rule); ``postgres``
        the postmaster, its live backends and the backends it already reaped (its
        cutime/cstime), so two samples' difference counts short-lived connections too;
        ``load generator`` is this process (the harness posting documents and polling the
        database, or running an in-process baseline).
        """
        names = {p.pid: p.name for p in self.processes.processes if p.running()}
        try:
            postmaster = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = -1
        totals: dict[str, float] = {}
        ticks = float(os.sysconf("SC_CLK_TCK"))
        for pid, fields in _proc_stats():
            ppid, group = int(fields[1]), int(fields[2])
            used = int(fields[11]) + int(fields[12])
            if pid == postmaster:
                name = "postgres"
                used += int(fields[13]) + int(fields[14])  # reaped backends
            elif ppid == postmaster:
                name = "postgres"
            elif group in names:
                name = names[group]
                if name.startswith("worker"):
                    name = "worker"
                if pid == group:
                    used += int(fields[13]) + int(fields[14])  # children it reaped (recycled)
            else:
                continue
            totals[name] = totals.get(name, 0.0) + used / ticks
        own = os.times()
        totals["load generator"] = own.user + own.system
        return totals

    def flush_redis(self) -> None:
        client = self.redis()
        try:
            client.flushall()
        finally:
            client.close()

    def restart_postgres(self) -> None:
        self.postgres.restart()

    def set_faults(self, faults: Mapping[str, float], seed: int | None = None) -> None:
        body: dict[str, Any] = dict(faults)
        if seed is not None:
            body["seed"] = seed
        with self.sim() as sim:
            sim.put("/_sim/faults", json=body).raise_for_status()

    def sim_stats(self) -> dict[str, Any]:
        with self.sim() as sim:
            stats: dict[str, Any] = sim.get("/_sim/stats").json()
            return stats

    def sim_bills(self) -> list[dict[str, Any]]:
        with self.sim() as sim:
            bills: list[dict[str, Any]] = sim.get("/_sim/bills").json()
            return bills


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat.rsplit(")", 1)[1].split()


def base_env(database_url: str, redis_url: str, tenants: Path, key: str, cb: str) -> dict[str, str]:
    """The caller's environment without its FAPIAO_ settings, plus what every bridge process
    of a bench needs: database, Redis, tenants, API key, callback secret, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FAPIAO_")}
    env.update(
        {
            "FAPIAO_ENVIRONMENT": "development",
            "FAPIAO_DATABASE_URL": database_url,
            "FAPIAO_BROKER_URL": redis_url,
            "FAPIAO_REDIS_URL": redis_url,
            "FAPIAO_TENANTS_FILE": str(tenants),
            "FAPIAO_API_KEYS": key,
            "FAPIAO_CALLBACK_SECRET": cb,
            "FAPIAO_LOG_FORMAT": "console",
            "FAPIAO_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _settings_env(
    options: BenchOptions, database_url: str, redis_url: str, tenants: Path, key: str, cb: str
) -> dict[str, str]:
    env = base_env(database_url, redis_url, tenants, key, cb)
    env.update(
        {
            "FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS": "5",
            "FAPIAO_POLL__SCHEDULE_SECONDS": "2,3,5",
            "FAPIAO_POLL__CAP_SECONDS": "5",
            # Short enough to flag a failure the query hides within a chaos run's timeout.
            "FAPIAO_POLL__ISSUE_OVERDUE_SECONDS": "90",
            "FAPIAO_PUSH__BACKOFF_BASE_SECONDS": "0.2",
            "FAPIAO_PUSH__BACKOFF_CAP_SECONDS": "2",
            "FAPIAO_PUSH__MAX_ATTEMPTS": "30",
            "FAPIAO_HTTP__CONNECT_TIMEOUT_SECONDS": "2",
            "FAPIAO_HTTP__READ_TIMEOUT_SECONDS": "5",
            "FAPIAO_IN_DOUBT__MAX_QUERIES": "100",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(options.settings)
    return env


def declare_tenants_cloud(tenants_file: Path, declared: Mapping[str, str]) -> None:
    """Append a ``[tenants.cloud]`` table with ``declared`` to every tenant of the file.

    TOML puts every key after ``[tenants.cloud]`` into that table, so it closes each
    ``[[tenants]]`` block: the file's blocks are split and the table added at each one's end.
    """
    table = "[tenants.cloud]\n" + "".join(f'{k} = "{v}"\n' for k, v in declared.items())
    head, *blocks = tenants_file.read_text(encoding="utf-8").split("[[tenants]]")
    text = head + "".join(f"[[tenants]]{b.rstrip()}\n{table}\n" for b in blocks)
    tenants_file.write_text(text, encoding="utf-8")


def _start_redis(processes: ProcessGroup, workdir: Path) -> tuple[str, ManagedProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed / 未安装redis-server")
    port = free_port()
    process = processes.start(
        "redis-server",
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        env={"PATH": "/usr/bin:/bin"}, log_path=workdir / "logs" / "redis.log",
    )  # fmt: skip
    url = f"redis://{HOST}:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                return url, process
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def running_bench_stack(options: BenchOptions) -> Iterator[BenchStack]:
    """Start everything in the module table; stop everything when the block ends."""
    workdir = options.workdir
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    processes = ProcessGroup()
    with ExitStack() as exits:
        # In the system temp dir: the postgres user cannot enter a 0700 work directory.
        postgres = exits.enter_context(private_postgres())
        exits.callback(processes.stop_all)
        database_url = postgres.create_database("fapiao")
        redis_url, redis_process = _start_redis(processes, workdir)
        sim_port, api_port = free_port(), free_port()
        simulator_url, api_url = f"http://{HOST}:{sim_port}", f"http://{HOST}:{api_port}"
        specs = sim_tenant_specs()
        for spec in specs:
            spec["rate_limit_per_second"] = options.rate_limit_per_second
        tenants_file = write_tenants_toml(workdir / "tenants.toml", simulator_url, specs)
        if options.tenants_cloud:
            declare_tenants_cloud(tenants_file, options.tenants_cloud)
        api_key, callback_secret = "bench-" + secrets.token_hex(12), "cb-" + secrets.token_hex(12)
        env = _settings_env(
            options, database_url, redis_url, tenants_file, api_key, callback_secret
        )
        migrate = subprocess.run(
            [options.python, "-m", "producers.cli", "db", "upgrade"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"fapiao db upgrade failed: {migrate.stdout}{migrate.stderr}")
        sim_argv = [
            options.python, "-m", "simulator", "--host", HOST, "--port", str(sim_port),
            "--tenants-file", str(tenants_file), "--issue-delay", str(options.issue_delay),
            "--token-ttl", str(options.token_ttl), "--callback-retry-schedule", "0.5,1,2,4",
            "--callback-timeout", "5", "--seed", str(options.seed), "--log-level", "warning",
        ]  # fmt: skip
        if options.callbacks and options.api:
            sim_argv += ["--callback-url", f"{api_url}/callbacks/kingdee/{callback_secret}"]
        for name, value in options.faults.items():
            sim_argv += ["--faults", f"{name}={value}"]
        for name, reading in options.dialect.items():
            sim_argv += ["--dialect", f"{name}={reading}"]
        # Every process is started first and waited for afterwards: on a busy machine their
        # imports overlap instead of adding up.
        simulator = processes.start(
            "simulator", sim_argv, env=env, log_path=workdir / "logs" / "simulator.log",
            cwd=REPO_ROOT,
        )  # fmt: skip
        api = None
        if options.api:
            api = processes.start(
                "api",
                [options.python, *options.api_wrapper, "-m", "producers.cli", "api", "--host",
                 HOST, "--port", str(api_port), "--log-level", "warning"],
                env=env, log_path=workdir / "logs" / "api.log", cwd=REPO_ROOT,
            )  # fmt: skip
        stack = BenchStack(
            options=options,
            postgres=postgres,
            database_url=database_url,
            redis_url=redis_url,
            redis_process=redis_process,
            simulator_url=simulator_url,
            api_url=api_url,
            api_key=api_key,
            callback_secret=callback_secret,
            tenants_file=tenants_file,
            specs=specs,
            env=env,
            processes=processes,
        )
        workers = [stack.spawn_worker(index) for index in range(options.workers)]
        if options.beat:
            stack.spawn_beat()
        wait_http(f"{simulator_url}/_sim/healthz", timeout=options.start_timeout, process=simulator)
        if api is not None:
            wait_http(f"{api_url}/healthz", timeout=options.start_timeout, process=api)
        for worker in workers:
            wait_for_log(worker, " ready.", timeout=options.start_timeout)
        if stack.beat is not None:
            wait_for_log(stack.beat, "beat: Starting", timeout=options.start_timeout)
        yield stack
