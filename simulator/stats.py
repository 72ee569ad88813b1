"""Counters the simulator exposes at ``GET /_sim/stats``.

| key | counts |
|---|---|
| ``calls[<interface>][<outcome>]`` | cloud calls (a) |
| ``tokens[<tenant>]`` | ``app`` and ``access`` tokens issued |
| ``callbacks`` | ``sent``, ``acknowledged``, ``not_acknowledged`` (attempts), ``failed`` (b) |
| ``bills`` | ``pushed``, ``withdrawn``, ``returned`` |
| ``invoices`` | ``issued`` (blue), ``red`` (red invoices issued), ``failed``, ``voided`` |

(a) interface: ``getAppToken``, ``login``, ``BILL.PUSH``, ``BILL.WITHDRAW``,
``BILL.INVOICE.QUERY``, or ``openApi`` when refused before the interface was known. Outcome:
``success``, an ``errorCode``, ``http_<status>[_before|_after_commit]``, ``dropped_*``.

(b) ``failed``: gave up after the retry schedule; also ``dropped`` and ``duplicated`` (by a
fault) and ``skipped`` (no callback URL configured).

Double-issue detection is not a counter: it lives with the bills (``BillBook.violations``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

__all__ = ["CallStats"]


class CallStats:
    """Plain counters; only touched from the event loop, so no locking."""

    def __init__(self) -> None:
        self.calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.callbacks: Counter[str] = Counter()
        self.bills: Counter[str] = Counter()
        self.invoices: Counter[str] = Counter()

    def call(self, interface: str, outcome: str) -> None:
        self.calls[interface][outcome] += 1

    def token(self, tenant: str, kind: str) -> None:
        self.tokens[tenant][kind] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": {name: dict(outcomes) for name, outcomes in sorted(self.calls.items())},
            "tokens": {name: dict(kinds) for name, kinds in sorted(self.tokens.items())},
            "callbacks": dict(self.callbacks),
            "bills": dict(self.bills),
            "invoices": dict(self.invoices),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load counters saved by ``snapshot`` (the ``--state-file`` restart path)."""
        self.reset()
        for name, outcomes in snapshot.get("calls", {}).items():
            self.calls[name].update(outcomes)
        for name, kinds in snapshot.get("tokens", {}).items():
            self.tokens[name].update(kinds)
        self.callbacks.update(snapshot.get("callbacks", {}))
        self.bills.update(snapshot.get("bills", {}))
        self.invoices.update(snapshot.get("invoices", {}))

    def reset(self) -> None:
        self.calls.clear()
        self.tokens.clear()
        self.callbacks.clear()
        self.bills.clear()
        self.invoices.clear()
