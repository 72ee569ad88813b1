"""The published notification schema matches what the worker really writes to erp_outbox."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producers.intake import Intake
from producers.json_schemas import notification_schema
from producers.testing import bridge_tenants, make_bill
from schemas.tenants import TenantsFile
from store.claims import claim_for_push
from store.columns import utcnow
from store.lifecycle import transition
from store.models import ErpOutbox, Invoice
from store.states import Event
from worker.enqueue import RecordingEnqueuer

_TYPES = {
    "string": str,
    "integer": int,
    "null": type(None),
    "array": list,
    "object": dict,
    "boolean": bool,
}


def _is(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    return not isinstance(value, bool) and isinstance(value, _TYPES[kind])


def conforms(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The few JSON Schema keywords the notification schema uses (no jsonschema installed)."""
    problems: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, kind) for kind in allowed):
            problems.append(f"{path}: {value!r} is not {allowed}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in enum")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        problems.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}: missing {name}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problems += conforms(item, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}: unexpected {name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += conforms(item, schema["items"], f"{path}[{index}]")
    return problems


def test_the_workers_notification_payload_fits_the_published_schema(
    session_factory: sessionmaker[Session],
) -> None:
    from worker.services.erp_outbox import owe_notification

    raw = bridge_tenants().model_dump(mode="python")
    raw["tenants"][0]["erp_webhook_url"] = "http://127.0.0.1:9/webhook"
    tenants = TenantsFile.model_validate(raw)
    intake = Intake(session_factory, tenants, RecordingEnqueuer())
    document_id = intake.submit(make_bill("NT-1")).document_id
    assert document_id is not None
    runtime = SimpleNamespace(tenant=tenants.by_name, clock=utcnow)

    with session_factory() as session:
        claim_for_push(session, document_id, lease_seconds=60)
        pushed = transition(session, document_id, Event.accepted, actor="test")
        issued = transition(session, document_id, Event.issued_all, actor="test")
        session.add(
            Invoice(
                document_id=document_id,
                order_no="ORD-NT-1",
                invoice_code="",
                invoice_num="25330000000000000777",
                invoice_type="10xdp",
                invoice_status="0",
                total_amount=Decimal("100.00"),
                total_tax_amount=Decimal("6.00"),
                include_tax_amount=Decimal("106.00"),
                invoice_date=date(2025, 9, 6),
                invoice_pdf_file_url="https://files.example/x.pdf",
            )
        )
        session.flush()
        followups = owe_notification(
            cast(Any, runtime), session, document_id, [pushed, issued], reason="all issued"
        )
        session.commit()
        [row] = session.scalars(select(ErpOutbox)).all()
        payload = row.payload

    assert followups, "the worker should owe a notification for a tenant with a webhook"
    assert payload["event"] == "document.invoiced"
    assert payload["invoices"][0]["invoiceNum"] == "25330000000000000777"
    assert conforms(payload, notification_schema()) == []
    assert conforms({**payload, "status": "lost", "revision": "1"}, notification_schema())
    # every member the worker writes is described (nothing undocumented reaches the ERP)
    assert set(payload) <= set(notification_schema()["properties"])
