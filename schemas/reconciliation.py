"""Three-way reconciliation's data: the ERP's list, the window, and the findings (no I/O).

**The ERP list** (``parse_erp_list``): CSV with a header line, or JSON (an array of objects,
or ``{"bills": [...]}``). Columns / keys, spelled as the ERP document spells them:

| column             | required | rule                                                      |
|--------------------|----------|-----------------------------------------------------------|
| ``billNo``         | yes      | non-empty, ≤ 64 characters                                 |
| ``totalAmount``    | (a)      | money, ≤ 2 decimals: the document's ``totalAmount``        |
| ``includeTaxAmount`` | (a)    | money, ≤ 2 decimals: 价税合计                               |
| ``sellerTaxpayerId`` | no     | 销方税号; needed only when a tenant has several sellers     |
| ``tenant``         | no       | tenant name; else ``--tenant`` / the seller's tenant       |

(a) at least one of the two per line. Unknown columns are refused (a typo would otherwise
silently drop a total). A bill listed twice (same tenant, seller, billNo) is refused. Every
error names the line (CSV: the file's line number, header = 1; JSON: the item's index from
1), the column and the rule, in English and Chinese.

**The window** (``Window``): whole days ``since``..``until`` inclusive, in Asia/Shanghai
(the ERP's and the tax bureau's calendar), compared with a bill's first submission time
(revision 1's ``created_at``): ``[since 00:00 +08:00, until+1 00:00 +08:00)``.

**Findings** (``Finding``): one per disagreement, with bill number, tenant, seller, what
each side says (``erp`` / ``bridge`` / ``cloud``) and a plain reason in English and Chinese.

| kind              | meaning                                                            |
|-------------------|--------------------------------------------------------------------|
| ``not_submitted`` | in the ERP's list, never submitted to the bridge, unknown to cloud |
| ``cloud_unknown`` | the bridge says the cloud has it, the cloud does not (withdrawn    |
|                   | behind the bridge's back, never received)                          |
| ``state_mismatch``| the cloud shows a state the bridge does not (issued, voided, 红冲, |
|                   | or present while the bridge says it is not)                        |
| ``cloud_only``    | the cloud has a bill the bridge does not know (ERP-listed, pushed  |
|                   | another way; an orphan callback)                                   |
| ``total_mismatch``| the totals of two sides differ                                     |

``ORPHAN_KINDS``: the kinds an alert pages for (everything but a total mismatch is a bill
one side has and another lacks, or a state one side missed).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

from schemas.cloud_contract import (
    INVOICE_STATUS_NORMAL,
    INVOICE_STATUS_PARTIAL_RED,
    INVOICE_STATUS_RED,
    INVOICE_STATUS_VOID,
)
from schemas.money import decimal_places, loads_exact

__all__ = [
    "ERP_COLUMNS",
    "ORPHAN_KINDS",
    "REASONS",
    "SHANGHAI",
    "STATUS_WORDS",
    "ErpBill",
    "ErpListError",
    "Finding",
    "FindingKind",
    "Window",
    "parse_erp_list",
    "previous_day",
    "reason",
]

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
ERP_COLUMNS: Final = ("billNo", "totalAmount", "includeTaxAmount", "sellerTaxpayerId", "tenant")
MAX_BILL_NO: Final = 64


class FindingKind(StrEnum):
    not_submitted = "not_submitted"
    cloud_unknown = "cloud_unknown"
    state_mismatch = "state_mismatch"
    cloud_only = "cloud_only"
    total_mismatch = "total_mismatch"


ORPHAN_KINDS: Final = frozenset(
    {
        FindingKind.not_submitted,
        FindingKind.cloud_unknown,
        FindingKind.state_mismatch,
        FindingKind.cloud_only,
    }
)


@dataclass(frozen=True, slots=True)
class Window:
    """Days ``since``..``until`` (inclusive) in Asia/Shanghai (module docstring)."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError(
                f"until ({self.until}) is before since ({self.since}) / 结束日期早于开始日期"
            )

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time(), SHANGHAI).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after ``until``."""
        return datetime.combine(self.until + timedelta(days=1), time(), SHANGHAI).astimezone(UTC)

    def as_json(self) -> dict[str, str]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "timezone": "Asia/Shanghai",
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def parse_day(text: str, name: str) -> date:
    """``YYYY-MM-DD``; ValueError naming ``name`` and the rule otherwise."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{name}: {text!r} is not a date; give YYYY-MM-DD (Asia/Shanghai)"
            f" / {name} 不是有效日期，请使用 YYYY-MM-DD（北京时间）"
        ) from None


