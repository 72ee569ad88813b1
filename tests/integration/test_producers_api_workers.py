"""``fapiao api --workers N``: several uvicorn processes, each built from FAPIAO_* variables."""

from __future__ import annotations

import base64
import json
import os
import time
from contextlib import closing
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import (
    auth_headers,
    bill_json,
    make_bill,
    write_tenants_toml,
)
from tests.integration.processes import api_env, running_api


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
    env = {
        **os.environ,
        **api_env(database_url, redis_url, write_tenants_toml(tmp_path / "tenants.toml")),
        "FAPIAO_API_WORKERS": "2",
    }
    with (
        running_api(env, stop_timeout=15) as api,
        closing(redis.Redis.from_url(redis_url)) as client,
    ):
        process, base = api.process, api.url
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
