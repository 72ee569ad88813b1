"""Task names and the queue each one runs on (the routing table is data).

| task                        | queue           | keywords                     | sent by        |
|-----------------------------|-----------------|------------------------------|----------------|
| ``fapiao.push``             | ``push``        | document_id, bill_no, tenant | producers,sweep|
| ``fapiao.withdraw``         | ``push``        | document_id, bill_no, tenant | producers,sweep|
| ``fapiao.resolve_in_doubt`` | ``poll``        | document_id, bill_no, tenant | push, poll_due |
| ``fapiao.poll``             | ``poll``        | document_id, bill_no, tenant | poll_due       |
| ``fapiao.reconcile``        | ``callbacks``   | inbox_id                     | receiver, sweep|
| ``fapiao.notify_erp``       | ``erp``         | outbox_id, bill_no           | services, sweep|
| ``fapiao.poll_due``         | ``maintenance`` | —                            | beat           |
| ``fapiao.sweep``            | ``maintenance`` | —                            | beat           |
| ``fapiao.refresh_tokens``   | ``maintenance`` | —                            | beat           |

Queues are split by kind of work so a flood of one (a batch of pushes, a storm of
callbacks) cannot starve another. Messages carry ids, never payloads or secrets; ``bill_no``
rides along as a keyword so Flower can find a document by its bill number.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "NOTIFY_ERP",
    "POLL",
    "POLL_DUE",
    "PUSH",
    "QUEUES",
    "RECONCILE",
    "REFRESH_TOKENS",
    "RESOLVE_IN_DOUBT",
    "ROUTES",
    "SWEEP",
    "WITHDRAW",
]

PUSH: Final = "fapiao.push"
WITHDRAW: Final = "fapiao.withdraw"
RESOLVE_IN_DOUBT: Final = "fapiao.resolve_in_doubt"
POLL: Final = "fapiao.poll"
POLL_DUE: Final = "fapiao.poll_due"
RECONCILE: Final = "fapiao.reconcile"
NOTIFY_ERP: Final = "fapiao.notify_erp"
REFRESH_TOKENS: Final = "fapiao.refresh_tokens"
SWEEP: Final = "fapiao.sweep"

QUEUES: Final[tuple[str, ...]] = ("push", "poll", "callbacks", "erp", "maintenance")

ROUTES: Final[dict[str, str]] = {
    PUSH: "push",
    WITHDRAW: "push",
    RESOLVE_IN_DOUBT: "poll",
    POLL: "poll",
    RECONCILE: "callbacks",
    NOTIFY_ERP: "erp",
    POLL_DUE: "maintenance",
    SWEEP: "maintenance",
    REFRESH_TOKENS: "maintenance",
}
