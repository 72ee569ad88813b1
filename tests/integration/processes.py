"""Starting ``fapiao api`` as a real process for the integration tests (not a test module).

``api_env`` gives the FAPIAO_* variables such a process needs; ``running_api`` starts it on a
free loopback port, waits until GET /healthz answers 200 and stops it (SIGTERM, then SIGKILL)
when the ``with`` block ends. The ``api_process`` fixture (tests/integration/conftest.py) is
the common case.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from demo.processes import free_port
from producers.testing import API_KEY, CALLBACK_SECRET

__all__ = ["RunningApi", "api_env", "free_port", "running_api"]

ROOT = Path(__file__).resolve().parents[2]


def api_env(database_url: str, redis_url: str, tenants_file: Path) -> dict[str, str]:
    """The FAPIAO_* variables of a test ``fapiao api``: the test database and Redis (also the
    broker), ``tenants_file``, the test API key and callback secret."""
    return {
        "FAPIAO_DATABASE_URL": database_url,
        "FAPIAO_REDIS_URL": redis_url,
        "FAPIAO_BROKER_URL": redis_url,
        "FAPIAO_TENANTS_FILE": str(tenants_file),
        "FAPIAO_ENVIRONMENT": "test",
        "FAPIAO_API_KEYS": API_KEY,
        "FAPIAO_CALLBACK_SECRET": CALLBACK_SECRET,
    }


@dataclass(frozen=True)
class RunningApi:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen[bytes]


@contextmanager
def running_api(
    env: Mapping[str, str], *args: str, timeout: float = 60.0, stop_timeout: float = 20.0
) -> Iterator[RunningApi]:
    """``fapiao api --port <free> --log-level warning <args>`` with exactly ``env``, healthy.

    Fails the test with the process's output if it exits or is not healthy in ``timeout``.
    """
    port = free_port()
    command = [sys.executable, "-m", "producers.cli", "api", "--port", str(port),
               "--log-level", "warning", *args]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:  # reading the output of a live process would block
                    process.kill()
                    process.wait()
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"fapiao api {' '.join(args)} did not become healthy:\n{output}")
            time.sleep(0.1)
        yield RunningApi(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
