"""The operator console in a real browser: login, find, read, act, and what must be refused.

Each test drives Chromium against a live API on the test database; documents are planted in
the states a test needs. Actions are checked in the page AND in the database (events, actor).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from store.models import Document, DocumentEvent
from tests.browser.conftest import Console

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REASON_ZH = "价税合计金额不对（totalAmount 与明细合计不符）"


def _plant(make_document: Any, bill_no: str, status: str, **columns: Any) -> Document:
    values: dict[str, Any] = {
        "tenant": "demo",
        "seller_tax_id": "91330106MA2H07XK4J",
        "total_incl_tax": Decimal("106.00"),
        "payload": {"billNo": bill_no, "buyerName": "杭州西溪文化传媒有限公司"},
    }
    values.update(columns)
    return make_document(status=status, bill_no=bill_no, **values)


def _status(console: Console, bill_no: str) -> str:
    with console.sessions() as session:
        return session.scalars(select(Document.status).where(Document.bill_no == bill_no)).one()


def _events(console: Console, bill_no: str) -> list[DocumentEvent]:
    with console.sessions() as session:
        document_id = session.scalars(select(Document.id).where(Document.bill_no == bill_no)).one()
        return list(
            session.scalars(
                select(DocumentEvent)
                .where(DocumentEvent.document_id == document_id)
                .order_by(DocumentEvent.id)
            )
        )


def _enqueued_bills(console: Console) -> list[str]:
    """Bill numbers of every message the API sent (one per bill or several per batch)."""
    bills: list[str] = []
    for task in console.enqueuer.sent:
        kwargs = dict(task.kwargs)
        if "bill_no" in kwargs:
            bills.append(kwargs["bill_no"])
        bills.extend(kwargs.get("bill_nos") or [])
    return bills


def _post_from_page(console: Console, path: str, *, csrf: bool) -> dict[str, Any]:
    """A POST the page's own script could send (same origin, the session cookie attached),
    with or without the session's CSRF token."""
    result: dict[str, Any] = console.page.evaluate(
        """async ([path, csrf]) => {
            const session = await (await fetch('/console/session')).json();
            const headers = {'Content-Type': 'application/json'};
            if (csrf) headers['X-CSRF-Token'] = session.csrf_token;
            const response = await fetch(path, {
                method: 'POST', headers, credentials: 'same-origin',
                body: JSON.stringify({reason: 'forged'}),
            });
            return {status: response.status, body: await response.json()};
        }""",
        [path, csrf],
    )
    return result


def test_an_operator_finds_a_rejected_document_reads_why_replays_it_and_sees_it_move(
    console: Console, make_document: Any
) -> None:
    _plant(
        make_document,
        "CN-2026-0001",
        "rejected",
        last_error_code="1001",
        last_error_message=REASON_ZH,
    )
    _plant(make_document, "CN-2026-0002", "invoiced")

    page = console.login("li")
    expect(page.locator("#who")).to_contain_text("li")
    page.click("#nav a[data-page='documents']")
    console.ready()
    page.fill("#filter-q", "0001")
    page.click("#filter-submit")
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    row = page.locator("#documents tbody tr[data-bill='CN-2026-0001']")
    expect(row).to_contain_text(REASON_ZH)
    row.locator("a.bill").click()

    console.ready()
    expect(page.locator("#doc-status .badge")).to_have_attribute("data-status", "rejected")
    expect(page.locator("#doc-reason")).to_have_text(REASON_ZH)
    expect(page.locator("#doc-meaning")).to_contain_text("拒绝")
    expect(page.locator("#flower-link")).to_have_attribute(
        "href", "http://127.0.0.1:5555/api/tasks?search=CN-2026-0001&limit=100"
    )

    page.click("#action-replay")
    expect(page.locator("#dialog")).to_be_visible()
    page.click("#dialog-confirm")  # no reason yet: refused in the dialog
    expect(page.locator("#dialog-error")).to_be_visible()
    assert _status(console, "CN-2026-0001") == "rejected"
    page.fill("#dialog-reason", "买方已更正金额，重推")
    page.click("#dialog-confirm")

    expect(page.locator("#doc-status .badge")).to_have_attribute("data-status", "draft")
    expect(page.locator("#flash")).to_contain_text("CN-2026-0001")
    assert _status(console, "CN-2026-0001") == "draft"
    replay = _events(console, "CN-2026-0001")[-1]
    assert (replay.event, replay.actor, replay.reason) == (
        "replay",
        "console:li",
        "买方已更正金额，重推",
    )
    assert _enqueued_bills(console) == ["CN-2026-0001"]
    expect(page.locator("#timeline")).to_contain_text("console:li")


