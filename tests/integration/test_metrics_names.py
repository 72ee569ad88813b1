"""Every metric name the alert rules and the dashboard use is one the code exports.

Exported = what the API's ``GET /metrics`` serves (a real database) plus every metric of
``worker.metrics`` (what the worker's exporter serves). A renamed metric would otherwise
leave an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import fakeredis
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from producers.http import create_app
from producers.testing import bridge_settings, build_test_components
from worker import metrics
from worker.enqueue import RecordingEnqueuer

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bfapiao_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def sample_names(families: Iterable[tuple[str, str]]) -> set[str]:
    return {name + suffix for name, kind in families for suffix in SUFFIXES.get(kind, ("",))}


def referenced() -> dict[str, set[str]]:
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    dashboard = json.loads((ROOT / "deploy/grafana/fapiao-dashboard.json").read_text("utf-8"))
    found: dict[str, set[str]] = {}
    for group in alerts["groups"]:
        for rule in group["rules"]:
            for name in NAME.findall(rule["expr"]):
                found.setdefault(name, set()).add(f"alert {rule['alert']}")
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in NAME.findall(target["expr"]):
                found.setdefault(name, set()).add(f"panel {panel['title']!r}")
    return found


@pytest.fixture
def client(database_url: str, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = bridge_settings(database_url)
    broker = fakeredis.FakeRedis()
    components = build_test_components(
        settings, session_factory, enqueuer=RecordingEnqueuer(), redis=broker, broker_redis=broker
    )
    with TestClient(create_app(settings, components=components)) as test_client:
        yield test_client


def test_alerts_and_dashboard_use_only_exported_metric_names(client: TestClient) -> None:
    api = client.get("/metrics")
    assert api.status_code == 200
    exported = sample_names((f.name, f.type) for f in text_string_to_metric_families(api.text))
    for make in metrics.ALL:
        make()
    exported |= sample_names(
        (f.name, f.type) for f in REGISTRY.collect() if f.name.startswith("fapiao_")
    )
    used = referenced()
    assert len(used) >= 15  # the rules and the dashboard really were read
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert missing == {}
