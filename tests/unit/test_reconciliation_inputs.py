"""The ERP's list for reconciliation (CSV and JSON, each bad line named by line, column and
rule) and the window of Asia/Shanghai days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from schemas.reconciliation import ErpBill, ErpListError, Window, parse_erp_list, previous_day


def test_csv_with_a_header_in_any_column_order() -> None:
    bills = parse_erp_list(
        "\ufefftenant,billNo,includeTaxAmount,totalAmount,sellerTaxpayerId\n"
        "demo,B-1,113.00,100,91310000SIM0000001\n"
        "\n"
        ",B-2,,5.5,\n"
    )
    assert bills == [
        ErpBill(2, "B-1", Decimal("100.00"), Decimal("113.00"), "91310000SIM0000001", "demo"),
        ErpBill(4, "B-2", Decimal("5.50"), None, None, None),
    ]


def test_json_array_or_bills_object_and_no_float() -> None:
    same = parse_erp_list('{"bills": [{"billNo": "B-1", "totalAmount": 100.10}]}')
    assert same == parse_erp_list('[{"billNo": "B-1", "totalAmount": "100.10"}]')
    assert same[0].totalAmount == Decimal("100.10")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("billNo,total\nB,1\n", "line 1, column header: unknown column(s) total"),
        ("totalAmount\n1\n", "line 1, column header: the column billNo is missing"),
        ("billNo,totalAmount\nB,1.005\n", "line 2, column totalAmount: '1.005': at most 2"),
        ("billNo,totalAmount\nB,abc\n", "line 2, column totalAmount: 'abc' is not an amount"),
        ("billNo,totalAmount\n,1\n", "line 2, column billNo: required"),
        ("billNo,totalAmount\nB,\n", "line 2, column totalAmount: give totalAmount or"),
        ("billNo,totalAmount\nB,1\nB,2\n", "line 3, column billNo: B listed twice (line 2)"),
        ("billNo,totalAmount\nB,1,2\n", "line 2, column -: 3 cells, the header has 2"),
        ('[{"billNo": "B", "amount": "1"}]', "line 1, column amount: unknown"),
        (
            '[{"billNo": "B", "totalAmount": true}]',
            "line 1, column totalAmount: True is not an amount",
        ),
        ('{"bills": 3}', "line 1, column -: JSON must be an array"),
        ("", "line 1, column -: empty file"),
    ],
)
def test_a_bad_line_is_named_with_its_column_and_rule(text: str, problem: str) -> None:
    with pytest.raises(ErpListError) as caught:
        parse_erp_list(text)
    assert problem in str(caught.value)
    assert "ERP 清单有误" in str(caught.value)


def test_every_bad_line_is_reported_at_once() -> None:
    with pytest.raises(ErpListError) as caught:
        parse_erp_list("billNo,totalAmount\nA,x\nB,1\n,2\n")
    assert [(p.line, p.column) for p in caught.value.problems] == [
        (2, "totalAmount"),
        (4, "billNo"),
    ]


def test_the_window_is_whole_shanghai_days() -> None:
    window = Window(date(2026, 12, 1), date(2026, 12, 2))
    assert window.start == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert window.end == datetime(2026, 12, 2, 16, tzinfo=UTC)
    with pytest.raises(ValueError, match="before since"):
        Window(date(2026, 12, 2), date(2026, 12, 1))
    # 17:00 UTC on the 6th is already the 7th in Shanghai: yesterday is the 6th.
    assert previous_day(datetime(2026, 12, 6, 17, tzinfo=UTC)) == Window(
        date(2026, 12, 6), date(2026, 12, 6)
    )
    assert previous_day(datetime(2026, 12, 6, 15, tzinfo=UTC)).since == date(2026, 12, 5)