def test_bulk_replay_previews_exactly_what_the_real_run_then_does(
    console: Console, make_document: Any
) -> None:
    for index in range(3):
        _plant(make_document, f"BULK-R{index}", "rejected", last_error_message="金额不对")
    _plant(make_document, "BULK-F0", "failed", last_error_message="token refused")
    _plant(make_document, "BULK-P0", "pushed")
    _plant(make_document, "OTHER-R9", "rejected")

    page = console.login("li")
    console.ready()
    page.goto(f"{console.url}/console/#/documents?q=BULK&status=rejected&status=failed")
    console.ready()
    expect(page.locator("#documents tbody tr")).to_have_count(4)

    page.click("#bulk-replay")
    page.fill("#dialog-reason", "云端故障已恢复，批量重推")
    expect(page.locator("#dialog-confirm")).to_be_disabled()  # preview first
    page.click("#dialog-preview")
    preview = page.locator("#bulk-preview")
    expect(preview).to_be_visible()
    preview_rows = preview.locator("tbody tr")
    expect(preview_rows).to_have_count(4)
    previewed = _operation_rows(preview)
    assert {row[0] for row in previewed} == {"BULK-R0", "BULK-R1", "BULK-R2", "BULK-F0"}
    assert all(_status(console, bill) in {"rejected", "failed"} for bill, *_ in previewed)

    page.click("#dialog-confirm")
    result = page.locator("#bulk-result")
    expect(result).to_be_visible()
    done = _operation_rows(result)
    assert sorted(done) == sorted(previewed)
    for bill, *_ in done:
        assert _status(console, bill) == "draft"
    assert _status(console, "OTHER-R9") == "rejected"
    assert _status(console, "BULK-P0") == "pushed"
    assert sorted(_enqueued_bills(console)) == sorted(bill for bill, *_ in done)


def _operation_rows(table: Any) -> list[tuple[str, ...]]:
    rows = table.locator("tbody tr")
    return [
        tuple(cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts())
        for i in range(rows.count())
    ]


def test_a_viewer_sees_no_action_and_the_server_refuses_its_posts(
    console: Console, make_document: Any
) -> None:
    _plant(make_document, "VIEW-1", "rejected", last_error_message="金额不对")

    page = console.login("wang")
    console.ready()
    expect(page.locator("#who .role")).to_have_text("只读")
    page.goto(f"{console.url}/console/#/documents")
    console.ready()
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    expect(page.locator("#bulk-replay")).to_have_count(0)
    page.goto(f"{console.url}/console/#/documents/VIEW-1")
    console.ready()
    expect(page.locator("#doc-reason")).to_have_text("金额不对")
    expect(page.locator("#action-replay")).to_have_count(0)
    expect(page.locator("#action-withdraw")).to_have_count(0)

    for path in ("/v1/documents/VIEW-1/replay", "/v1/documents/VIEW-1/withdraw"):
        answer = _post_from_page(console, path, csrf=True)
        assert answer["status"] == 403, answer
        assert answer["body"]["error"]["code"] == "read_only"
    assert _status(console, "VIEW-1") == "rejected"
    assert [event.event for event in _events(console, "VIEW-1")] == []
    assert _enqueued_bills(console) == []


