"""Helpers for tests of producers (and of anything that drives the bridge's front door).

| name | what |
|---|---|
| ``API_KEY``, ``CALLBACK_SECRET`` | the key and callback secret of ``bridge_settings`` |
| ``SELLER_DEMO``, ``SELLER_DEMO_2``, ``SELLER_SHOP`` | seller tax ids of the two test tenants |
| ``bridge_tenants()`` | tenants ``demo`` (per-bill callbacks) and ``shop`` (per-invoice) |
| ``bridge_settings(database_url, **overrides)`` | ``Settings`` for tests (environment test) |
| ``make_bill(bill_no, seller=..., lines=1, **fields)`` | a valid ERP document (dict, Decimals) |
| ``bill_json(bill)`` | the document as request bytes (exact numbers) |
| ``build_test_components(settings, sessions, ...)`` | ``Components`` with a fake enqueuer |
| ``callback_body(items, style=..., interface=...)`` | a Kingdee callback body as bytes |
| ``auth_headers(key)`` | ``{"Authorization": "Bearer <key>"}`` |
| ``run_cli(components, *args)`` | ``fapiao <args>`` in process with these components |
| ``write_tenants_toml(path, tenants)`` | a tenants TOML file (for ``FAPIAO_TENANTS_FILE``) |
| ``add_view_history(session, id)`` | an issued invoice, a push ledger row and a callback of |
| | one document (every kind a document view's timeline shows) |

Nothing here talks to a network; a fake Redis is used unless one is given.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from sqlalchemy.orm import Session, sessionmaker

from producers.bootstrap import Components
from schemas.kingdee import InvoiceItem, build_callback
from schemas.money import dumps_exact
from schemas.settings import Settings
from schemas.tenants import SECRET_KEYS, TenantsFile
from store.models import CallbackInbox, CloudCall, Invoice
from worker.enqueue import Enqueuer, RecordingEnqueuer

__all__ = [
    "API_KEY",
    "CALLBACK_SECRET",
    "SELLER_DEMO",
    "SELLER_DEMO_2",
    "SELLER_SHOP",
    "add_view_history",
    "auth_headers",
    "bill_json",
    "bridge_settings",
    "bridge_tenants",
    "build_test_components",
    "callback_body",
    "make_bill",
    "run_cli",
    "write_tenants_toml",
]

API_KEY: Final = "test-api-key-5f1c2a9e7b"
CALLBACK_SECRET: Final = "cb-secret-8d3e41f0a2c6"
SELLER_DEMO: Final = "91330106MA2H07XK4J"
SELLER_DEMO_2: Final = "91310000MA1FL0TEST"
SELLER_SHOP: Final = "91440300MA5G9SHOPX"


def bridge_tenants() -> TenantsFile:
    def tenant(name: str, code: str, sellers: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": f"http://127.0.0.1:9/{name}",
            "app_id": f"app-{name}",
            "app_secret": f"secret-{name}-4b7e0c2d9a",
            "account_id": "1900000000000000001",
            "user": "fapiao-bridge",
            "usertype": "UserName",
            "business_system_code": code,
            "seller_tax_ids": sellers,
        }

    return TenantsFile.model_validate(
        {
            "tenants": [
                tenant("demo", "3std1TESTERP", [SELLER_DEMO, SELLER_DEMO_2]),
                tenant("shop", "SHOPERP01", [SELLER_SHOP]),
            ]
        }
    )


def bridge_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "api_keys": [API_KEY],
        "callback_secret": CALLBACK_SECRET,
    }
    values.update(overrides)
    return Settings(**values)


def make_bill(
    bill_no: str, *, seller: str = SELLER_DEMO, lines: int = 1, **fields: Any
) -> dict[str, Any]:
    """A valid 数电普票 bill: ``lines`` lines of 100.00 at 6 % (tax 6.00 each)."""
    detail = [
        {
            "detailId": f"{bill_no}-{index + 1}",
            "lineProperty": 2,
            "goodsName": "技术服务费",
            "revenueCode": "3040201010000000000",
            "taxRate": "0.06",
            "amount": Decimal("100.00"),
            "taxAmount": Decimal("6.00"),
            "quantity": Decimal("1"),
            "price": Decimal("100.00"),
            "units": "项",
        }
        for index in range(lines)
    ]
    bill: dict[str, Any] = {
        "billNo": bill_no,
        "billDate": "2025-09-05",
        "invoiceType": "10xdp",
        "includeTaxFlag": "0",
        "totalAmount": Decimal("100.00") * lines,
        "buyerName": "杭州西溪文化传媒有限公司",
        "buyerTaxpayerId": "91330106MA2CRW5N99",
        "sellerTaxpayerId": seller,
        "sellerName": "杭州云帆智能科技有限公司",
        "billDetail": detail,
    }
    bill.update(fields)
    return bill


def bill_json(bill: Any) -> bytes:
    return dumps_exact(bill).encode("utf-8")


def auth_headers(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def build_test_components(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    enqueuer: Enqueuer | None = None,
    tenants: TenantsFile | None = None,
    redis: Any | None = None,
    broker_redis: Any | None = None,
) -> Components:
    """Components around a test's session factory; fake Redis unless one is given."""
    if redis is None or broker_redis is None:
        import fakeredis

        server = fakeredis.FakeServer()
        redis = redis if redis is not None else fakeredis.FakeRedis(server=server)
        broker_redis = broker_redis if broker_redis is not None else redis
    return Components(
        settings,
        tenants or bridge_tenants(),
        sessions,
        enqueuer if enqueuer is not None else RecordingEnqueuer(),
        redis,
        broker_redis,
    )


