"""``fapiao api --workers N``: several uvicorn processes, each built from FAPIAO_* variables."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import (
    API_KEY,
    CALLBACK_SECRET,
    auth_headers,
    bill_json,
    make_bill,
    write_tenants_toml,
)

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[str]:
    """Command lines of the live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker processes")
def test_two_api_workers_serve_a_batch_and_enqueue_its_pushes(
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "FAPIAO_DATABASE_URL": database_url,
        "FAPIAO_REDIS_URL": redis_url,
        "FAPIAO_BROKER_URL": redis_url,
        "FAPIAO_TENANTS_FILE": str(write_tenants_toml(tmp_path / "tenants.toml")),
        "FAPIAO_ENVIRONMENT": "test",
        "FAPIAO_API_KEYS": API_KEY,
        "FAPIAO_CALLBACK_SECRET": CALLBACK_SECRET,
        "FAPIAO_API_WORKERS": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "api", "--port", str(port), "--log-level",
         "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_url)
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
        workers = [c for c in _children(process.pid) if "multiprocessing" in c]
        assert len(workers) >= 2, _children(process.pid)

        response = httpx.post(
            base + "/v1/documents",
            content=bill_json([make_bill("WRK-1"), make_bill("WRK-2"), {"billNo": "WRK-X"}]),
            headers=auth_headers(),
            timeout=30,
        )
        assert response.status_code == 207, response.text
        items = response.json()["results"]
        assert [item["outcome"] for item in items] == ["created", "created", "invalid"]

        def pushes() -> list[dict[str, object]]:
            found = []
            for raw in cast(list[bytes], client.lrange("push", 0, -1)):
                body = json.loads(base64.b64decode(json.loads(raw)["body"]))
                labels = body[1].get("bill_no") or ",".join(body[1].get("bill_nos", []))
                if str(labels).startswith("WRK-"):
                    found.append(body[1])
            return found

        deadline = time.monotonic() + 10
        while not pushes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pushes() == [  # one fapiao.push_batch message owes both pushes
            {
                "document_ids": [items[0]["document_id"], items[1]["document_id"]],
                "bill_nos": ["WRK-1", "WRK-2"],
                "tenants": ["demo", "demo"],
            }
        ]
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
