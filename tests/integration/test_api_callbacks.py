"""POST /callbacks/kingdee/{secret}: the receiver checklist, on a real database."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from producers.callbacks import MAX_LINKED_BILLS
from producers.http import create_app
from producers.testing import (
    CALLBACK_SECRET,
    SELLER_DEMO,
    SELLER_DEMO_2,
    auth_headers,
    bill_json,
    bridge_settings,
    build_test_components,
    callback_body,
    make_bill,
)
from schemas.kingdee import CALLBACK_ACK, is_ack
from schemas.money import dumps_exact
from store.columns import utcnow
from store.models import CallbackInbox, Document
from store.states import InboxState
from worker import queues
from worker.coalesce import ReconcileCoalescer
from worker.enqueue import RecordingEnqueuer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

URL = f"/callbacks/kingdee/{CALLBACK_SECRET}"


@dataclass
class Receiver:
    client: TestClient
    enqueuer: RecordingEnqueuer
    sessions: sessionmaker[Session]
    redis: Any

    def task_started(self) -> None:
        """What a reconcile task does first: the next stored callback sends again."""
        ReconcileCoalescer(self.redis).release_reconcile()

    def send(self, body: bytes | Iterator[bytes], **kwargs: Any) -> Any:
        return self.client.post(URL, content=body, **kwargs)

    def inbox(self) -> list[CallbackInbox]:
        with self.sessions() as session:
            return list(session.scalars(select(CallbackInbox).order_by(CallbackInbox.id)))

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get("/metrics").text
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{wanted} not in /metrics")


def build_receiver(
    database_url: str,
    sessions: sessionmaker[Session],
    client: tuple[str, int] = ("127.0.0.1", 50000),
    redis: Any = None,
    **settings: Any,
) -> Receiver:
    config = bridge_settings(database_url, **settings)
    enqueuer = RecordingEnqueuer()
    redis = redis if redis is not None else fakeredis.FakeRedis()
    components = build_test_components(
        config, sessions, enqueuer=enqueuer, redis=redis, broker_redis=fakeredis.FakeRedis()
    )
    app = create_app(config, components=components)
    return Receiver(TestClient(app, client=client), enqueuer, sessions, redis)


@pytest.fixture
def receiver(database_url: str, session_factory: sessionmaker[Session]) -> Iterator[Receiver]:
    built = build_receiver(database_url, session_factory)
    with built.client:
        yield built


def issued(bill_no: str, number: str, **fields: Any) -> dict[str, Any]:
    item = {
        "billNo": bill_no,
        "sellerTaxpayerId": SELLER_DEMO,
        "orderNo": f"ORD-{number}",
        "invoiceCode": "",
        "invoiceNum": number,
        "invoiceDate": "2025-09-06",
        "invoiceStatus": "0",
        "invoiceType": "10xdp",
        "totalAmount": "100.00",
        "totalTaxAmount": "6.00",
        "includeTaxAmount": "106.00",
        "invoicePdfFileUrl": f"https://files.example/{number}.pdf",
    }
    item.update(fields)
    return item


def submitted(receiver: Receiver, bill_no: str) -> int:
    response = receiver.client.post(
        "/v1/documents", content=bill_json(make_bill(bill_no)), headers=auth_headers()
    )
    assert response.status_code == 202
    document_id: int = response.json()["document_id"]
    return document_id


def test_a_per_bill_callback_is_stored_raw_acknowledged_and_reconciled_after(
    receiver: Receiver,
) -> None:
    document_id = submitted(receiver, "C-1")
    body = callback_body(
        [issued("C-1", "25330000000000000001"), issued("C-1", "25330000000000000002")]
    )

    response = receiver.send(body)

    assert response.status_code == 200
    assert response.json() == CALLBACK_ACK and is_ack(response.content)
    [row] = receiver.inbox()
    assert row.raw_body == body
    assert (row.state, row.style, row.document_id) == ("received", "per_bill", document_id)
    assert row.dedupe_key.startswith("INVOICE.OPEN|per_bill|order:ORD-2533")
    assert row.remote_addr == "127.0.0.1"
    # Ids plus labels: Flower finds the job by bill number; the task reads the row.
    assert receiver.enqueuer.of(queues.RECONCILE) == [
        {"inbox_id": row.id, "bill_no": "C-1", "tenant": "demo"}
    ]


def test_a_per_invoice_callback_and_a_return_are_stored_with_their_style(
    receiver: Receiver,
) -> None:
    submitted(receiver, "C-2")
    per_invoice = callback_body([issued("C-2", "25330000000000000003")], style="per_invoice")
    returned = dumps_exact(
        {
            "interfaceCode": "BILL.RETURN",
            "returnCode": "0",
            "returnMsg": "success",
            "data": base64.b64encode(
                dumps_exact(
                    {"billNo": "C-2", "sellerTaxpayerId": SELLER_DEMO, "reason": "退回修改"}
                ).encode()
            ).decode(),
        }
    ).encode()

    assert receiver.send(per_invoice).json() == CALLBACK_ACK
    assert receiver.send(returned).json() == CALLBACK_ACK
    assert [row.style for row in receiver.inbox()] == ["per_invoice", "return"]


def test_data_sent_as_plain_json_is_tolerated(receiver: Receiver) -> None:
    body = dumps_exact(
        {
            "interfaceCode": "INVOICE.OPEN",
            "returnCode": "0",
            "returnMsg": "success",
            "data": issued("C-3", "25330000000000000004"),
        }
    ).encode()

    assert receiver.send(body).status_code == 200
    assert len(receiver.inbox()) == 1


def test_a_duplicate_is_acknowledged_and_not_stored_twice(receiver: Receiver) -> None:
    submitted(receiver, "C-4")
    body = callback_body([issued("C-4", "25330000000000000005")])

    first = receiver.send(body)
    second = receiver.send(body)
    # The same invoice re-encoded (another key order) is still the same fact.
    reordered = callback_body([dict(reversed(issued("C-4", "25330000000000000005").items()))])
    third = receiver.send(reordered)

    assert [r.json() for r in (first, second, third)] == [CALLBACK_ACK] * 3
    assert len(receiver.inbox()) == 1
    assert len(receiver.enqueuer.of(queues.RECONCILE)) == 1
    assert receiver.metric("fapiao_callbacks_received_total", result="duplicate") == 2


def test_a_cancel_of_the_same_invoice_is_a_new_fact(receiver: Receiver) -> None:
    submitted(receiver, "C-5")
    item = issued("C-5", "25330000000000000006")
    receiver.send(callback_body([item]))
    receiver.send(callback_body([{**item, "invoiceStatus": "6"}], interface="INVOICE.CANCEL"))

    assert [row.dedupe_key.split("|")[0] for row in receiver.inbox()] == [
        "INVOICE.OPEN",
        "INVOICE.CANCEL",
    ]


def test_an_unknown_bill_is_stored_as_an_orphan_and_counted_not_refused(
    receiver: Receiver,
) -> None:
    response = receiver.send(callback_body([issued("NOBODY-1", "25330000000000000007")]))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    [row] = receiver.inbox()
    assert row.document_id is None and row.state == InboxState.received.value
    assert receiver.enqueuer.of(queues.RECONCILE) == [{"inbox_id": row.id, "bill_no": "NOBODY-1"}]
    assert receiver.metric("fapiao_callbacks_received_total", result="orphan") == 1
    assert receiver.metric("fapiao_callbacks_received_total", result="stored") == 1


def test_a_bill_shared_by_two_sellers_links_only_the_callback_naming_its_seller(
    receiver: Receiver,
) -> None:
    ids = {}
    for seller in (SELLER_DEMO, SELLER_DEMO_2):
        response = receiver.client.post(
            "/v1/documents",
            content=bill_json(make_bill("C-S1", seller=seller)),
            headers=auth_headers(),
        )
        assert response.status_code == 202
        ids[seller] = response.json()["document_id"]

    named = issued("C-S1", "25330000000000000031", sellerTaxpayerId=SELLER_DEMO_2.lower())
    unnamed = issued("C-S1", "25330000000000000032", sellerTaxpayerId="")
    assert receiver.send(callback_body([named])).status_code == 200
    receiver.task_started()  # else the second is coalesced (test_api_callbacks_coalesced)
    assert receiver.send(callback_body([unnamed])).status_code == 200

    first, second = receiver.inbox()
    # The seller (normalised) picks one document; without it two match: linked later.
    assert first.document_id == ids[SELLER_DEMO_2]
    assert second.document_id is None and second.state == InboxState.received.value
    assert receiver.enqueuer.of(queues.RECONCILE) == [
        {"inbox_id": first.id, "bill_no": "C-S1", "tenant": "demo"},
        {"inbox_id": second.id, "bill_no": "C-S1"},
    ]
    # Two candidates is not an orphan.
    assert receiver.metric("fapiao_callbacks_received_total", result="stored") == 2
    metrics = receiver.client.get("/metrics").text
    assert 'fapiao_callbacks_received_total{result="orphan"} 1.0' not in metrics


def test_a_callback_naming_many_bills_is_linked_or_orphaned_like_one_naming_one(
    receiver: Receiver,
) -> None:
    # Over MAX_LINKED_BILLS bills: matched by a SELECT per bill instead of in the INSERT.
    count = MAX_LINKED_BILLS + 2
    document_id = submitted(receiver, "C-M5")
    known = [issued(f"C-M{i}", f"2533000000000000{40 + i:04d}") for i in range(count)]
    unknown = [issued(f"NOBODY-M{i}", f"2533000000000000{60 + i:04d}") for i in range(count)]

    assert receiver.send(callback_body(known)).status_code == 200
    receiver.task_started()
    assert receiver.send(callback_body(unknown)).status_code == 200

    linked, orphan = receiver.inbox()
    assert (linked.document_id, orphan.document_id) == (document_id, None)
    assert [m.get("tenant") for m in receiver.enqueuer.of(queues.RECONCILE)] == ["demo", None]
    assert receiver.metric("fapiao_callbacks_received_total", result="orphan") == 1


def test_a_wrong_secret_is_404_and_stores_nothing(receiver: Receiver) -> None:
    body = callback_body([issued("C-6", "25330000000000000008")])

    for path in (
        "/callbacks/kingdee/wrong",
        f"/callbacks/kingdee/{CALLBACK_SECRET}x",
        "/callbacks/kingdee/",
    ):
        response = receiver.client.post(path, content=body)
        assert response.status_code == 404, path
    assert receiver.inbox() == []
    assert receiver.enqueuer.sent == []


def test_without_a_configured_secret_every_callback_is_404(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    closed = build_receiver(database_url, session_factory, callback_secret=None)
    response = closed.send(callback_body([issued("C-7", "25330000000000000009")]))

    assert response.status_code == 404
    assert closed.inbox() == []


def test_the_ip_allow_list_refuses_other_callers_with_403(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    body = callback_body([issued("C-8", "25330000000000000010")])
    allowed = build_receiver(
        database_url,
        session_factory,
        client=("10.1.2.3", 4000),
        callbacks={"ip_allowlist": ["10.0.0.0/8"]},
    )
    outsider = build_receiver(
        database_url,
        session_factory,
        client=("192.0.2.7", 4000),
        callbacks={"ip_allowlist": ["10.0.0.0/8"]},
    )

    refused = outsider.send(body)
    assert refused.status_code == 403
    assert outsider.inbox() == []
    assert allowed.send(body).status_code == 200
    assert len(allowed.inbox()) == 1


def test_bodies_over_the_limit_are_413_by_header_or_by_stream(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    small = build_receiver(database_url, session_factory, callbacks={"max_body_bytes": 1024})
    items = [issued("C-9", f"2533000000000000{index:04d}") for index in range(20)]
    body = callback_body(items)
    assert len(body) > 1024

    declared = small.send(body)
    streamed = small.send(iter([body[:600], body[600:]]))  # no Content-Length

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert small.inbox() == []


def _envelope(**fields: Any) -> bytes:
    body: dict[str, Any] = {"interfaceCode": "INVOICE.OPEN", "returnCode": "0", "returnMsg": "ok"}
    body.update(fields)
    return dumps_exact(body).encode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[]", "JSON object"),
        (b"", "not JSON"),
        (dumps_exact({"returnCode": "0", "data": "e30="}).encode(), "interfaceCode"),
        (_envelope(), "no data"),
        (_envelope(data="!!!not-base64!!!"), "cannot be decoded"),
        (_envelope(data="A"), "not valid base64"),
        (_envelope(data="e3"), "cannot be decoded"),  # truncated base64
        (_envelope(data=_b64("{}")), "billNo"),
        (_envelope(data=_b64("not json")), "cannot be decoded"),
        (_envelope(data=_b64("42")), "object or an array"),
        (_envelope(data=_b64('[{"invoiceNum": "1"}]')), "invalid"),
        (_envelope(data=_b64("[1, 2]")), "not an object"),
        (_envelope(data=_b64('{"billNo": "X"}'), bizControl=[1]), "bizControl"),
    ],
)
def test_malformed_callbacks_are_400_saying_what_is_wrong(
    receiver: Receiver, body: bytes, fragment: str
) -> None:
    response = receiver.send(body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert fragment in error["message"], error
    assert not is_ack(response.content)  # the cloud must not take it as delivered
    assert receiver.inbox() == []
    assert receiver.enqueuer.sent == []


def test_a_database_that_is_down_answers_503_so_the_cloud_retries(database_url: str) -> None:
    from store.db import make_engine, make_session_factory

    dead = make_session_factory(
        make_engine(
            "postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
        )
    )
    receiver = build_receiver(database_url, dead)

    response = receiver.send(callback_body([issued("C-10", "25330000000000000011")]))

    assert response.status_code == 503
    assert not is_ack(response.content)
    assert response.headers["Retry-After"]
    assert receiver.enqueuer.sent == []


def test_rows_of_other_tables_are_untouched_by_callbacks(receiver: Receiver) -> None:
    submitted(receiver, "C-11")
    receiver.send(callback_body([issued("C-11", "25330000000000000012")]))

    with receiver.sessions() as session:
        document = session.scalars(select(Document)).one()
        assert document.status == "draft"  # the receiver decides nothing; reconcile does
        assert session.scalar(select(func.count()).select_from(CallbackInbox)) == 1


def test_a_callback_defers_its_pushed_documents_poll_and_nothing_else(
    receiver: Receiver,
) -> None:
    pushed_soon, pushed_late, draft = (submitted(receiver, f"C-P{i}") for i in range(3))
    now = utcnow()
    with receiver.sessions.begin() as session:
        for document_id, due in ((pushed_soon, now + timedelta(seconds=2)),
                                 (pushed_late, now + timedelta(hours=1))):  # fmt: skip
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(status="pushed", next_poll_at=due)
            )

    for bill_no, number in (("C-P0", "21"), ("C-P1", "22"), ("C-P2", "23")):
        assert receiver.send(callback_body([issued(bill_no, f"253300000000000000{number}")]))
    with receiver.sessions() as session:
        due = {d.id: d.next_poll_at for d in session.scalars(select(Document))}
        states = {d.id: (d.status, d.version) for d in session.scalars(select(Document))}

    # The reconcile already on its way will ask the cloud: no poll within the grace...
    soon = due[pushed_soon]
    assert soon is not None
    assert soon.replace(tzinfo=None) >= (now + timedelta(seconds=59)).replace(tzinfo=None)
    # ... a later poll is not brought forward, and other states are left alone.
    late = due[pushed_late]
    assert late is not None
    assert late.replace(tzinfo=None) >= (now + timedelta(minutes=59)).replace(tzinfo=None)
    assert due[draft] is None
    assert states[draft] == ("draft", 1)
    assert states[pushed_soon][0] == states[pushed_late][0] == "pushed"
