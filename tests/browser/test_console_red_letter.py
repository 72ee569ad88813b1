"""The console's document page shows the red-letter (红冲) links: a red document names its
original, an original lists its red documents with their states; each is a link."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Console

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SELLER = "91330106MA2H07XK4J"


def test_the_document_page_links_a_red_document_and_its_original(
    console: Console, make_document: Any
) -> None:
    original = make_document(
        status="invoiced", bill_no="HC-1", tenant="demo", seller_tax_id=SELLER,
        total_amount=Decimal("100.00"), payload={"billNo": "HC-1"},
    )  # fmt: skip
    make_document(
        status="pushed", bill_no="HC-1-R1", tenant="demo", seller_tax_id=SELLER,
        total_amount=Decimal("-40.00"), original_document_id=original.id,
        payload={"billNo": "HC-1-R1", "invoiceProperty": "1", "redReason": "4",
                 "originalInvoiceNumber": "26442218719767000001"},
    )  # fmt: skip

    page = console.login("li")
    console.ready()
    page.goto(f"{console.url}/console/#/documents/HC-1")
    console.ready()
    reds = page.locator("#doc-red-documents")
    expect(reds.locator("a.bill")).to_have_text("HC-1-R1")
    expect(reds.locator(".badge")).to_have_attribute("data-status", "pushed")
    expect(reds).to_contain_text("-40.00")
    expect(page.locator("#doc-original")).to_have_count(0)

    reds.locator("a.bill").click()
    console.ready()
    expect(page.locator("#doc-original a.bill")).to_have_text("HC-1")
    expect(page.locator("#doc-original .badge")).to_have_attribute("data-status", "invoiced")
    expect(page.locator("#doc-red-documents")).to_have_count(0)
