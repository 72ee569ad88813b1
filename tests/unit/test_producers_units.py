"""Pure pieces of producers: body shapes, tenant resolution, dedupe keys, file reading, --since."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from producers.callbacks import callback_bills, callback_dedupe_key, unstorable_text
from producers.cli import parse_since
from producers.http import ApiError, ApiKeys, documents_of, parse_json_body
from producers.intake import Intake, SubmitOutcome, resolve_tenant
from producers.reading import Loaded, SourceError, load_documents
from producers.testing import (
    API_KEY,
    SELLER_DEMO,
    SELLER_SHOP,
    bill_json,
    bridge_tenants,
    callback_body,
    make_bill,
)
from schemas.erp import validate_bill
from schemas.kingdee import parse_callback
from worker import queues
from worker.enqueue import (
    RecordingEnqueuer,
    push_message,
    push_messages,
    reconcile_message,
    withdraw_message,
)

# ------------------------------------------------------------------ request bodies


def test_parse_json_body_reads_numbers_exactly() -> None:
    value = parse_json_body(b'{"a": 0.1, "b": 10, "c": 1.10}')
    assert value == {"a": Decimal("0.1"), "b": 10, "c": Decimal("1.10")}
    assert str(value["c"]) == "1.10"


@pytest.mark.parametrize("raw", [b"", b"{", b"\xc3\x28", b"NaN", b"[" * 50_000])
def test_parse_json_body_refuses_with_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json_body(raw)
    assert caught.value.status == 400
    assert caught.value.code == "malformed_json"


def test_documents_of_accepts_the_three_shapes() -> None:
    one = {"billNo": "A"}
    assert documents_of(one) == ([one], False)
    assert documents_of([one, one]) == ([one, one], True)
    assert documents_of({"documents": [one]}) == ([one], True)


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        ("text", 400, "bad_shape"),
        ([], 400, "empty_batch"),
        ({"documents": {}}, 400, "bad_batch"),
        ([{}] * 1001, 413, "batch_too_large"),
    ],
)
def test_documents_of_refuses_other_shapes(value: Any, status: int, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        documents_of(value)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_api_keys_name_the_matching_key_and_refuse_others() -> None:
    from fastapi.security import HTTPAuthorizationCredentials

    keys = ApiKeys([b"first-key-1234", API_KEY.encode()], open_without_keys=False)

    def bearer(token: str) -> HTTPAuthorizationCredentials:
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)

    assert keys.actor_for(bearer(API_KEY)) == "api:key2"
    for wrong in (None, bearer(""), bearer(API_KEY[:-1]), bearer(API_KEY + " ")):
        with pytest.raises(ApiError) as caught:
            keys.actor_for(wrong)
        assert caught.value.status == 401
    assert ApiKeys([], open_without_keys=True).actor_for(None) == "api"
    with pytest.raises(ApiError):
        ApiKeys([], open_without_keys=False).actor_for(None)


# ------------------------------------------------------------------ tenants


@pytest.mark.parametrize(
    ("seller", "named", "expected"),
    [
        (SELLER_DEMO, None, ("demo", SELLER_DEMO)),
        (SELLER_SHOP, None, ("shop", SELLER_SHOP)),
        (SELLER_SHOP, "shop", ("shop", SELLER_SHOP)),
        ("91110000UNKNOWN001", None, "unknown_seller"),
        ("91110000UNKNOWN001", "demo", "unknown_seller"),
        (SELLER_SHOP, "demo", "tenant_mismatch"),
        (SELLER_DEMO, "nobody", "unknown_tenant"),
    ],
)
def test_resolve_tenant(seller: str, named: str | None, expected: Any) -> None:
    bill = validate_bill(make_bill("T-1", seller=seller))
    resolved = resolve_tenant(bill, bridge_tenants(), named)
    if isinstance(expected, tuple):
        assert resolved == expected
    else:
        assert getattr(resolved, "rule", None) == expected


def test_org_code_only_bills_take_the_only_tenant_or_need_one_named() -> None:
    from schemas.tenants import TenantsFile

    bill = validate_bill(make_bill("T-2", sellerTaxpayerId=None, orgCode="ORG-1"))
    two = bridge_tenants()
    one = TenantsFile(tenants=[two.tenants[1]])

    assert getattr(resolve_tenant(bill, two, None), "rule", None) == "tenant_required"
    assert resolve_tenant(bill, two, "demo") == ("demo", "ORG-1")
    assert resolve_tenant(bill, one, None) == ("shop", "ORG-1")


def test_an_intake_without_a_database_still_refuses_invalid_documents() -> None:
    intake = Intake(None, bridge_tenants(), RecordingEnqueuer())
    result = intake.submit({"billNo": "X"})
    assert result.outcome is SubmitOutcome.invalid
    with pytest.raises(RuntimeError, match="no database"):
        intake.submit(make_bill("X-1"))


# ------------------------------------------------------------------ callbacks


def issued(number: str, **fields: Any) -> dict[str, Any]:
    return {"billNo": "B-1", "invoiceNum": number, "orderNo": f"O-{number}", **fields}


def test_the_dedupe_key_ignores_encoding_and_order_but_not_the_fact() -> None:
    a = parse_callback(callback_body([issued("1"), issued("2")]))
    b = parse_callback(callback_body([issued("2"), issued("1")]))
    cancel = parse_callback(callback_body([issued("1"), issued("2")], interface="INVOICE.CANCEL"))
    other = parse_callback(callback_body([issued("1"), issued("3")]))

    assert callback_dedupe_key(a) == callback_dedupe_key(b)
    assert callback_dedupe_key(a) != callback_dedupe_key(cancel)
    assert callback_dedupe_key(a) != callback_dedupe_key(other)


def test_failed_issuances_are_told_apart_by_their_reason() -> None:
    first = parse_callback(callback_body([{"billNo": "B-1", "issueErrorMessage": "税局登录失效"}]))
    second = parse_callback(callback_body([{"billNo": "B-1", "issueErrorMessage": "授信额度不足"}]))
    assert callback_dedupe_key(first) != callback_dedupe_key(second)


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=6))
def test_dedupe_keys_always_fit_the_column(order_numbers: list[str]) -> None:
    items = [{"billNo": "B", "orderNo": number, "invoiceNum": "1"} for number in order_numbers]
    key = callback_dedupe_key(parse_callback(callback_body(items)))
    assert len(key) <= 200


def test_callback_bills_and_unstorable_text() -> None:
    parsed = parse_callback(callback_body([issued("1", sellerTaxpayerId=SELLER_DEMO.lower())]))
    assert callback_bills(parsed) == {("B-1", SELLER_DEMO)}
    assert unstorable_text(parsed) is None
    nul = parse_callback(callback_body([issued("1", remark="a\x00b")]))
    assert unstorable_text(nul) == "a text value contains a NUL character"


# ------------------------------------------------------------------ files


def test_load_documents_reads_json_json_lines_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"[" + bill_json(make_bill("A")) + b"]")
    (tmp_path / "b.ndjson").write_bytes(bill_json(make_bill("B")) + b"\n{oops\n")
    single = tmp_path / "c.txt"
    single.write_bytes(bill_json(make_bill("C")) + b"\n" + bill_json(make_bill("D")))

    items = list(load_documents([str(tmp_path), str(single)]))

    loaded = [item for item in items if isinstance(item, Loaded)]
    errors = [item for item in items if isinstance(item, SourceError)]
    assert [item.document["billNo"] for item in loaded] == ["A", "B", "C", "D"]
    assert loaded[0].document["totalAmount"] == Decimal("100.00")  # exact, never float
    assert [e.source.rsplit("/", 1)[-1] for e in errors] == ["b.ndjson:2"]


def test_load_documents_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"documents": [{"billNo": "S"}]}'))
    [item] = list(load_documents(["-"]))
    assert isinstance(item, Loaded) and item.source == "<stdin>#1"


# ------------------------------------------------------------------ --since


def test_parse_since_takes_durations_and_iso_dates() -> None:
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-01-01", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("2026-01-01T08:00+08:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_since("last tuesday", now)


# ------------------------------------------------------------------ the fake enqueuer


def test_the_recording_enqueuer_records_ids_only_and_can_fail() -> None:
    fake = RecordingEnqueuer()
    sent = fake.send(
        [push_message(1, "B-1", "demo"), withdraw_message(2, "B-2", "shop"), reconcile_message(3)]
    )
    assert sent == 3
    assert [item.task for item in fake.sent] == [queues.PUSH, queues.WITHDRAW, queues.RECONCILE]
    assert fake.of(queues.RECONCILE) == [{"inbox_id": 3}]
    assert fake.send([]) == 0
    assert RecordingEnqueuer(fail=True).send([push_message(1, "B", "demo")]) == 0


def test_the_recording_enqueuer_lists_every_owed_push_batched_or_not() -> None:
    fake = RecordingEnqueuer()
    owed = [(1, "B-1", "demo"), (2, "B-2", "demo"), (3, "B-3", "shop")]
    assert fake.send(push_messages(owed, 2)) == 2
    assert [m.task for m in fake.sent] == [queues.PUSH_BATCH, queues.PUSH]
    assert fake.pushes() == [{"document_id": d, "bill_no": b, "tenant": t} for d, b, t in owed]
