"""GET /healthz and GET /metrics on a real database (Redis faked or unreachable)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from producers.health import redis_client
from producers.http import create_app
from producers.testing import (
    auth_headers,
    bill_json,
    bridge_settings,
    build_test_components,
    callback_body,
    make_bill,
)
from store.claims import claim_for_push
from store.columns import utcnow
from store.lifecycle import transition
from store.models import CloudCall, Document, ErpOutbox
from store.states import Event
from store.tenants import pause_tenant
from worker.enqueue import RecordingEnqueuer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def scrape(client: TestClient) -> dict[str, float]:
    """Every sample of /metrics as {'name{labels}': value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


@pytest.fixture
def broker() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def client(
    database_url: str, session_factory: sessionmaker[Session], broker: fakeredis.FakeRedis
) -> Iterator[TestClient]:
    settings = bridge_settings(database_url)
    components = build_test_components(
        settings, session_factory, enqueuer=RecordingEnqueuer(), redis=broker, broker_redis=broker
    )
    with TestClient(create_app(settings, components=components)) as test_client:
        yield test_client


def test_healthz_is_200_with_details_when_everything_answers(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert "schema at" in body["checks"]["database"]["detail"]
    assert (body["checks"]["redis"]["ok"], body["checks"]["redis"]["detail"]) == (True, "PONG")


def test_healthz_is_503_naming_what_is_down(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    from store.db import make_engine, make_session_factory

    settings = bridge_settings(database_url)
    dead_redis = redis_client("redis://127.0.0.1:9/0")
    dead_db = make_session_factory(
        make_engine(
            "postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
        )
    )
    only_redis_down = create_app(
        settings, components=build_test_components(settings, session_factory, redis=dead_redis)
    )
    both_down = create_app(
        settings, components=build_test_components(settings, dead_db, redis=dead_redis)
    )

    with TestClient(only_redis_down) as first, TestClient(both_down) as second:
        redis_down = first.get("/healthz")
        all_down = second.get("/healthz")

    assert redis_down.status_code == 503
    checks = redis_down.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["redis"]["ok"] is False and "Redis" in checks["redis"]["hint"]
    assert all_down.status_code == 503
    assert all_down.json()["checks"]["database"]["ok"] is False
    assert "FAPIAO_DATABASE_URL" in all_down.json()["checks"]["database"]["hint"]


def test_metrics_report_documents_by_state_and_tenant_with_the_oldest_age(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    for bill_no in ("M-1", "M-2"):
        assert client.post(
            "/v1/documents", content=bill_json(make_bill(bill_no)), headers=auth_headers()
        )
    with session_factory() as session:
        first = session.query(Document).filter_by(bill_no="M-1").one()
        claim_for_push(session, first.id, lease_seconds=60)
        transition(
            session,
            first.id,
            Event.give_up,
            actor="test",
            now=utcnow() - timedelta(hours=2),
        )
        session.commit()

    samples = scrape(client)

    assert samples['fapiao_documents{state="draft",tenant="demo"}'] == 1
    assert samples['fapiao_documents{state="failed",tenant="demo"}'] == 1
    assert samples['fapiao_documents{state="invoiced",tenant="shop"}'] == 0
    failed_age = samples['fapiao_documents_oldest_age_seconds{state="failed",tenant="demo"}']
    assert failed_age >= 7200
    assert 'fapiao_documents_oldest_age_seconds{state="invoiced",tenant="demo"}' not in samples
    assert samples['fapiao_documents_submitted_total{outcome="created"}'] == 2
    assert samples['fapiao_metrics_source_up{source="database"}'] == 1


def test_metrics_count_cloud_calls_and_token_refreshes_from_the_ledger(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        for interface, outcome in [
            ("getAppToken", "accepted"),
            ("login", "accepted"),
            ("login", "accepted"),
            ("login", "config_error"),
            ("BILL.PUSH", "accepted"),
            ("BILL.PUSH", "unknown_outcome"),
            ("BILL.PUSH", "accepted"),
        ]:
            session.add(CloudCall(tenant="demo", interface=interface, outcome=outcome))
        session.commit()

    samples = scrape(client)

    assert (
        samples['fapiao_cloud_calls_recorded_total{interface="BILL.PUSH",outcome="accepted"}'] == 2
    )
    assert (
        samples[
            'fapiao_cloud_calls_recorded_total{interface="BILL.PUSH",outcome="unknown_outcome"}'
        ]
        == 1
    )
    assert samples['fapiao_token_refreshes_recorded_total{tenant="demo"}'] == 2


def test_metrics_report_callbacks_paused_tenants_parked_notifications_and_queues(
    client: TestClient, session_factory: sessionmaker[Session], broker: fakeredis.FakeRedis
) -> None:
    secret = "cb-secret-8d3e41f0a2c6"
    item = {"billNo": "NOBODY", "orderNo": "O-1", "invoiceNum": "25330000000000000099"}
    body = callback_body([item])
    client.post(f"/callbacks/kingdee/{secret}", content=body)
    client.post(f"/callbacks/kingdee/{secret}", content=body)
    document_id = client.post(
        "/v1/documents", content=bill_json(make_bill("M-3")), headers=auth_headers()
    ).json()["document_id"]
    with session_factory() as session:
        pause_tenant(session, "shop", "login refused")
        session.add(
            ErpOutbox(document_id=document_id, event="document.failed", payload={}, state="parked")
        )
        session.commit()
    broker.rpush("push", b"m1", b"m2", b"m3")
    broker.rpush("callbacks", b"m1")

    samples = scrape(client)

    assert samples['fapiao_callbacks_received_total{result="stored"}'] == 1
    assert samples['fapiao_callbacks_received_total{result="duplicate"}'] == 1
    assert samples['fapiao_callbacks_received_total{result="orphan"}'] == 1
    assert samples['fapiao_callback_inbox{state="received"}'] == 1
    assert samples['fapiao_tenant_paused{tenant="shop"}'] == 1
    assert samples['fapiao_tenant_paused{tenant="demo"}'] == 0
    assert samples['fapiao_erp_outbox{state="parked"}'] == 1
    assert samples['fapiao_queue_depth{queue="push"}'] == 3
    assert samples['fapiao_queue_depth{queue="callbacks"}'] == 1
    assert samples['fapiao_queue_depth{queue="poll"}'] == 0
    assert samples['fapiao_metrics_source_up{source="redis"}'] == 1


def test_metrics_still_answer_when_the_database_is_down(database_url: str) -> None:
    from store.db import make_engine, make_session_factory

    settings = bridge_settings(database_url)
    dead = make_session_factory(
        make_engine(
            "postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
        )
    )
    app = create_app(settings, components=build_test_components(settings, dead))
    with TestClient(app) as test_client:
        samples = scrape(test_client)

    assert samples['fapiao_metrics_source_up{source="database"}'] == 0
    assert not any(key.startswith("fapiao_documents{") for key in samples)


def test_each_app_has_its_own_registry(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = bridge_settings(database_url)
    first = TestClient(
        create_app(settings, components=build_test_components(settings, session_factory))
    )
    second = TestClient(
        create_app(settings, components=build_test_components(settings, session_factory))
    )

    first.post("/v1/documents", content=bill_json(make_bill("M-4")), headers=auth_headers())

    assert scrape(first)['fapiao_documents_submitted_total{outcome="created"}'] == 1
    assert 'fapiao_documents_submitted_total{outcome="created"}' not in scrape(second)
