"""Parked ERP notifications (list, resend), tenants (list with token health, pause, resume),
the overview, and a planned action meeting a document that changed meanwhile."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producers.bootstrap import Components
from producers.http import create_app
from producers.operations import DocumentFilter, plan, run_planned
from producers.testing import auth_headers, bridge_settings, build_test_components, run_cli
from store.columns import utcnow
from store.lifecycle import transition
from store.models import Document, ErpOutbox, OperatorAudit, TenantState
from store.outbox import add_notification, mark_attempt_failed, mark_delivered
from store.queries import due_outbox
from store.states import Event
from worker.enqueue import RecordingEnqueuer
from worker.tokens import KEY_PREFIX

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H = auth_headers()
MakeDocument = Callable[..., Document]


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def components(
    database_url: str, session_factory: sessionmaker[Session], real_redis: redis.Redis
) -> Components:
    settings = bridge_settings(database_url)
    return build_test_components(
        settings, session_factory, enqueuer=RecordingEnqueuer(), redis=real_redis
    )


@pytest.fixture
def client(components: Components) -> Iterator[TestClient]:
    with TestClient(create_app(components.settings, components=components)) as test_client:
        yield test_client


def audits(sessions: sessionmaker[Session]) -> list[OperatorAudit]:
    with sessions() as session:
        return list(session.scalars(select(OperatorAudit).order_by(OperatorAudit.id)))


# ------------------------------------------------------------------ notifications


@pytest.fixture
def outbox(make_document: MakeDocument, session_factory: sessionmaker[Session]) -> dict[str, int]:
    demo = make_document(status="invoiced", tenant="demo", bill_no="N-1")
    shop = make_document(status="rejected", tenant="shop", bill_no="N-2")
    ids: dict[str, int] = {}
    with session_factory() as session:
        for name, document, event in (
            ("parked_demo", demo, "document.invoiced"),
            ("parked_shop", shop, "document.rejected"),
            ("pending", demo, "document.pushed"),
            ("delivered", shop, "document.pushed"),
        ):
            ids[name] = add_notification(
                session, document_id=document.id, event=event, payload={"billNo": "x"}
            ).id
        for name in ("parked_demo", "parked_shop"):
            mark_attempt_failed(session, ids[name], "HTTP 502: bad gateway", retry_at=None)
        mark_delivered(session, ids["delivered"])
        session.commit()
    return ids


def test_parked_notifications_are_listed_with_their_bill(
    client: TestClient, outbox: dict[str, int]
) -> None:
    default = client.get("/v1/notifications", headers=H).json()
    shop = client.get("/v1/notifications", params={"tenant": "shop"}, headers=H).json()
    every = client.get("/v1/notifications", params={"state": "all", "limit": 3}, headers=H).json()

    assert [item["id"] for item in default["items"]] == [
        outbox["parked_demo"],
        outbox["parked_shop"],
    ]
    first = default["items"][0]
    assert (first["bill_no"], first["tenant"], first["event"]) == (
        "N-1",
        "demo",
        "document.invoiced",
    )
    assert (first["state"], first["attempts"], first["last_error"]) == (
        "parked",
        1,
        "HTTP 502: bad gateway",
    )
    assert first["created_at"] and first["updated_at"]
    assert [item["bill_no"] for item in shop["items"]] == ["N-2"]
    assert len(every["items"]) == 3 and every["next_cursor"] is not None
    rest = client.get(
        "/v1/notifications", params={"state": "all", "cursor": every["next_cursor"]}, headers=H
    ).json()
    assert [item["id"] for item in rest["items"]] == [outbox["delivered"]]
    assert rest["next_cursor"] is None


def test_a_bad_notification_state_is_400(client: TestClient) -> None:
    response = client.get("/v1/notifications", params={"state": "lost"}, headers=H)

    assert response.status_code == 400
    assert response.json()["field"] == "state"
    assert response.json()["allowed"] == ["pending", "delivered", "parked"]


def test_resend_puts_parked_notifications_back_for_the_sweeper_and_audits_it(
    client: TestClient, outbox: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    ids = [outbox["parked_demo"], outbox["pending"], outbox["delivered"], 999_999]

    response = client.post(
        "/v1/notifications/resend", json={"ids": ids, "reason": "ERP endpoint fixed"}, headers=H
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert [(item["id"], item["outcome"]) for item in answer["notifications"]] == [
        (outbox["parked_demo"], "requeued"),
        (outbox["pending"], "already_pending"),
        (outbox["delivered"], "delivered"),
        (999_999, "not_found"),
    ]
    assert answer["count"] == 1
    with session_factory() as session:
        row = session.get(ErpOutbox, outbox["parked_demo"])
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
        assert session.get(ErpOutbox, outbox["parked_shop"]).state == "parked"  # type: ignore[union-attr]
        assert session.get(ErpOutbox, outbox["delivered"]).state == "delivered"  # type: ignore[union-attr]
        # Due now: the sweeper's next pass hands it to fapiao.notify_erp.
        due = {item.id for item in due_outbox(session, utcnow(), 10)}
        assert outbox["parked_demo"] in due
        session.rollback()
    (audit,) = audits(session_factory)
    assert (audit.actor, audit.action, audit.reason, audit.count, audit.id) == (
        "api:key1", "notifications.resend", "ERP endpoint fixed", 1, answer["audit_id"],
    )  # fmt: skip
    assert audit.filter == {"ids": ids}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"ids": [], "reason": "x"}, "ids"),
        ({"ids": [1]}, "reason"),
        ({"ids": ["a"], "reason": "x"}, "ids"),
    ],
)
def test_a_bad_resend_is_400(client: TestClient, body: dict[str, Any], named: str) -> None:
    response = client.post("/v1/notifications/resend", json=body, headers=H)

    assert response.status_code == 400
    assert named in response.json()["error"]["message"]


def test_the_cli_lists_and_resends_notifications_too(
    components: Components, outbox: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    listed = run_cli(components, "notifications", "list", "--json")
    resent = run_cli(
        components, "notifications", "resend", str(outbox["parked_shop"]), "--reason", "retry"
    )

    assert listed.exit_code == 0, listed.output
    assert [item["bill_no"] for item in json.loads(listed.output)] == ["N-1", "N-2"]
    assert resent.exit_code == 0, resent.output
    assert "requeued" in resent.output
    assert [(a.action, a.count) for a in audits(session_factory)] == [("notifications.resend", 1)]


# ------------------------------------------------------------------ tenants


def _cache_token(client: redis.Redis, tenant: str, expires_in_s: float) -> None:
    now_ms = int(utcnow().timestamp() * 1000)
    client.hset(
        KEY_PREFIX + tenant,
        mapping={
            "token": "t",
            "expires_ms": now_ms + int(expires_in_s * 1000),
            "issued_ms": now_ms,
        },
    )


def test_tenants_show_pause_state_and_token_health(
    client: TestClient, real_redis: redis.Redis, session_factory: sessionmaker[Session]
) -> None:
    _cache_token(real_redis, "demo", 7200)  # fresh, beyond the 600 s refresh margin
    _cache_token(real_redis, "shop", -5)  # expired (its key would normally be gone)

    tenants = {row["name"]: row for row in client.get("/v1/tenants", headers=H).json()}
    real_redis.hset(KEY_PREFIX + "demo", "expires_ms", int(utcnow().timestamp() * 1000) + 60_000)
    real_redis.delete(KEY_PREFIX + "shop")
    later = {row["name"]: row for row in client.get("/v1/tenants", headers=H).json()}

    assert set(tenants) == {"demo", "shop"}
    demo = tenants["demo"]
    assert {"name", "paused", "paused_reason", "paused_at", "token_health",
            "rate_limit_per_second", "quota"} <= set(demo)  # fmt: skip
    assert (demo["paused"], demo["paused_reason"], demo["quota"]) == (False, None, None)
    assert demo["rate_limit_per_second"] == 5.0
    assert (tenants["demo"]["token_health"], tenants["shop"]["token_health"]) == ("ok", "expired")
    assert (later["demo"]["token_health"], later["shop"]["token_health"]) == ("expiring", "absent")


def test_token_health_is_unknown_when_redis_does_not_answer(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = bridge_settings(database_url)
    dead = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    components = build_test_components(settings, session_factory, redis=dead)

    with TestClient(create_app(settings, components=components)) as client:
        rows = client.get("/v1/tenants", headers=H).json()

    assert {row["token_health"] for row in rows} == {"unknown"}


def test_pause_and_resume_answer_the_tenant_and_are_audited(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    paused = client.post("/v1/tenants/shop/pause", json={"reason": "税控盘维护"}, headers=H)
    listed = {row["name"]: row for row in client.get("/v1/tenants", headers=H).json()}
    resumed = client.post("/v1/tenants/shop/resume", json={"reason": "done"}, headers=H)

    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert paused.json()["paused_reason"] == "税控盘维护 (api:key1)"
    assert paused.json()["paused_at"] is not None
    assert listed["shop"]["paused"] is True and listed["demo"]["paused"] is False
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    with session_factory() as session:
        state = session.get(TenantState, "shop")
        assert state is not None and state.paused is False
    assert [(a.actor, a.action, a.reason, a.filter) for a in audits(session_factory)] == [
        ("api:key1", "tenant.pause", "税控盘维护", {"tenant": "shop"}),
        ("api:key1", "tenant.resume", "done", {"tenant": "shop"}),
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/tenants/nobody/pause", {"reason": "x"}, 404, "unknown_tenant"),
        ("/v1/tenants/nobody/resume", {"reason": "x"}, 404, "unknown_tenant"),
        ("/v1/tenants/shop/pause", {}, 400, "bad_request"),
        ("/v1/tenants/shop/pause", {"reason": ""}, 400, "bad_request"),
    ],
)
def test_tenant_actions_refuse_unknown_tenants_and_missing_reasons(
    client: TestClient,
    session_factory: sessionmaker[Session],
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = client.post(path, json=body, headers=H)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert audits(session_factory) == []


# ------------------------------------------------------------------ overview


def test_the_overview_counts_states_and_what_needs_a_person(
    client: TestClient,
    make_document: MakeDocument,
    outbox: dict[str, int],
    session_factory: sessionmaker[Session],
) -> None:
    old = utcnow() - timedelta(days=2)
    make_document(status="pushed", tenant="demo", bill_no="O-1", status_changed_at=old)
    make_document(status="pushed", tenant="demo", bill_no="O-2")
    make_document(status="failed", tenant="shop", bill_no="O-3")
    make_document(status="invoice_failed", tenant="demo", bill_no="O-4", status_changed_at=old)
    client.post("/v1/tenants/shop/pause", json={"reason": "x"}, headers=H)

    answer = client.get("/v1/overview", headers=H).json()

    cells = {(c["status"], c["tenant"]): c for c in answer["states"]}
    assert cells[("pushed", "demo")]["count"] == 2
    assert cells[("pushed", "demo")]["stuck_count"] == 1
    assert cells[("pushed", "demo")]["oldest_age_seconds"] >= 2 * 86400 - 60
    assert cells[("rejected", "shop")]["count"] == 1  # N-2 of the outbox fixture
    assert all(c["count"] > 0 for c in answer["states"])
    assert answer["attention"] == {
        "stuck": 2,  # pushed and invoice_failed for two days (alerts at one day)
        "failed": 1,
        "rejected": 1,
        "in_doubt": 0,
        "invoice_failed": 1,
        "paused_tenants": ["shop"],
        "parked_notifications": 2,
    }


# ------------------------------------------------------------------ a plan meets a change


def test_a_planned_document_that_changed_is_reported_not_forced(
    components: Components, make_document: MakeDocument, session_factory: sessionmaker[Session]
) -> None:
    failed = make_document(status="failed", bill_no="C-1")
    rejected = make_document(status="rejected", bill_no="C-2")
    with components.sessions() as session:
        planned = plan(session, "replay", DocumentFilter())
    with session_factory() as session:  # another operator replays C-1, the worker fails it...
        transition(session, failed.id, Event.replay, actor="other", reason="r")
        session.commit()

    result = run_planned(components, "replay", planned, actor="me", reason="again", criteria={})

    outcomes = {item["bill_no"]: item["outcome"] for item in result.documents}
    assert outcomes == {"C-1": "not_replayable", "C-2": "replayed"}
    assert result.changed == 1
    with session_factory() as session:
        assert session.get(Document, rejected.id).status == "draft"  # type: ignore[union-attr]
        assert session.get(Document, failed.id).status == "draft"  # type: ignore[union-attr]


# ------------------------------------------------------------------ the OpenAPI models


def test_every_operator_answer_is_described_by_its_model(
    client: TestClient, outbox: dict[str, int], make_document: MakeDocument
) -> None:
    from producers.api_models import (
        BulkAnswer,
        DocumentPage,
        NotificationPage,
        OverviewAnswer,
        ResendAnswer,
        TenantView,
    )
    from tests.integration.test_api_openapi import described

    make_document(status="failed", tenant="demo", bill_no="D-1", last_error_code="-1")
    answers = {
        DocumentPage: client.get("/v1/documents", params={"limit": 1}, headers=H),
        BulkAnswer: client.post(
            "/v1/operations/replay", json={"reason": "x", "dry_run": True}, headers=H
        ),
        NotificationPage: client.get("/v1/notifications", headers=H),
        ResendAnswer: client.post(
            "/v1/notifications/resend", json={"ids": [outbox["pending"]], "reason": "x"}, headers=H
        ),
        TenantView: client.post("/v1/tenants/demo/pause", json={"reason": "x"}, headers=H),
        OverviewAnswer: client.get("/v1/overview", headers=H),
    }
    for model, answer in answers.items():
        assert answer.status_code == 200, (model.__name__, answer.text)
        described(model, answer.json())
    assert answers[BulkAnswer].json()["count"] == 2  # D-1 and N-2 (rejected)
    for row in client.get("/v1/tenants", headers=H).json():
        described(TenantView, row)