def test_a_forged_action_without_the_csrf_token_is_refused_and_changes_nothing(
    console: Console, make_document: Any
) -> None:
    _plant(make_document, "CSRF-1", "rejected")

    page = console.login("li")
    console.ready()
    forged = _post_from_page(console, "/v1/documents/CSRF-1/replay", csrf=False)
    assert forged["status"] == 403
    assert forged["body"]["error"]["code"] == "csrf_failed"
    assert _status(console, "CSRF-1") == "rejected"
    assert _enqueued_bills(console) == []
    # The same request with the token goes through: the refusal was the missing token.
    honest = _post_from_page(console, "/v1/documents/CSRF-1/replay", csrf=True)
    assert honest["status"] == 202, honest
    assert _status(console, "CSRF-1") == "draft"
    assert page.context.cookies()[0]["httpOnly"] is True


def test_wrong_credentials_show_the_login_page_and_change_nothing(
    console: Console, make_document: Any
) -> None:
    _plant(make_document, "LOGIN-1", "rejected")

    page = console.login("li", "not-the-password")
    expect(page.locator("#login-error")).to_have_text("账号或密码错误")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.context.cookies() == []
    page.goto(f"{console.url}/console/#/documents/LOGIN-1")
    expect(page.locator("#login-form")).to_be_visible()
    answer = page.evaluate(
        "async () => (await fetch('/v1/documents/LOGIN-1/replay', {method: 'POST'})).status"
    )
    assert answer == 401
    assert _status(console, "LOGIN-1") == "rejected"


def test_the_console_speaks_chinese_first_and_remembers_english(
    console: Console, make_document: Any
) -> None:
    _plant(make_document, "LANG-1", "failed")

    page = console.login("li")
    console.ready()
    expect(page.locator("#nav a[data-page='overview']")).to_have_text("总览")
    expect(page.locator("[data-attention='failed'] .value")).to_have_text("1")
    page.click("#lang-toggle")
    console.ready()
    expect(page.locator("#nav a[data-page='overview']")).to_have_text("Overview")
    expect(page.locator("#overview-states")).to_contain_text("failed")
    page.reload()
    console.ready()
    expect(page.locator("#nav a[data-page='documents']")).to_have_text("Documents")
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.context.cookies() == [] or all(
        cookie["name"] != "fapiao_console" for cookie in page.context.cookies()
    )


def test_the_tenants_page_shows_a_quota_hold_and_resume_releases_it(console: Console) -> None:
    from store.db import unit_of_work
    from store.models import TenantQuota
    from store.quota import QuotaGate, observe

    seller = "91330106MA2H07XK4J"
    with unit_of_work(console.sessions) as session:
        observe(session, "demo", seller, day=Decimal("24.00"), month=Decimal("887.00"),
                is_warning=True)  # fmt: skip
    with unit_of_work(console.sessions) as session:
        gate = QuotaGate.load(session, [("demo", seller)], datetime.now(UTC))
        assert gate.admit("demo", seller, Decimal("113.00")) is not None
        gate.write_holds()

    page = console.login("li")
    page.click("#nav a[data-page='tenants']")
    console.ready()
    row = page.locator("#tenants tbody tr[data-tenant='demo']")
    expect(row.locator("td.quota")).to_contain_text(f"{seller}: 24.00 / 887.00")
    expect(row.locator("td.quota")).to_contain_text("额度预警")
    expect(row.locator("td.quota")).to_contain_text("额度不足，推送暂缓至")
    page.click("#lang-toggle")
    console.ready()
    expect(row.locator("td.quota")).to_contain_text("pushes held until")
    row.locator("button[data-action='resume']").click()
    page.fill("#dialog-reason", "额度已提升")
    page.click("#dialog-confirm")
    expect(page.locator("#flash")).to_contain_text("demo")
    with console.sessions() as session:
        quota = session.get(TenantQuota, ("demo", seller))
        assert quota is not None and not quota.held and quota.source == "operator_resume"
