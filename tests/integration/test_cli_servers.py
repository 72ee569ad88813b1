"""fapiao api (a real uvicorn process wired from FAPIAO_* variables) and fapiao simulator."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import httpx
import redis
from typer.testing import CliRunner

from producers.cli import app
from producers.testing import (
    CALLBACK_SECRET,
    auth_headers,
    bill_json,
    callback_body,
    make_bill,
)
from schemas.kingdee import CALLBACK_ACK

ROOT = Path(__file__).resolve().parents[2]


def queued(client: redis.Redis, queue: str) -> list[tuple[str, dict[str, object]]]:
    items = []
    for raw in reversed(cast(list[bytes], client.lrange(queue, 0, -1))):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        items.append((envelope["headers"]["task"], body[1]))
    return items


def test_fapiao_api_serves_documents_and_callbacks_and_enqueues_through_celery(
    api_process: str, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        created = httpx.post(
            api_process + "/v1/documents",
            content=bill_json(make_bill("API-1")),
            headers=auth_headers(),
        )
        ack = httpx.post(
            f"{api_process}/callbacks/kingdee/{CALLBACK_SECRET}",
            content=callback_body([{"billNo": "API-1", "orderNo": "O-9", "invoiceNum": "1" * 20}]),
        )
        unauthorised = httpx.post(api_process + "/v1/documents", content=b"{}")
        docs = httpx.get(api_process + "/docs")

        assert created.status_code == 202, created.text
        assert ack.status_code == 200 and ack.json() == CALLBACK_ACK
        assert unauthorised.status_code == 401
        assert docs.status_code == 200
        # Background tasks run after the responses; other suites may share Redis db 15, so
        # look only at this test's messages.
        document_id = created.json()["document_id"]

        def ours() -> tuple[
            list[tuple[str, dict[str, object]]], list[tuple[str, dict[str, object]]]
        ]:
            pushes = [m for m in queued(client, "push") if m[1].get("bill_no") == "API-1"]
            reconciles = [
                m
                for m in queued(client, "callbacks")
                if m[0] == "fapiao.reconcile" and m[1].get("bill_no") == "API-1"
            ]
            return pushes, reconciles

        deadline = time.monotonic() + 10
        while not all(ours()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pushes, reconciles = ours()
        assert pushes == [
            ("fapiao.push", {"document_id": document_id, "bill_no": "API-1", "tenant": "demo"})
        ]
        # Ids plus labels only: never the callback body.
        assert [set(kwargs) for _, kwargs in reconciles] == [{"inbox_id", "bill_no", "tenant"}]
        assert reconciles[0][1]["tenant"] == "demo"
    finally:
        client.close()


def test_fapiao_simulator_passes_its_own_options_through() -> None:
    result = CliRunner().invoke(app, ["simulator", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "--callback-url" in result.output and "--issue-delay" in result.output
    assert "fapiao simulator" in result.output


def test_importing_the_cli_builds_and_imports_nothing_heavy() -> None:
    probe = (
        "import sys, producers.cli, producers.http;"
        "loaded = {m.split('.')[0] for m in sys.modules};"
        "heavy = sorted(loaded & {'simulator', 'worker', 'celery', 'uvicorn'});"
        "print(heavy)"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert output == "[]"
