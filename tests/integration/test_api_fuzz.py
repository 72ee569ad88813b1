"""Thousands of malformed ERP payloads and callbacks against the HTTP app (in process).

Properties: never a 500 (nor a 503 from a healthy database); every refused input leaves the
database exactly as it was: the row count of every table, ``(id, status, version, content_hash,
is_current)`` of every document and ``(id, state)`` of every callback inbox row are the same
before and after (``db_snapshot``), so a refused request that changed a document in place fails
too; every 200 from the callback receiver is Kingdee's ACK. The number of requests sent is
counted and asserted.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from producers.http import create_app
from producers.testing import (
    CALLBACK_SECRET,
    SELLER_DEMO,
    auth_headers,
    bill_json,
    bridge_settings,
    build_test_components,
    make_bill,
)
from schemas.kingdee import CALLBACK_ACK
from schemas.money import dumps_exact
from store.models import Base, CallbackInbox, Document
from worker.enqueue import RecordingEnqueuer

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.slow,
]

EXAMPLES = 1200
SENT: dict[str, int] = {"documents": 0, "callbacks": 0}
STATUSES: dict[str, dict[int, int]] = {"documents": {}, "callbacks": {}}


def tally(kind: str, status: int) -> None:
    SENT[kind] += 1
    STATUSES[kind][status] = STATUSES[kind].get(status, 0) + 1


# --------------------------------------------------------------------------- strategies

numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.decimals(
        min_value=Decimal("-1e15"), max_value=Decimal("1e15"), allow_nan=False, allow_infinity=False
    ),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Raw fragments a JSON encoder would never write: exponents, escapes, NUL, lone surrogates.
raw_fragments = st.sampled_from(
    [
        "1e999999",
        "-1E+999999999",
        "1e-999999",
        "1" + "0" * 5000,
        '"\\u0000"',
        '"\\ud800"',
        '"a\\udfffb"',
        "NaN",
        "Infinity",
        "[]",
        "{}",
        '"',
        "tru",
        "0x10",
        "01",
        "1.",
        ".5",
        "--1",
    ]
)
HEADER_FIELDS = [
    "billNo", "billDate", "invoiceType", "includeTaxFlag", "totalAmount", "buyerName",
    "buyerTaxpayerId", "sellerTaxpayerId", "sellerName", "invoiceProperty", "remark",
    "taxationStyle", "orgCode", "billDetail", "deduction", "autoInvoice", "specialType",
]  # fmt: skip
LINE_FIELDS = [
    "detailId", "lineProperty", "goodsName", "revenueCode", "taxRate", "amount", "taxAmount",
    "quantity", "price", "units", "discountAmount", "zeroTaxRateFlag",
]  # fmt: skip
MARK = "@@FRAGMENT@@"


@st.composite
def mutated_bills(draw: st.DrawFn) -> bytes:
    """A valid bill with a few fields replaced, removed, added, or spliced with raw text."""
    bill = make_bill(draw(st.text(min_size=1, max_size=55)), lines=draw(st.integers(1, 3)))
    fragment: str | None = None
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "delete", "add", "line", "raw"]))
        if action == "set":
            bill[draw(st.sampled_from(HEADER_FIELDS))] = draw(json_values)
        elif action == "delete":
            bill.pop(draw(st.sampled_from(HEADER_FIELDS)), None)
        elif action == "add":
            bill[draw(st.text(max_size=15))] = draw(json_values)
        elif action == "line" and isinstance(bill.get("billDetail"), list) and bill["billDetail"]:
            line = bill["billDetail"][draw(st.integers(0, len(bill["billDetail"]) - 1))]
            if isinstance(line, dict):
                line[draw(st.sampled_from(LINE_FIELDS))] = draw(json_values)
        elif action == "raw" and fragment is None:
            fragment = draw(raw_fragments)
            bill[draw(st.sampled_from(HEADER_FIELDS))] = MARK
    body = bill_json(bill)
    if fragment is not None:
        body = body.replace(f'"{MARK}"'.encode(), fragment.encode())
    return body


@st.composite
def document_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bill", "bill", "bill", "batch", "json", "bytes", "cut"]))
    if kind == "bill":
        return draw(mutated_bills())
    if kind == "batch":
        bills = draw(st.lists(mutated_bills(), min_size=1, max_size=4))
        body = b"[" + b",".join(bills) + b"]"
        return b'{"documents":' + body + b"}" if draw(st.booleans()) else body
    if kind == "json":
        return dumps_exact(draw(json_values)).encode()
    if kind == "cut":
        body = draw(mutated_bills())
        return body[: draw(st.integers(0, len(body)))]
    return draw(st.binary(max_size=200))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


BILL_NOS = st.sampled_from(["F-1", "F-1", "F-2", "UNKNOWN-9"])


@st.composite
def invoice_items(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plausible invoice objects with a few fields of any JSON type."""
    item: dict[str, Any] = {
        "billNo": draw(BILL_NOS) if draw(st.integers(0, 9)) else draw(json_values),
        "invoiceNum": draw(st.from_regex(r"\A\d{8,20}\Z") | st.just("")),
    }
    optional = {
        "orderNo": st.text(max_size=250),
        "invoiceCode": json_values,
        "invoiceStatus": st.sampled_from(["0", "3", "6"]) | json_values,
        "invoiceProperty": json_values,
        "totalAmount": json_values,
        "sellerTaxpayerId": st.just(SELLER_DEMO) | json_values,
        "issueErrorMessage": json_values,
        "invoiceDetail": json_values,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
        item[name] = draw(optional[name])
    return item


@st.composite
def callback_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["envelope", "envelope", "envelope", "json", "bytes", "cut"]))
    if kind == "json":
        return dumps_exact(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    payload = draw(
        st.one_of(
            invoice_items(),
            st.lists(invoice_items(), min_size=1, max_size=3),
        )
        if draw(st.integers(0, 5))
        else json_values
    )
    data = draw(
        st.one_of(
            st.just(_b64(dumps_exact(payload).encode())),
            st.just(_b64(dumps_exact(payload).encode())),
            st.just(payload),
            st.text(max_size=40),
            st.binary(max_size=40).map(_b64),
            raw_fragments.map(lambda text: _b64(text.encode())),
        )
    )
    codes = st.sampled_from(["INVOICE.OPEN", "INVOICE.RED", "INVOICE.CANCEL", "FILLIN"])
    envelope: dict[str, Any] = {
        "interfaceCode": draw(codes) if draw(st.integers(0, 9)) else draw(json_values),
        "returnCode": draw(st.sampled_from(["0", "9999", 0]) | json_values),
        "returnMsg": draw(st.text(max_size=20) | json_values),
    }
    if draw(st.integers(0, 9)):
        envelope["data"] = data
    if not draw(st.integers(0, 4)):
        envelope["bizControl"] = draw(st.dictionaries(st.text(max_size=12), scalars) | json_values)
    if not draw(st.integers(0, 9)):
        del envelope[draw(st.sampled_from(sorted(envelope)))]
    body = dumps_exact(envelope).encode()
    if kind == "cut":
        return body[: draw(st.integers(0, len(body)))]
    return body


# --------------------------------------------------------------------------- harness


def row_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return _row_counts(session)


def _row_counts(session: Session) -> dict[str, int]:
    return {
        table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
        for table in Base.metadata.sorted_tables
    }


DocumentRow = tuple[int, str, int, str, bool]


@dataclass(frozen=True, slots=True)
class DbSnapshot:
    """What a refused request must leave untouched (module docstring)."""

    counts: dict[str, int]
    documents: list[DocumentRow]
    inbox: list[tuple[int, str]]


def db_snapshot(sessions: sessionmaker[Session]) -> DbSnapshot:
    with sessions() as session:
        documents = session.execute(
            select(
                Document.id,
                Document.status,
                Document.version,
                Document.content_hash,
                Document.is_current,
            ).order_by(Document.id)
        )
        inbox = session.execute(
            select(CallbackInbox.id, CallbackInbox.state).order_by(CallbackInbox.id)
        )
        return DbSnapshot(
            counts=_row_counts(session),
            documents=[
                (r.id, r.status, r.version, r.content_hash, bool(r.is_current)) for r in documents
            ],
            inbox=[(r.id, r.state) for r in inbox],
        )


@pytest.fixture(scope="module")
def count_report() -> Iterator[dict[str, int]]:
    yield SENT
    print(f"\nfuzz: {SENT['documents']} document requests, {SENT['callbacks']} callbacks")
    print(f"fuzz statuses: {STATUSES}")


def make_client(database_url: str, sessions: sessionmaker[Session]) -> TestClient:
    config = bridge_settings(database_url)
    components = build_test_components(config, sessions, enqueuer=RecordingEnqueuer())
    return TestClient(create_app(config, components=components), raise_server_exceptions=False)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_malformed_erp_payloads_never_500_and_refusals_change_nothing(
    database_url: str, session_factory: sessionmaker[Session], count_report: dict[str, int]
) -> None:
    client = make_client(database_url, session_factory)
    headers = {**auth_headers(), "Content-Type": "application/json"}

    @FUZZ
    @given(body=document_bodies())
    @example(body=b'{"billNo": "\\u0000", "buyerName": "x"}')
    @example(body=b'{"billNo": "\\ud800"}')
    @example(body=b'{"\\ud800": 1}')
    @example(body=bill_json(make_bill("NUL\x00BILL")))
    @example(body=b"[" * 5000 + b"]" * 5000)
    def run(body: bytes) -> None:
        before = db_snapshot(session_factory)
        response = client.post("/v1/documents", content=body, headers=headers)
        tally("documents", response.status_code)
        assert response.status_code in {200, 202, 207, 400, 409, 413, 422}, response.text
        response.json()  # always a JSON body
        if response.status_code in {400, 409, 413, 422}:
            assert db_snapshot(session_factory) == before

    run()
    assert count_report["documents"] >= EXAMPLES
    # the generator reaches every kind of answer, not just one kind of refusal
    assert {202, 400, 422} <= set(STATUSES["documents"])


def test_malformed_callbacks_never_500_and_refusals_store_nothing(
    database_url: str, session_factory: sessionmaker[Session], count_report: dict[str, int]
) -> None:
    client = make_client(database_url, session_factory)
    client.post("/v1/documents", content=bill_json(make_bill("F-1")), headers=auth_headers())
    url = f"/callbacks/kingdee/{CALLBACK_SECRET}"

    @FUZZ
    @given(body=callback_bodies())
    @example(body=b'{"interfaceCode":"INVOICE.OPEN","data":{"billNo":"F-1","orderNo":"\\u0000"}}')
    @example(body=b'{"interfaceCode":"INVOICE.OPEN","data":{"billNo":"\\ud800"}}')
    @example(body=b'{"interfaceCode":"INVOICE.OPEN","data":"' + b"A" * 10 + b'"}')
    def run(body: bytes) -> None:
        before = db_snapshot(session_factory)
        response = client.post(url, content=body)
        tally("callbacks", response.status_code)
        assert response.status_code in {200, 400, 413}, response.text
        if response.status_code == 200:
            assert response.json() == CALLBACK_ACK
        else:
            assert response.json()["error"]["code"] in {"bad_callback", "body_too_large"}
            assert db_snapshot(session_factory) == before

    run()
    assert count_report["callbacks"] >= EXAMPLES
    assert {200, 400} <= set(STATUSES["callbacks"])


def test_wrong_secrets_and_keys_never_reach_the_database(
    database_url: str, session_factory: sessionmaker[Session], count_report: dict[str, int]
) -> None:
    client = make_client(database_url, session_factory)
    rng = random.Random(7)

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(
        secret=st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1),
        key=st.text(alphabet=string.printable.strip(), max_size=40),
    )
    def run(secret: str, key: str) -> None:
        if secret == CALLBACK_SECRET:
            return
        before = db_snapshot(session_factory)
        path = "/callbacks/kingdee/" + secret
        callback = client.post(path, content=b'{"interfaceCode":"INVOICE.OPEN","data":"e30="}')
        header = {"Authorization": f"Bearer {key}"}
        document = client.post(
            "/v1/documents", content=bill_json(make_bill(f"Q-{rng.random()}")), headers=header
        )
        tally("callbacks", callback.status_code)
        tally("documents", document.status_code)
        assert callback.status_code in {404, 405}, (path, callback.status_code)
        assert document.status_code == 401
        assert db_snapshot(session_factory) == before

    run()


def test_the_snapshot_sees_a_document_changed_in_place(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    """The refusal check is not just row counts: an in-place change shows in the snapshot."""
    client = make_client(database_url, session_factory)
    posted = client.post(
        "/v1/documents", content=bill_json(make_bill("SNAP-1")), headers=auth_headers()
    )
    assert posted.status_code == 202, posted.text
    before = db_snapshot(session_factory)
    assert any(row[0] for row in before.documents)
    with session_factory.begin() as session:
        document = session.scalars(select(Document).where(Document.bill_no == "SNAP-1")).one()
        document.version += 1
    after = db_snapshot(session_factory)
    assert after.counts == before.counts
    assert after != before
    with session_factory.begin() as session:
        document = session.scalars(select(Document).where(Document.bill_no == "SNAP-1")).one()
        document.content_hash = "0" * 64
        document.version -= 1
    assert db_snapshot(session_factory) != before
