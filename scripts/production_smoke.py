"""Smoke run of a production install: every process started from it, one document invoiced.

Run with the interpreter of an environment built like the Dockerfile's
(``scripts/build-production-env.sh DIR``: no dev dependencies, the project as a wheel):

    DIR/bin/python scripts/production_smoke.py          (``make test-production`` does both)

Every process is started from ``DIR/bin`` in a scratch working directory outside the source
tree, so nothing is imported from the checkout (``celery -A worker`` puts the working directory
on ``sys.path``): a module the install lacks fails here exactly as it would in the image.

| process | command | ready when |
|---|---|---|
| simulator | ``fapiao simulator`` | ``/_sim/healthz`` |
| migrate | ``fapiao db upgrade`` (without API keys: only the API needs them) | exit 0 |
| api | ``fapiao api`` | ``/healthz`` 200 |
| worker | ``celery -A worker worker`` | its log says ``ready.`` |
| beat | ``celery -A worker beat`` | its log says ``beat: Starting`` |
| flower | ``celery -A worker flower --basic-auth=…`` | ``/healthcheck`` |

Then one sample document goes in over HTTP with ``FAPIAO_ENVIRONMENT=production`` and real
(non-placeholder) secrets, and must reach ``invoiced``; Flower must list its tasks under its
bill number, and the worker's exporter must show the BILL.PUSH call in its counters.

Environment: ``FAPIAO_SMOKE_DATABASE_URL`` (a PostgreSQL server URL: a fresh database is
created and dropped; unset → an SQLite file), ``FAPIAO_SMOKE_REDIS_URL`` (default
``redis://127.0.0.1:6379/13``, flushed before and after). Exit 0 on success, 1 with the
failing step and every process's log tail otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from worker.flower import flower_options  # from the installed wheel, like every process here

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "demo" / "samples" / "08xdp-digital-special.json"
HOST = "127.0.0.1"
TIMEOUT = float(os.environ.get("FAPIAO_SMOKE_TIMEOUT", "120"))


class SmokeFailure(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Children in their own sessions, stopped together (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, bin_dir: Path, workdir: Path, env: dict[str, str]) -> None:
        self.bin_dir, self.workdir, self.env = bin_dir, workdir, env
        self.children: list[tuple[str, subprocess.Popen[bytes], Path, IO[bytes]]] = []

    def run(self, name: str, *argv: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            code = subprocess.call(
                [str(self.bin_dir / argv[0]), *argv[1:]],
                cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=120,
            )  # fmt: skip
        if code != 0:
            raise SmokeFailure(f"{name} exited {code}:\n{tail(log)}")

    def start(
        self, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            cwd=self.workdir, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.children.append((name, popen, log, out))
        return popen

    def check_alive(self) -> None:
        for name, popen, log, _ in self.children:
            if popen.poll() is not None:
                raise SmokeFailure(f"{name} exited {popen.returncode}:\n{tail(log)}")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for _, popen, _, _ in reversed(self.children):
            if popen.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, popen, _, out in reversed(self.children):
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
            out.close()

    def tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{tail(log)}" for name, _, log, _ in self.children)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def wait_until(what: str, check: Callable[[], Any], procs: Processes, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            value = check()
        except (httpx.HTTPError, OSError) as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(0.25)
    raise SmokeFailure(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@contextmanager
def fresh_database() -> Iterator[str]:
    server = os.environ.get("FAPIAO_SMOKE_DATABASE_URL", "").strip()
    if not server.startswith("postgresql"):
        with tempfile.TemporaryDirectory(prefix="fapiao-smoke-db-") as directory:
            yield f"sqlite:///{directory}/fapiao.db"
        return
    name = f"fapiao_smoke_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def tenants_toml(simulator_url: str, seller_tax_id: str) -> str:
    return f"""\
