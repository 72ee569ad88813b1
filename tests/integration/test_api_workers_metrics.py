"""``fapiao api --workers 2``: every scrape of /metrics reports the counters of both processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import (
    auth_headers,
    bill_json,
    make_bill,
    write_tenants_toml,
)
from tests.integration.processes import api_env, running_api
from worker.metrics import OWN_DIR_PREFIX

DOCUMENTS = 8


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
    parent = tmp_path / "metrics"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        api_env(database_url, redis_url, write_tenants_toml(tmp_path / "tenants.toml")),
        FAPIAO_METRICS__MULTIPROC_DIR=str(parent),
    )
    with running_api(env, "--workers", "2") as api:
        base = api.url
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
    assert list(parent.iterdir()) == []  # removed when the command ended