def previous_day(now: datetime) -> Window:
    """Yesterday in Asia/Shanghai, as seen at ``now`` (aware)."""
    today = now.astimezone(SHANGHAI).date()
    day = today - timedelta(days=1)
    return Window(day, day)


@dataclass(frozen=True, slots=True)
class ErpBill:
    """One line of the ERP's list."""

    line: int
    billNo: str
    totalAmount: Decimal | None = None
    includeTaxAmount: Decimal | None = None
    sellerTaxpayerId: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class ErpListProblem:
    line: int
    column: str
    rule: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.rule}"


class ErpListError(ValueError):
    """The ERP list is unusable; ``problems`` name line, column and rule (first 20 shown)."""

    def __init__(self, problems: list[ErpListProblem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(
            f"ERP list refused: {shown}{more}. Fix these lines and run again"
            f" / ERP 清单有误：请按行号、列名修正后重试"
        )


def _money(value: Any, line: int, column: str, problems: list[ErpListProblem]) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        problems.append(ErpListProblem(line, column, f"{value!r} is not an amount / 不是有效金额"))
        return None
    if isinstance(value, float):  # only from a caller's own objects: JSON text gives Decimal
        problems.append(ErpListProblem(line, column, "money is never a float; write it as text"))
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        problems.append(ErpListProblem(line, column, f"{value!r} is not an amount / 不是有效金额"))
        return None
    if not amount.is_finite() or decimal_places(amount) > 2:
        problems.append(
            ErpListProblem(line, column, f"{value!r}: at most 2 decimals / 金额最多两位小数")
        )
        return None
    return amount.quantize(Decimal("0.01"))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _rows(raw: bytes | str) -> list[tuple[int, dict[str, Any]]]:
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            value = loads_exact(stripped)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ErpListError(
                [ErpListProblem(1, "-", f"not valid JSON: {exc} / JSON 格式错误")]
            ) from None
        if isinstance(value, dict):
            value = value.get("bills")
        if not isinstance(value, list):
            raise ErpListError(
                [ErpListProblem(1, "-", 'JSON must be an array or {"bills": [...]} / 须为数组')]
            )
        rows: list[tuple[int, dict[str, Any]]] = []
        for index, item in enumerate(value, start=1):
            if not isinstance(item, dict):
                raise ErpListError([ErpListProblem(index, "-", "each bill must be an object")])
            rows.append((index, item))
        return rows
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ErpListError(
            [ErpListProblem(1, "-", "empty file; a header line is needed")]
        ) from None
    unknown = [h for h in header if h not in ERP_COLUMNS]
    if unknown or "billNo" not in header:
        rule = (
            f"unknown column(s) {', '.join(unknown)}" if unknown else "the column billNo is missing"
        )
        raise ErpListError(
            [
                ErpListProblem(
                    1, "header", f"{rule}; columns are {', '.join(ERP_COLUMNS)} / 表头列名有误"
                )
            ]
        )
    rows = []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ErpListError(
                [ErpListProblem(line, "-", f"{len(cells)} cells, the header has {len(header)}")]
            )
        rows.append((line, dict(zip(header, cells, strict=True))))
    return rows


def parse_erp_list(raw: bytes | str) -> list[ErpBill]:
    """The ERP's bills from CSV or JSON (module docstring); ``ErpListError`` when any is bad."""
    problems: list[ErpListProblem] = []
    bills: list[ErpBill] = []
    seen: dict[tuple[str | None, str | None, str], int] = {}
    for line, row in _rows(raw):
        unknown = sorted(set(row) - set(ERP_COLUMNS))
        if unknown:
            problems.append(
                ErpListProblem(line, unknown[0], f"unknown; use {', '.join(ERP_COLUMNS)}")
            )
            continue
        bill_no = _text(row.get("billNo"))
        if bill_no is None:
            problems.append(ErpListProblem(line, "billNo", "required / 单据编号必填"))
            continue
        if len(bill_no) > MAX_BILL_NO:
            problems.append(ErpListProblem(line, "billNo", f"longer than {MAX_BILL_NO}"))
            continue
        total = _money(row.get("totalAmount"), line, "totalAmount", problems)
        incl = _money(row.get("includeTaxAmount"), line, "includeTaxAmount", problems)
        if (
            total is None
            and incl is None
            and not any(p.line == line and p.column.endswith("Amount") for p in problems)
        ):
            problems.append(
                ErpListProblem(
                    line,
                    "totalAmount",
                    "give totalAmount or includeTaxAmount / 金额或价税合计至少填一项",
                )
            )
            continue
        seller, tenant = _text(row.get("sellerTaxpayerId")), _text(row.get("tenant"))
        key = (tenant, seller, bill_no)
        if key in seen:
            problems.append(
                ErpListProblem(line, "billNo", f"{bill_no} listed twice (line {seen[key]})")
            )
            continue
        seen[key] = line
        bills.append(ErpBill(line, bill_no, total, incl, seller, tenant))
    if problems:
        raise ErpListError(problems)
    return bills


# Every finding's reason, English and Chinese (``reason(key, **values)``).
REASONS: Final[dict[str, tuple[str, str]]] = {
    "not_submitted": (
        "in the ERP's list but never submitted to the bridge",
        "ERP 清单中有该单据，但从未提交到中间件",
    ),
    "not_submitted_nowhere": (
        "in the ERP's list, never submitted; its tenant or seller is not configured",
        "ERP 清单中有该单据但从未提交；其租户或销方未配置",
    ),
    "erp_and_cloud": (
        "in the ERP and in the cloud but unknown to the bridge (pushed by another way)",
        "ERP 与发票云均有该单据，但中间件不知道（经其他途径推送）",
    ),
    "orphan_callback": (
        "the cloud sent a callback for a bill the bridge does not know",
        "发票云回调了中间件不认识的单据",
    ),
    "cloud_unknown": (
        "submitted (bridge shows {status}) but unknown to the cloud: withdrawn behind the"
        " bridge's back, or never received",
        "已提交（中间件状态 {status}），但发票云查无此单：可能被绕过中间件撤回，或从未送达",
    ),
    "cloud_has_it": (
        "the cloud holds this bill, the bridge shows {status}",
        "发票云存在该单据，中间件状态为 {status}",
    ),
    "cloud_issued": (
        "cloud shows issued ({count} invoice(s)), bridge shows {status}",
        "发票云已开具 {count} 张发票，中间件状态为 {status}",
    ),
    "cloud_lists_none": (
        "bridge shows {status}, the cloud lists no issued invoice",
        "中间件状态为 {status}，发票云未列出已开发票",
    ),
    "cloud_status": (
        "cloud shows {word} (invoice {invoice}), bridge shows {status}",
        "发票云显示{word_zh}（发票 {invoice}），中间件状态为 {status}",
    ),
    "issued_total": (
        "issued includeTaxAmount (价税合计): cloud {cloud}, bridge {bridge}",
        "已开价税合计不一致：发票云 {cloud}，中间件 {bridge}",
    ),
    "erp_bridge_total": (
        "{column}: ERP {erp}, bridge {bridge}",
        "{column} 不一致：ERP {erp}，中间件 {bridge}",
    ),
    "erp_cloud_total": (
        "includeTaxAmount: ERP {erp}, cloud {cloud}",
        "价税合计不一致：ERP {erp}，发票云 {cloud}",
    ),
}
# The cloud's invoiceStatus in a reason (§10.2): words for {word} / {word_zh}.
STATUS_WORDS: Final[dict[str, tuple[str, str]]] = {
    INVOICE_STATUS_NORMAL: ("issued", "已开具"),
    INVOICE_STATUS_PARTIAL_RED: ("partly red-flushed", "部分红冲"),
    INVOICE_STATUS_RED: ("red-flushed", "已红冲"),
    INVOICE_STATUS_VOID: ("voided", "已作废"),
}
# Chinese messages of the producers' input errors.
BAD_DATE_ZH: Final = "日期参数有误，请使用 YYYY-MM-DD（北京时间）"
BAD_ERP_LIST_ZH: Final = "ERP 清单有误，请按行号和列名修正"


def reason(key: str, **values: Any) -> tuple[str, str]:
    """The English and Chinese reason ``key`` of ``REASONS`` with ``values`` filled in."""
    if "word" in values and "word_zh" not in values:
        status = str(values["word"])
        values["word"], values["word_zh"] = STATUS_WORDS.get(
            status, (f"invoiceStatus {status}", f"发票状态 {status}")
        )
    en, zh = REASONS[key]
    return en.format(**values), zh.format(**values)


@dataclass(slots=True)
class Finding:
    """One disagreement between the ERP, the bridge and the cloud (module docstring)."""

    kind: FindingKind
    bill_no: str
    tenant: str
    seller_tax_id: str | None
    reason: str
    reason_zh: str
    erp: dict[str, Any] | None = None
    bridge: dict[str, Any] | None = None
    cloud: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "billNo": self.bill_no,
            "tenant": self.tenant,
            "sellerTaxpayerId": self.seller_tax_id,
            "reason": self.reason,
            "reason_zh": self.reason_zh,
            "erp": self.erp,
            "bridge": self.bridge,
            "cloud": self.cloud,
            **self.extra,
        }
