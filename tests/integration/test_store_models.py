"""Column types, constraints, the ledger's masking, and the engine/unit-of-work plumbing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from store.db import is_postgres, make_engine, unit_of_work
from store.ledger import mask_secrets, record_cloud_call
from store.models import CallbackInbox, CloudCall, Document, Invoice

MakeDocument = Callable[..., Document]


def fresh(session_factory: sessionmaker[Session], document_id: int) -> Document:
    with session_factory() as session:
        document = session.get(Document, document_id)
        assert document is not None
        return document


# --- money, time, JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount", ["0.01", "0.10", "113.00", "-56.50", "1234567890.99", "9999999999999.99"]
)
def test_money_round_trips_exactly_as_decimal(
    session_factory: sessionmaker[Session], make_document: MakeDocument, amount: str
) -> None:
    document = make_document(total_amount=Decimal(amount), total_tax=Decimal(amount))
    back = fresh(session_factory, document.id)
    assert isinstance(back.total_amount, Decimal)
    assert back.total_amount == Decimal(amount)
    assert str(back.total_tax) == amount  # two places, always


def test_money_gets_two_places_but_is_never_rounded_by_storage(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document(total_amount=Decimal("10"), total_tax=Decimal("1.3"))
    back = fresh(session_factory, document.id)
    assert (str(back.total_amount), str(back.total_tax)) == ("10.00", "1.30")
    with pytest.raises((ValueError, StatementError), match="two decimals"):
        make_document(total_amount=Decimal("10.005"))


def test_money_refuses_floats(db_session: Session, make_document: MakeDocument) -> None:
    with pytest.raises((TypeError, StatementError), match="Decimal"):
        make_document(total_amount=0.1)


def test_timestamps_come_back_aware_utc(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    beijing = timezone(timedelta(hours=8))
    local = datetime(2026, 5, 1, 9, 30, tzinfo=beijing)
    document = make_document(next_poll_at=local)
    back = fresh(session_factory, document.id)
    assert back.next_poll_at == local
    assert back.next_poll_at is not None and back.next_poll_at.utcoffset() == timedelta(0)
    assert back.created_at.tzinfo is not None


def test_naive_timestamps_are_refused(make_document: MakeDocument) -> None:
    with pytest.raises((ValueError, StatementError), match="naive"):
        make_document(next_poll_at=datetime(2026, 5, 1, 9, 30))


def test_timestamp_ordering_is_by_instant_across_offsets(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    early_in_beijing = datetime(2026, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=8)))  # 02:00Z
    later_in_utc = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
    a = make_document(next_poll_at=later_in_utc)
    b = make_document(next_poll_at=early_in_beijing)
    with session_factory() as session:
        order = session.scalars(select(Document.id).order_by(Document.next_poll_at)).all()
    assert list(order) == [b.id, a.id]


def test_payload_keeps_decimals_as_strings(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    payload = {"billDetail": [{"amount": Decimal("100.10"), "taxRate": Decimal("0.13")}]}
    document = make_document(payload=payload)
    back = fresh(session_factory, document.id)
    assert back.payload == {"billDetail": [{"amount": "100.10", "taxRate": "0.13"}]}


def test_json_columns_are_jsonb_on_postgres(engine: Engine) -> None:
    if not is_postgres(engine):
        pytest.skip("JSONB is PostgreSQL's")
    with engine.connect() as conn:
        kinds = conn.execute(
            text(
                "SELECT table_name, data_type FROM information_schema.columns"
                " WHERE column_name IN ('payload', 'raw') ORDER BY table_name"
            )
        ).all()
    assert {kind for _, kind in kinds} == {"jsonb"}


# --- constraints --------------------------------------------------------------------------


def test_one_current_revision_per_bill(make_document: MakeDocument) -> None:
    make_document(bill_no="SO-1")
    with pytest.raises(IntegrityError):
        make_document(bill_no="SO-1", revision=2)  # both current


def test_revision_numbers_are_unique_per_bill(make_document: MakeDocument) -> None:
    make_document(bill_no="SO-2", is_current=False)
    with pytest.raises(IntegrityError):
        make_document(bill_no="SO-2")  # revision 1 again


def test_unknown_status_is_refused_by_the_database(make_document: MakeDocument) -> None:
    with pytest.raises(IntegrityError):
        make_document("issued")


def test_invoice_numbers_are_unique_even_without_a_code(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoiced")
    with session_factory() as session:
        session.add(
            Invoice(
                document_id=document.id,
                invoice_code=None,  # 数电: no code
                invoice_num="24332000000012345678",
                order_no="",
                total_amount=Decimal("100.00"),
                invoice_date=date(2026, 5, 1),
                raw={"totalAmount": Decimal("100.00")},
            )
        )
        session.commit()
        stored = session.scalars(select(Invoice)).one()
        assert (stored.invoice_code, stored.order_no) == ("", None)
        assert stored.raw == {"totalAmount": "100.00"}
    with session_factory() as session:
        session.add(
            Invoice(document_id=document.id, invoice_code="", invoice_num="24332000000012345678")
        )
        with pytest.raises(IntegrityError):
            session.commit()
    with session_factory() as session:
        # Failed issuances carry no number and no order: several may exist.
        session.add_all(
            [
                Invoice(document_id=document.id, issue_error_message="税局登录失效"),
                Invoice(document_id=document.id, issue_error_message="授信额度不足"),
            ]
        )
        session.commit()


def test_order_numbers_are_unique_when_present(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoiced")
    with session_factory() as session:
        session.add(Invoice(document_id=document.id, order_no="ORD-1", invoice_num="1"))
        session.commit()
        session.add(Invoice(document_id=document.id, order_no="ORD-1", invoice_num="2"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_callbacks_are_deduplicated(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(CallbackInbox(dedupe_key="SO-1:243320001", raw_body=b'{"a":1}'))
        session.commit()
        session.add(CallbackInbox(dedupe_key="SO-1:243320001", raw_body=b'{"a":1}'))
        with pytest.raises(IntegrityError):
            session.commit()


def test_foreign_keys_are_enforced(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(Invoice(document_id=987654, invoice_num="x"))
        with pytest.raises(IntegrityError):
            session.commit()


# --- ledger -------------------------------------------------------------------------------

MASKING = [
    ('{"appId": "a1", "appSecret": "s3cr3t"}', '{"appId": "a1", "appSecret": "***"}'),
    ('{"appSecuret":"s3cr3t"}', '{"appSecuret":"***"}'),
    ('{"access_token": "ACC_abcdef"}', '{"access_token": "***"}'),
    ('{"apptoken": "uuid-1"}', '{"apptoken": "***"}'),
    (
        "POST /kapi/app/sim/openApi?access_token=ACC_x1&x=1",
        "/kapi/app/sim/openApi?access_token=***&x=1",
    ),
    ("headers: access_token: ACC_x1", "access_token: ***"),
    ("Authorization: Bearer abc.def", "Authorization: ***"),
    ("bearer abc.def", "bearer ***"),
    ("password=hunter2 user=13800000000", "password=*** user=13800000000"),
    ("url https://bridge/callbacks/kingdee/cb-secret-1?x", "/callbacks/kingdee/***?x"),
]


@pytest.mark.parametrize(("raw", "masked_part"), MASKING)
def test_mask_secrets(raw: str, masked_part: str) -> None:
    masked = mask_secrets(raw)
    assert masked_part in masked
    for secret in ("s3cr3t", "ACC_", "uuid-1", "abc.def", "hunter2", "cb-secret-1"):
        assert secret not in masked


def test_mask_secrets_leaves_ordinary_text_alone() -> None:
    text_ = "单据编号SO-1已存在 errorCode=-10009 billNo=SO-1 totalAmount=113.00"
    assert mask_secrets(text_) == text_


def test_cloud_call_rows_are_masked_however_they_are_written(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        record_cloud_call(
            session,
            tenant="acme",
            interface="getAppToken",
            outcome="auth_error",
            http_status=200,
            error_code="appSecret_error",
            message='{"appSecret": "s3cr3t", "message": "第三方应用校验失败"}',
            latency_ms=12,
        )
        session.add(
            CloudCall(
                tenant="acme",
                interface="BILL.PUSH",
                outcome="ok",
                message="?access_token=ACC_zz",
            )
        )
        session.commit()
    with session_factory() as session:
        messages = session.scalars(select(CloudCall.message).order_by(CloudCall.id)).all()
    assert all(m is not None and "s3cr3t" not in m and "ACC_zz" not in m for m in messages)
    assert messages[0] is not None and "第三方应用校验失败" in messages[0]


# --- engine and unit of work --------------------------------------------------------------


def test_unit_of_work_commits_on_success_and_rolls_back_on_error(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document()
    with unit_of_work(session_factory) as session:
        loaded = session.get(Document, document.id)
        assert loaded is not None
        loaded.last_error_message = "kept"
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        loaded = session.get(Document, document.id)
        assert loaded is not None
        loaded.last_error_message = "lost"
        session.flush()
        raise RuntimeError("boom")
    assert fresh(session_factory, document.id).last_error_message == "kept"


def test_sqlite_engine_settings(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/settings.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
        assert not is_postgres(engine)
    finally:
        engine.dispose()


def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path: object) -> None:
    # BEGIN IMMEDIATE: a second transaction cannot even start while one is open.
    engine = make_engine(f"sqlite:///{tmp_path}/locks.db", sqlite_busy_timeout_ms=50)
    try:
        with engine.connect() as first, engine.connect() as second:
            first.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            first.commit()
            first.exec_driver_sql("SELECT count(*) FROM t").scalar()  # read-only, yet locked
            with pytest.raises(Exception, match="locked"):
                second.exec_driver_sql("SELECT count(*) FROM t").scalar()
    finally:
        engine.dispose()


def test_unsupported_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://localhost/x")
