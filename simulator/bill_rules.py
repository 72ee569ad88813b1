"""Bill rules: misbehaviour aimed at named billNos, for demos and scripted scenarios.

Faults (``simulator.faults``) are dice rolled for every call; a rule picks one bill by its
number, so a scenario can say "the cloud refuses THIS bill" and get it every time.

| rule | JSON (``/_sim/bill-rules``) | what happens |
|---|---|---|
| refuse | ``"refuse": {"<billNo>": "<errorCode>"}`` | BILL.PUSH with that billNo is refused |
| | | (§6.3 error, text from ``schemas.cloud_contract``); nothing stored |
| drop callbacks | ``"dropCallbacks": ["<billNo>", ...]`` | no callback of that bill is ever sent |

A refused push is refused after the bill passed ``validate_bill`` (so the bridge's own checks
cannot catch it): exactly what a cloud with stricter or different rules does. ``PUT`` replaces
the rules, ``PATCH`` merges them (an errorCode of ``null`` removes a refusal), ``POST
/_sim/reset`` clears them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.cloud_contract import gateway_error

__all__ = ["BillRules", "BillRulesError"]


class BillRulesError(ValueError):
    """Rules not understood (unknown errorCode, wrong shape)."""


@dataclass(slots=True)
class BillRules:
    """Current rules; mutated only through ``apply``."""

    refuse: dict[str, str] = field(default_factory=dict)
    drop_callbacks: set[str] = field(default_factory=set)

    def apply(self, body: Mapping[str, Any], *, replace: bool) -> None:
        """Apply a ``/_sim/bill-rules`` body; nothing changes when it is refused."""
        refuse = body.get("refuse", {})
        drops = body.get("dropCallbacks", [])
        if not isinstance(refuse, Mapping) or not isinstance(drops, list):
            raise BillRulesError(
                "refuse must map billNo → errorCode and dropCallbacks must be a list"
                " / refuse须为单据编号到错误码的映射，dropCallbacks须为列表"
            )
        new_refuse = {} if replace else dict(self.refuse)
        for bill_no, code in refuse.items():
            if code is None:
                new_refuse.pop(str(bill_no), None)
                continue
            try:
                gateway_error(str(code))
            except KeyError:
                raise BillRulesError(
                    f"unknown errorCode {code!r} for bill {bill_no} / 未知错误码{code}"
                ) from None
            new_refuse[str(bill_no)] = str(code)
        new_drops = set() if replace else set(self.drop_callbacks)
        new_drops.update(str(bill_no) for bill_no in drops)
        self.refuse = new_refuse
        self.drop_callbacks = new_drops

    def refusal(self, bill_no: str) -> str | None:
        """The errorCode a push of ``bill_no`` is refused with, if any."""
        return self.refuse.get(bill_no)

    def drops_callbacks_of(self, bill_no: str) -> bool:
        return bill_no in self.drop_callbacks

    def clear(self) -> None:
        self.refuse = {}
        self.drop_callbacks = set()

    def as_json(self) -> dict[str, Any]:
        return {"refuse": dict(self.refuse), "dropCallbacks": sorted(self.drop_callbacks)}