def callback_body(
    items: list[dict[str, Any]],
    *,
    style: str = "per_bill",
    interface: str = "INVOICE.OPEN",
) -> bytes:
    """A callback as the cloud sends it (``data`` base64), from invoice item dicts."""
    parsed = [InvoiceItem.model_validate(item) for item in items]
    body = build_callback(interface, parsed, style)  # type: ignore[arg-type]
    return dumps_exact(body).encode("utf-8")


def run_cli(components: Components, *args: str, input: str | None = None) -> Any:
    """``fapiao <args>`` in process (``typer.testing.CliRunner``) with ``components``."""
    from typer.testing import CliRunner

    from producers.cli import CliContext, app

    context = CliContext(
        load_settings=lambda: components.settings, build_components=lambda _: components
    )
    return CliRunner().invoke(app, list(args), obj=context, input=input, env={"COLUMNS": "220"})


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):  # e.g. the [tenants.cloud] declarations, as an inline table
        return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_tenants_toml(path: str | Path, tenants: TenantsFile | None = None) -> Path:
    """Write ``tenants`` (default ``bridge_tenants()``) as a tenants TOML file."""
    target = Path(path)
    blocks = []
    for tenant in (tenants or bridge_tenants()).tenants:
        lines = ["[[tenants]]"]
        for name, value in tenant.model_dump(mode="json").items():
            if value is None:
                continue
            if name in SECRET_KEYS:
                secret = getattr(tenant, name)
                value = secret.get_secret_value()
            lines.append(f"{name} = {_toml(value)}")
        blocks.append("\n".join(lines))
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return target


def add_view_history(session: Session, document_id: int, *, push_message: str = "ok") -> None:
    """Add (uncommitted) an issued invoice, a push ledger row and a callback of a document."""
    session.add(
        Invoice(
            document_id=document_id,
            order_no="ORD-1",
            invoice_code="",
            invoice_num="25332000000000000001",
            invoice_type="10xdp",
            invoice_status="0",
            total_amount=Decimal("100.00"),
            total_tax_amount=Decimal("6.00"),
            include_tax_amount=Decimal("106.00"),
            invoice_date=date(2025, 9, 6),
            invoice_pdf_file_url="https://files.example/inv.pdf",
        )
    )
    session.add(
        CloudCall(
            tenant="demo",
            document_id=document_id,
            interface="BILL.PUSH",
            request_id="r-1",
            attempt=1,
            http_status=200,
            error_code="0",
            message=push_message,
            outcome="accepted",
            latency_ms=12,
        )
    )
    session.add(
        CallbackInbox(dedupe_key="k-1", raw_body=b"{}", style="per_bill", document_id=document_id)
    )