[[tenants]]
name = "smoke"
base_url = "{simulator_url}/smoke"
app_id = "fapiao-bridge-smoke"
app_secret = "{secrets.token_hex(16)}"
account_id = "1900000000000000099"
user = "fapiao-bridge"
usertype = "UserName"
business_system_code = "3std1SMOKEERP"
seller_tax_ids = ["{seller_tax_id}"]
auto_invoice = true
rate_limit_per_second = 20.0
"""


def main() -> int:
    bin_dir = Path(sys.executable).parent
    redis_url = os.environ.get("FAPIAO_SMOKE_REDIS_URL", "redis://127.0.0.1:6379/13")
    document = json.loads(SAMPLE.read_text(encoding="utf-8"))
    bill_no = f"SMOKE-{uuid.uuid4().hex[:10].upper()}"
    document["billNo"] = bill_no
    started = time.monotonic()

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-smoke-"))
    try:
        with fresh_database() as database_url:
            return run(bin_dir, workdir, database_url, redis_url, document, bill_no, started)
    finally:
        r.flushdb()
        r.close()
        if os.environ.get("FAPIAO_SMOKE_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


def run(
    bin_dir: Path,
    workdir: Path,
    database_url: str,
    redis_url: str,
    document: dict[str, Any],
    bill_no: str,
    started: float,
) -> int:
    sim_port, api_port, flower_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    simulator_url, api_url = f"http://{HOST}:{sim_port}", f"http://{HOST}:{api_port}"
    flower_url = f"http://{HOST}:{flower_port}"
    api_key, callback_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    flower_auth = ("smoke", secrets.token_urlsafe(12))
    tenants = workdir / "tenants.toml"
    tenants.write_text(tenants_toml(simulator_url, document["sellerTaxpayerId"]), "utf-8")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FAPIAO_")}
    base_env.pop("PYTHONPATH", None)
    env = {
        **base_env,
        "FAPIAO_ENVIRONMENT": "production",
        "FAPIAO_DATABASE_URL": database_url,
        "FAPIAO_BROKER_URL": redis_url,
        "FAPIAO_REDIS_URL": redis_url,
        "FAPIAO_TENANTS_FILE": str(tenants),
        "FAPIAO_LOG_FORMAT": "json",
        "FAPIAO_METRICS__WORKER_PORT": str(metrics_port),
        "FAPIAO_METRICS__HOST": HOST,
    }
    api_env = {**env, "FAPIAO_API_KEYS": api_key, "FAPIAO_CALLBACK_SECRET": callback_secret}
    procs = Processes(bin_dir, workdir, env)
    step = "start"
    try:
        step = "fapiao db upgrade (no API keys set)"
        procs.run("migrate", "fapiao", "db", "upgrade")
        step = "start the simulator, api, flower, worker and beat"
        procs.start(
            "simulator", "fapiao", "simulator", "--host", HOST, "--port", str(sim_port),
            "--tenants-file", str(tenants), "--issue-delay", "0.5",
            "--callback-url", f"{api_url}/callbacks/kingdee/{callback_secret}",
        )  # fmt: skip
        # Only the HTTP API needs the API keys and the callback secret.
        procs.start("api", "fapiao", "api", "--host", HOST, "--port", str(api_port), env=api_env)
        procs.start(
            "flower", "celery", "-A", "worker", "flower", f"--address={HOST}",
            f"--port={flower_port}", f"--basic-auth={flower_auth[0]}:{flower_auth[1]}",
            *flower_options(db=workdir / "flower.db"),
        )  # fmt: skip
        procs.start(
            "worker", "celery", "-A", "worker", "worker", "--loglevel=INFO", "--concurrency=2",
            "-n", "smoke@%h",
        )  # fmt: skip
        procs.start("beat", "celery", "-A", "worker", "beat", "--loglevel=INFO")
        client = httpx.Client(timeout=5.0)
        wait_until(
            "the simulator",
            lambda: client.get(f"{simulator_url}/_sim/healthz").is_success,
            procs,
            TIMEOUT,
        )
        wait_until(
            "the API's /healthz",
            lambda: client.get(f"{api_url}/healthz").status_code == 200,
            procs,
            TIMEOUT,
        )
        wait_until(
            "Flower", lambda: client.get(f"{flower_url}/healthcheck").is_success, procs, TIMEOUT
        )
        wait_until("the worker", lambda: " ready." in procs.log("worker"), procs, TIMEOUT)
        wait_until("beat", lambda: "beat: Starting" in procs.log("beat"), procs, TIMEOUT)

        step = "POST /v1/documents"
        headers = {"Authorization": f"Bearer {api_key}"}
        answer = client.post(f"{api_url}/v1/documents", json=document, headers=headers)
        if answer.status_code != 202:
            raise SmokeFailure(f"submit answered {answer.status_code}: {answer.text}")

        step = "the document reaches invoiced"

        def invoiced() -> dict[str, Any] | None:
            view: dict[str, Any] = client.get(
                f"{api_url}/v1/documents/{bill_no}", headers=headers
            ).json()
            return view if view.get("status") == "invoiced" else None

        view = wait_until(f"{bill_no} to be invoiced", invoiced, procs, TIMEOUT)

        step = "Flower lists the document's tasks under its bill number"

        def flower_tasks() -> list[str]:
            tasks = client.get(f"{flower_url}/api/tasks", auth=flower_auth).json()
            return [
                str(task.get("name"))
                for task in tasks.values()
                if bill_no in json.dumps(task.get("kwargs"), ensure_ascii=False)
                or bill_no in str(task.get("kwargs"))
            ]

        names = wait_until("Flower's task list", flower_tasks, procs, 30)

        step = "the worker's metrics exporter counts the cloud calls"

        def worker_counters() -> list[str]:
            text = client.get(f"http://{HOST}:{metrics_port}/metrics").text
            return [
                line
                for line in text.splitlines()
                if line.startswith("fapiao_cloud_calls_total{")
                and 'interface="BILL.PUSH"' in line
                and float(line.rsplit(" ", 1)[1]) >= 1
            ]

        counters = wait_until("the worker's metrics", worker_counters, procs, 30)

        print(
            f"production smoke: OK in {time.monotonic() - started:.1f} s —"
            f" {bill_no} invoiced ({len(view.get('invoices', []))} invoice(s));"
            f" Flower shows {sorted(set(names))} for it; worker scrape: {counters[0]};"
            f" processes started from {bin_dir}"
        )
        return 0
    except (SmokeFailure, httpx.HTTPError, subprocess.SubprocessError) as exc:
        print(f"production smoke: FAILED at step: {step}\n{exc}", file=sys.stderr)
        print(procs.tails(), file=sys.stderr)
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
