"""GET /v1/documents: every filter, the item's fields, keyset pages that stay true while rows
are inserted between them, clear 400s for bad filters, 401 on every operator route.
Runs on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from producers.enqueue import RecordingEnqueuer
from producers.http import create_app
from producers.testing import auth_headers, bridge_settings, build_test_components
from store.columns import utcnow
from store.lifecycle import transition
from store.models import Document
from store.states import Event

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H = auth_headers()
MakeDocument = Callable[..., Document]


@pytest.fixture
def client(
    database_url: str, session_factory: sessionmaker[Session], redis_url: str
) -> Iterator[TestClient]:
    settings = bridge_settings(database_url)
    real_redis = redis.Redis.from_url(redis_url)
    components = build_test_components(
        settings,
        session_factory,
        enqueuer=RecordingEnqueuer(),
        redis=real_redis,
        broker_redis=real_redis,
    )
    with TestClient(create_app(settings, components=components)) as test_client:
        yield test_client
    real_redis.close()


def listed(client: TestClient, **params: Any) -> list[str]:
    response = client.get("/v1/documents", params=params, headers=H)
    assert response.status_code == 200, response.text
    return [item["bill_no"] for item in response.json()["items"]]


@pytest.fixture
def seeded(make_document: MakeDocument) -> dict[str, Document]:
    now = utcnow()
    return {
        "old_failed": make_document(
            status="failed", tenant="demo", bill_no="L-OLD-FAILED",
            status_changed_at=now - timedelta(days=3), updated_at=now - timedelta(days=3),
            last_error_code="-10005", last_error_message="销方税号未在发票云维护",
            payload={"billNo": "L-OLD-FAILED", "buyerName": "杭州西溪文化传媒有限公司"},
        ),
        "rejected": make_document(
            status="rejected", tenant="demo", bill_no="L-REJECTED",
            status_changed_at=now - timedelta(hours=5), updated_at=now - timedelta(hours=5),
            last_error_code="-10007", last_error_message="价税合计金额不对",
            payload={"billNo": "L-REJECTED", "buyerName": "Acme Trading GmbH"},
        ),
        "shop_invoice_failed": make_document(
            status="invoice_failed", tenant="shop", bill_no="L-SHOP-IF",
            seller_tax_id="91440300MA5G9SHOPX",
            status_changed_at=now - timedelta(hours=1), updated_at=now - timedelta(minutes=1),
            payload={"billNo": "L-SHOP-IF", "buyerName": "深圳南山贸易有限公司"},
        ),
        "draft": make_document(
            status="draft", tenant="demo", bill_no="l-draft-lower",
            payload={"billNo": "l-draft-lower", "buyerName": "ACME trading gmbh"},
        ),
        "superseded": make_document(
            status="failed", tenant="demo", bill_no="L-SUPERSEDED", is_current=False,
            status_changed_at=now - timedelta(days=4),
        ),
    }  # fmt: skip


ALL_CURRENT = ["L-OLD-FAILED", "L-REJECTED", "L-SHOP-IF", "l-draft-lower"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ALL_CURRENT),
        ({"status": "failed"}, ["L-OLD-FAILED"]),
        ({"status": ["failed", "rejected"]}, ["L-OLD-FAILED", "L-REJECTED"]),
        ({"status": "rejected,invoice_failed"}, ["L-REJECTED", "L-SHOP-IF"]),
        ({"tenant": "shop"}, ["L-SHOP-IF"]),
        ({"seller": "91440300ma5g9shopx"}, ["L-SHOP-IF"]),  # tax ids compare upper-case
        ({"older_than": "2h"}, ["L-OLD-FAILED", "L-REJECTED"]),
        ({"older_than": "2d"}, ["L-OLD-FAILED"]),
        ({"older_than": "7200"}, ["L-OLD-FAILED", "L-REJECTED"]),  # plain seconds
        ({"updated_since": "__2h_ago__"}, ["L-SHOP-IF", "l-draft-lower"]),
        ({"q": "l-draft"}, ["l-draft-lower"]),
        ({"q": "shop-if"}, ["L-SHOP-IF"]),  # bill number, any case
        ({"q": "acme TRADING"}, ["L-REJECTED", "l-draft-lower"]),  # buyer name, any case
        ({"q": "西溪文化"}, ["L-OLD-FAILED"]),
        ({"q": "100%_"}, []),  # LIKE wildcards are plain text
        ({"error_code": "-10007"}, ["L-REJECTED"]),
        ({"tenant": "demo", "status": "failed", "older_than": "1d"}, ["L-OLD-FAILED"]),
    ],
)
def test_each_filter_narrows_the_list_of_current_documents_oldest_first(
    client: TestClient, seeded: dict[str, Document], params: dict[str, Any], expected: list[str]
) -> None:
    if params.get("updated_since") == "__2h_ago__":
        params = {"updated_since": (utcnow() - timedelta(hours=2)).isoformat()}

    assert listed(client, **params) == expected


def test_an_item_says_what_an_operator_needs(
    client: TestClient,
    seeded: dict[str, Document],
    make_document: MakeDocument,
    session_factory: sessionmaker[Session],
) -> None:
    withdrawn = make_document(status="draft", tenant="demo", bill_no="L-WD")
    with session_factory() as session:
        transition(session, withdrawn.id, Event.withdraw, actor="op", reason="客户取消订单")
        session.commit()

    body = client.get("/v1/documents", params={"status": "failed"}, headers=H).json()
    item = body["items"][0]
    by_reason = client.get("/v1/documents", params={"q": "L-WD"}, headers=H).json()["items"][0]

    assert set(item) >= {
        "id", "bill_no", "tenant", "seller_tax_id", "buyer_name", "status", "age_seconds",
        "reason", "last_error_code", "total_incl_tax", "status_changed_at", "updated_at",
        "revision",
    }  # fmt: skip
    assert item["id"] == seeded["old_failed"].id and item["revision"] == 1
    assert item["buyer_name"] == "杭州西溪文化传媒有限公司"
    assert item["reason"] == "销方税号未在发票云维护" and item["last_error_code"] == "-10005"
    assert 3 * 86400 - 60 <= item["age_seconds"] <= 3 * 86400 + 60
    assert item["total_incl_tax"] is None or isinstance(item["total_incl_tax"], str)
    assert body["next_cursor"] is None
    # Without an error message, the reason is that of the event that put it in its state.
    assert (by_reason["status"], by_reason["reason"]) == ("withdrawn", "客户取消订单")


def test_money_is_exact_text(client: TestClient, make_document: MakeDocument) -> None:
    make_document(status="failed", bill_no="L-MONEY", total_incl_tax=Decimal("1234567.89"))

    item = client.get("/v1/documents", headers=H).json()["items"][0]

    assert item["total_incl_tax"] == "1234567.89"


def test_pages_stay_true_while_documents_arrive_between_them(
    client: TestClient, make_document: MakeDocument
) -> None:
    start = utcnow() - timedelta(hours=1)
    existing = [
        make_document(
            status="failed", bill_no=f"P-{i:02d}", status_changed_at=start + timedelta(seconds=i)
        )
        for i in range(8)
    ]
    # Two documents that entered the state at the same instant: the id breaks the tie.
    twin = make_document(
        status="failed", bill_no="P-TWIN", status_changed_at=start + timedelta(seconds=2)
    )
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"status": "failed", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/v1/documents", params=params, headers=H).json()
        seen += [item["bill_no"] for item in body["items"]]
        pages += 1
        # Arrivals between pages: now (the end of the order), and one at the same instant
        # as a row already passed (it sorts after that row, by its larger id).
        make_document(status="failed", bill_no=f"NEW-{pages}")
        if pages == 1:
            make_document(
                status="failed", bill_no="NEW-TIE", status_changed_at=start + timedelta(seconds=1)
            )
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 20

    assert len(seen) == len(set(seen)), "a document was listed twice"
    pre_existing = [doc.bill_no for doc in existing] + [twin.bill_no]
    assert [no for no in seen if no in pre_existing] == [
        "P-00", "P-01", "P-02", "P-TWIN", "P-03", "P-04", "P-05", "P-06", "P-07",
    ]  # fmt: skip
    # Rows that arrived after the pages passed their place are not listed; the others are,
    # each once, at the end.
    assert "NEW-TIE" not in seen
    assert [no for no in seen if no.startswith("NEW-")] == [f"NEW-{n}" for n in range(1, pages)]


@pytest.mark.parametrize(
    ("params", "field", "allowed_has"),
    [
        ({"status": "stuck"}, "status", "invoice_failed"),
        ({"status": "failed,nope"}, "status", "failed"),
        ({"older_than": "soon"}, "older_than", "2h"),
        ({"updated_since": "yesterday"}, "updated_since", "2026-12-01"),
        ({"cursor": "not-a-cursor"}, "cursor", "next_cursor"),
    ],
)
def test_a_bad_filter_is_400_naming_the_field_and_what_it_accepts(
    client: TestClient, params: dict[str, Any], field: str, allowed_has: str
) -> None:
    response = client.get("/v1/documents", params=params, headers=H)

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "bad_filter"
    assert body["field"] == field
    assert field in body["error"]["message"] and body["error"]["message_zh"]
    assert allowed_has in str(body["allowed"])


@pytest.mark.parametrize("limit", [0, 501, "many"])
def test_a_bad_limit_is_400_naming_it(client: TestClient, limit: Any) -> None:
    response = client.get("/v1/documents", params={"limit": limit}, headers=H)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert "limit" in response.json()["error"]["message"]


OPERATOR_ROUTES = [
    ("get", "/v1/documents", None),
    ("post", "/v1/operations/replay", {"reason": "x"}),
    ("post", "/v1/operations/withdraw", {"reason": "x", "filter": {"tenant": "demo"}}),
    ("get", "/v1/notifications", None),
    ("post", "/v1/notifications/resend", {"ids": [1], "reason": "x"}),
    ("get", "/v1/tenants", None),
    ("post", "/v1/tenants/demo/pause", {"reason": "x"}),
    ("post", "/v1/tenants/demo/resume", {"reason": "x"}),
    ("get", "/v1/overview", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATOR_ROUTES)
@pytest.mark.parametrize("headers", [{}, auth_headers("wrong-key")])
def test_every_operator_route_is_401_without_a_valid_key(
    client: TestClient,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    response = client.request(method, path, json=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
