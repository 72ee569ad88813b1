"""Why the cloud refused a red-letter (红冲) bill, in words an operator can act on.

The cloud refuses a red bill at BILL.PUSH (errorCode, §6.3) or, when the blue invoice changed
since, at issuance (the same text as ``issueErrorMessage``, no code). Both are recognised by
the code or by the fixed parts of the message templates of ``schemas.cloud_contract``:

| code | cloud's text | what it means / what to do |
|---|---|---|
| ``-10013`` | 原蓝票<n>不存在 | no issued blue invoice <n> in this tenant: check the reference |
| ``-10014`` | 原蓝票<n>已作废，不允许红冲 | the blue invoice was voided: nothing to reverse |
| ``-10015`` | 红冲金额超过可红冲金额(可红冲金额<x>) | over canRedAmount: reverse at most <x> |
"""

from __future__ import annotations

import re
from typing import Final

from schemas.cloud_contract import ErrorCode, gateway_error

__all__ = ["explain_red_refusal"]


def _pattern(code: str) -> re.Pattern[str]:
    """The template of ``code`` as a regex, its one placeholder captured."""
    template = gateway_error(code).message_template
    head, _, rest = template.partition("{")
    _, _, tail = rest.partition("}")
    return re.compile(re.escape(head) + r"(.*?)" + re.escape(tail))


_EXPLANATIONS: Final = (
    (
        ErrorCode.ORIGINAL_UNKNOWN.value,
        "red bill refused: the cloud has no issued blue invoice {0} in this tenant; check "
        "originalInvoiceCode/originalInvoiceNumber (`fapiao reverse ORIGINAL` fills them in) "
        "/ 原蓝票不存在，请核对原蓝票代码/号码",
    ),
    (
        ErrorCode.ORIGINAL_VOIDED.value,
        "red bill refused: the blue invoice {0} was voided (作废), so there is nothing to "
        "reverse / 原蓝票已作废，无需红冲",
    ),
    (
        ErrorCode.RED_OVER_LIMIT.value,
        "red bill refused (can_red_amount): it reverses more than the blue invoice's "
        "canRedAmount; the cloud says {0} (excl. tax) is left — reverse at most that "
        "(`fapiao reverse ORIGINAL --line DETAIL_ID=AMOUNT`) / 红冲金额超出蓝票剩余额度，"
        "最多还能红冲 {0}",
    ),
)
_PATTERNS: Final = tuple((code, _pattern(code), text) for code, text in _EXPLANATIONS)


def explain_red_refusal(error_code: str | None, message: str | None) -> str | None:
    """What the refusal of a red bill means and what to do, or None for any other refusal."""
    text = message or ""
    for code, pattern, explanation in _PATTERNS:
        found = pattern.search(text)
        if found is not None or error_code == code:
            return explanation.format(found.group(1) if found else "?")
    return None
