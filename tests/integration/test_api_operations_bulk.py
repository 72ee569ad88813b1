"""POST /v1/operations/replay and /withdraw: a dry run answers exactly what the real run then
does and changes nothing; the guards are the CLI's; one audit row per action (actor, reason,
filter), per-document events as before; single-document actions are audited too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producers.http import create_app
from producers.testing import auth_headers, bridge_settings, build_test_components, run_cli
from store.columns import utcnow
from store.models import Document, DocumentEvent, OperatorAudit
from store.states import DocumentStatus
from worker import queues
from worker.enqueue import RecordingEnqueuer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H = auth_headers()
ACTOR = "api:key1"
MakeDocument = Callable[..., Document]


class Bridge:
    def __init__(self, client: TestClient, sessions: sessionmaker[Session], components: Any):
        self.client = client
        self.sessions = sessions
        self.components = components
        self.enqueuer: RecordingEnqueuer = components.enqueuer

    def post(self, action: str, body: dict[str, Any]) -> Any:
        return self.client.post(f"/v1/operations/{action}", json=body, headers=H)

    def snapshot(self) -> dict[int, tuple[str, int]]:
        with self.sessions() as session:
            return {d.id: (d.status, d.version) for d in session.scalars(select(Document))}

    def events(self) -> list[tuple[int, str, str, str | None]]:
        with self.sessions() as session:
            rows = session.scalars(select(DocumentEvent).order_by(DocumentEvent.id))
            return [(e.document_id, e.event, e.actor, e.reason) for e in rows]

    def audits(self) -> list[OperatorAudit]:
        with self.sessions() as session:
            return list(session.scalars(select(OperatorAudit).order_by(OperatorAudit.id)))


@pytest.fixture
def bridge(
    database_url: str, session_factory: sessionmaker[Session], redis_url: str
) -> Iterator[Bridge]:
    settings = bridge_settings(database_url)
    real_redis = redis.Redis.from_url(redis_url)
    components = build_test_components(
        settings, session_factory, enqueuer=RecordingEnqueuer(), redis=real_redis
    )
    with TestClient(create_app(settings, components=components)) as client:
        yield Bridge(client, session_factory, components)
    real_redis.close()


@pytest.fixture
def seeded(make_document: MakeDocument) -> dict[str, Document]:
    """One current document in every state (tenant demo), plus older failed/rejected ones."""
    old = utcnow() - timedelta(days=2)
    docs = {
        state.value: make_document(status=state.value, tenant="demo", bill_no=f"B-{state}")
        for state in DocumentStatus
    }
    docs["failed_shop"] = make_document(
        status="failed", tenant="shop", bill_no="B-failed-shop", status_changed_at=old,
        last_error_code="-10005",
    )  # fmt: skip
    docs["rejected_old"] = make_document(
        status="rejected", tenant="demo", bill_no="B-rejected-old", status_changed_at=old
    )
    docs["pushed_old"] = make_document(
        status="pushed", tenant="shop", bill_no="B-pushed-old", status_changed_at=old
    )
    return docs


def without_run_fields(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in ("dry_run", "audit_id")}


# ------------------------------------------------------------------ dry run = real run


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("replay", {"filter": {}}),
        ("replay", {"filter": {"tenant": "demo"}}),
        ("replay", {"filter": {"status": ["rejected"], "older_than": "1d"}}),
        ("replay", {"filter": {"bill_nos": ["B-failed", "B-in_doubt", "B-pushed"]}}),
        ("replay", {"filter": {}, "limit": 2}),
        ("withdraw", {"filter": {"tenant": "shop"}}),
        ("withdraw", {"filter": {"status": ["draft", "pushed", "withdrawing", "withdrawn"]}}),
        ("withdraw", {"filter": {"q": "B-"}, "limit": 3}),
    ],
)
def test_a_dry_run_answers_exactly_what_the_real_run_then_does(
    bridge: Bridge, seeded: dict[str, Document], action: str, body: dict[str, Any]
) -> None:
    before, events_before = bridge.snapshot(), bridge.events()

    dry = bridge.post(action, {**body, "dry_run": True, "reason": "preview"})

    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["audit_id"] is None
    assert bridge.snapshot() == before and bridge.events() == events_before
    assert bridge.audits() == [] and bridge.enqueuer.sent == []
    assert dry.json()["count"] > 0

    real = bridge.post(action, {**body, "reason": "preview"})

    assert real.status_code == 200, real.text
    assert real.json()["dry_run"] is False and isinstance(real.json()["audit_id"], int)
    assert without_run_fields(real.json()) == without_run_fields(dry.json())
    after = bridge.snapshot()
    for item in real.json()["documents"]:
        assert after[item["document_id"]][0] == item["to_status"]
        changed = after[item["document_id"]] != before[item["document_id"]]
        assert changed == (item["outcome"] in ("replayed", "withdrawn", "withdrawal_owed"))
    untouched = set(before) - {item["document_id"] for item in real.json()["documents"]}
    assert all(after[i] == before[i] for i in untouched)


def test_replay_takes_failed_and_rejected_only_oldest_first(
    bridge: Bridge, seeded: dict[str, Document]
) -> None:
    answer = bridge.post("replay", {"filter": {}, "reason": "cloud fixed"}).json()

    # The two old ones entered their state at the same instant: the id breaks the tie.
    assert [item["bill_no"] for item in answer["documents"]] == [
        "B-failed-shop", "B-rejected-old", "B-rejected", "B-failed",
    ]  # fmt: skip
    assert {item["outcome"] for item in answer["documents"]} == {"replayed"}
    assert answer["count"] == answer["changed"] == 4
    pushed = {kw["document_id"] for kw in bridge.enqueuer.of(queues.PUSH)}
    assert pushed == {item["document_id"] for item in answer["documents"]}


def test_withdraw_predicts_and_does_each_documents_own_outcome(
    bridge: Bridge, seeded: dict[str, Document]
) -> None:
    body = {
        "filter": {"status": ["draft", "pushed", "invoice_failed", "withdrawing"]},
        "reason": "订单取消",
    }
    dry = bridge.post("withdraw", {**body, "dry_run": True}).json()
    real = bridge.post("withdraw", body).json()

    outcomes = {item["bill_no"]: (item["outcome"], item["to_status"]) for item in real["documents"]}
    assert outcomes == {
        "B-draft": ("withdrawn", "withdrawn"),
        "B-pushed": ("withdrawal_owed", "withdrawing"),
        "B-pushed-old": ("withdrawal_owed", "withdrawing"),
        "B-invoice_failed": ("withdrawal_owed", "withdrawing"),
        "B-withdrawing": ("unchanged", "withdrawing"),
    }
    assert without_run_fields(dry) == without_run_fields(real)
    assert real["changed"] == 4
    withdrawals = {kw["bill_no"] for kw in bridge.enqueuer.of(queues.WITHDRAW)}
    assert withdrawals == {"B-pushed", "B-pushed-old", "B-invoice_failed"}


def test_a_document_that_changed_after_the_dry_run_is_answered_as_it_is_now(
    bridge: Bridge, seeded: dict[str, Document], session_factory: sessionmaker[Session]
) -> None:
    body = {"filter": {"bill_nos": ["B-failed", "B-rejected"]}, "reason": "retry"}
    dry = bridge.post("replay", {**body, "dry_run": True}).json()
    bridge.client.post("/v1/documents/B-failed/replay", headers=H)  # someone else was quicker

    real = bridge.post("replay", body).json()

    assert dry["count"] == 2
    assert [item["bill_no"] for item in real["documents"]] == ["B-rejected"]


# ------------------------------------------------------------------ audit


def test_one_audit_row_per_bulk_action_with_actor_reason_and_filter(
    bridge: Bridge, seeded: dict[str, Document]
) -> None:
    events_before = len(bridge.events())
    answer = bridge.post(
        "replay", {"filter": {"tenant": "demo", "status": ["failed", "rejected"]},
                   "reason": "  cloud maintenance over  "},
    ).json()  # fmt: skip

    audits = bridge.audits()
    assert len(audits) == 1
    audit = audits[0]
    assert audit.id == answer["audit_id"]
    assert (audit.actor, audit.action, audit.reason) == (ACTOR, "replay", "cloud maintenance over")
    assert audit.filter == {"tenant": "demo", "statuses": ["failed", "rejected"], "limit": None}
    assert (audit.dry_run, audit.count) == (False, 3)
    # Each document keeps its own event, naming the same actor and reason.
    new_events = bridge.events()[events_before:]
    assert sorted(new_events) == sorted(
        (item["document_id"], "replay", ACTOR, "cloud maintenance over")
        for item in answer["documents"]
    )


def test_single_document_actions_are_audited_too(
    bridge: Bridge, seeded: dict[str, Document]
) -> None:
    replayed = bridge.client.post(
        "/v1/documents/B-failed/replay", json={"reason": "fixed the seller"}, headers=H
    )
    withdrawn = bridge.client.post("/v1/documents/B-draft/withdraw", headers=H)
    refused = bridge.client.post("/v1/documents/B-pushed/replay", headers=H)

    assert (replayed.status_code, withdrawn.status_code, refused.status_code) == (202, 200, 409)
    rows = [(a.actor, a.action, a.reason, a.count, a.filter["bill_nos"]) for a in bridge.audits()]
    assert rows == [
        (ACTOR, "replay", "fixed the seller", 1, ["B-failed"]),
        (ACTOR, "withdraw", "withdraw requested", 1, ["B-draft"]),
    ]
    assert [kw["bill_no"] for kw in bridge.enqueuer.of(queues.PUSH)] == ["B-failed"]


def test_cli_actions_write_the_same_audit_rows(bridge: Bridge, seeded: dict[str, Document]) -> None:
    components = bridge.components
    replay = run_cli(
        components, "replay", "--yes", "--tenant", "shop", "--actor", "operator:alice",
        "--reason", "seller fixed",
    )  # fmt: skip
    withdraw = run_cli(components, "withdraw", "B-pushed", "--actor", "operator:bob")
    pause = run_cli(components, "tenants", "pause", "shop", "--reason", "cloud down")
    resume = run_cli(components, "tenants", "resume", "shop", "--reason", "cloud back")

    assert [r.exit_code for r in (replay, withdraw, pause, resume)] == [0, 0, 0, 0]
    rows = [(a.actor, a.action, a.reason, a.count) for a in bridge.audits()]
    assert rows[0] == ("operator:alice", "replay", "seller fixed", 1)
    assert rows[1] == ("operator:bob", "withdraw", "withdrawn by an operator", 1)
    assert [row[1:3] for row in rows[2:]] == [
        ("tenant.pause", "cloud down"),
        ("tenant.resume", "cloud back"),
    ]
    assert bridge.audits()[0].filter == {"tenant": "shop", "limit": None}


# ------------------------------------------------------------------ guards and bad input


@pytest.mark.parametrize(
    ("action", "body", "field", "allowed_has"),
    [
        ("replay", {"filter": {"status": ["in_doubt"]}, "reason": "x"}, "filter.status", "failed"),
        ("replay", {"filter": {"status": ["pushed"]}, "reason": "x"}, "filter.status", "rejected"),
        ("withdraw", {"filter": {"status": ["invoiced"]}, "reason": "x"}, "filter.status", "draft"),
        ("withdraw", {"filter": {}, "reason": "x"}, "filter", "bill_nos"),
        ("replay", {"filter": {"status": ["nope"]}, "reason": "x"}, "filter.status", "pushing"),
        ("replay", {"filter": {"older_than": "later"}, "reason": "x"}, "filter.older_than", "7d"),
        ("replay", {"filter": {}, "reason": "   "}, "reason", None),
    ],
)
def test_guards_and_bad_filters_are_400_and_change_nothing(
    bridge: Bridge,
    seeded: dict[str, Document],
    action: str,
    body: dict[str, Any],
    field: str,
    allowed_has: str | None,
) -> None:
    before = bridge.snapshot()

    response = bridge.post(action, body)

    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"]["code"] == "bad_filter" and answer["field"] == field
    if allowed_has is not None:
        assert allowed_has in str(answer["allowed"])
    assert bridge.snapshot() == before and bridge.audits() == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"filter": {}}, "reason"),
        ({"filter": {}, "reason": ""}, "reason"),
        ({"filter": {"stauts": ["failed"]}, "reason": "x"}, "stauts"),
        ({"filter": {"status": "failed"}, "reason": "x"}, "status"),
        ({"filter": {}, "reason": "x", "limit": 0}, "limit"),
    ],
)
def test_a_malformed_body_is_400_naming_the_field(
    bridge: Bridge, seeded: dict[str, Document], body: dict[str, Any], named: str
) -> None:
    response = bridge.post("replay", body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert named in response.json()["error"]["message"]
    assert bridge.audits() == []
