"""``fapiao api --workers 2``: every scrape of /metrics reports the counters of both processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import (
    API_KEY,
    CALLBACK_SECRET,
    auth_headers,
    bill_json,
    make_bill,
    write_tenants_toml,
)
from worker.metrics import OWN_DIR_PREFIX

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def created(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text  # a new connection each time
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "fapiao_documents_submitted_total"
                and sample.labels.get("outcome") == "created"
            ):
                return sample.value
    return 0.0


def test_two_api_processes_serve_the_same_counters(
    database_url: str, redis_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    port = free_port()
    parent = tmp_path / "metrics"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        FAPIAO_DATABASE_URL=database_url,
        FAPIAO_REDIS_URL=redis_url,
        FAPIAO_BROKER_URL=redis_url,
        FAPIAO_TENANTS_FILE=str(write_tenants_toml(tmp_path / "tenants.toml")),
        FAPIAO_ENVIRONMENT="test",
        FAPIAO_API_KEYS=API_KEY,
        FAPIAO_CALLBACK_SECRET=CALLBACK_SECRET,
        FAPIAO_METRICS__MULTIPROC_DIR=str(parent),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "api", "--port", str(port), "--workers", "2",
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"fapiao api --workers 2 did not become healthy:\n{output}")
            time.sleep(0.1)
        for number in range(DOCUMENTS):  # one connection each: the kernel spreads them
            response = httpx.post(
                base + "/v1/documents",
                content=bill_json(make_bill(f"MW-{number}")),
                headers=auth_headers(),
                timeout=30,
            )
            assert response.status_code == 202, response.text
        (directory,) = list(parent.iterdir())
        assert directory.name.startswith(OWN_DIR_PREFIX)
        # Both processes write their own files there (their callback counters exist at start).
        deadline = time.monotonic() + 30
        while len(list(directory.glob("counter_*.db"))) < 2 and time.monotonic() < deadline:
            httpx.get(base + "/healthz", timeout=5)
            time.sleep(0.1)
        assert len(list(directory.glob("counter_*.db"))) >= 2
        assert [created(base) for _ in range(12)] == [float(DOCUMENTS)] * 12
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert list(parent.iterdir()) == []  # removed when the command ended
