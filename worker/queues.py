"""Task names and the queue each one runs on (the routing table is data).

| task                        | queue           | keywords                     | sent by        |
|-----------------------------|-----------------|------------------------------|----------------|
| ``fapiao.push``             | ``push``        | document_id, bill_no, tenant | producers,sweep|
| ``fapiao.push_batch``       | ``push``        | document_ids, bill_nos,      | producers,sweep|
|                             |                 | tenants (parallel lists)     |                |
| ``fapiao.withdraw``         | ``push``        | document_id, bill_no, tenant | producers,sweep|
| ``fapiao.resolve_in_doubt`` | ``poll``        | document_id, bill_no, tenant | push, poll_due |
| ``fapiao.poll``             | ``poll``        | document_id, bill_no, tenant | poll_due       |
| ``fapiao.reconcile``        | ``callbacks``   | inbox_id (bill_no, tenant    | receiver (one  |
|                             |                 | when known); the task        | owed at a time)|
|                             |                 | gathers other waiting rows   | reconcile,sweep|
| ``fapiao.notify_erp``       | ``erp``         | outbox_id, bill_no           | services, sweep|
| ``fapiao.poll_due``         | ``maintenance`` | —                            | beat           |
| ``fapiao.sweep``            | ``maintenance`` | —                            | beat           |
| ``fapiao.refresh_tokens``   | ``maintenance`` | —                            | beat           |
| ``fapiao.reconcile_daily``  | ``maintenance`` | —                            | beat (nightly) |

Queues are split by kind of work so a flood of one (a batch of pushes, a storm of
callbacks) cannot starve another. Messages carry ids, never payloads or secrets; ``bill_no``
rides along as a keyword so Flower can find a document by its bill number.

``push_messages(pushes, batch_size)`` is how drafts become messages (API intake, sweeper):
chunks of up to ``batch_size`` as ``fapiao.push_batch`` (one task pays the claim and apply
transactions once for the chunk), a chunk of one as a plain ``fapiao.push``. Retries, replays
and in-doubt re-pushes stay single ``fapiao.push`` messages.

A ``fapiao.reconcile`` claims its row plus up to ``callbacks.batch_size`` waiting callbacks
(``worker.services.reconcile``); the receiver sends one only when none is owed
(``worker.coalesce``), and a task whose batch is full sends one for the next waiting row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "NOTIFY_ERP",
    "POLL",
    "POLL_DUE",
    "PUSH",
    "PUSH_BATCH",
    "QUEUES",
    "RECONCILE",
    "RECONCILE_DAILY",
    "REFRESH_TOKENS",
    "RESOLVE_IN_DOUBT",
    "ROUTES",
    "SWEEP",
    "WITHDRAW",
    "push_messages",
]

PUSH: Final = "fapiao.push"
PUSH_BATCH: Final = "fapiao.push_batch"
WITHDRAW: Final = "fapiao.withdraw"
RESOLVE_IN_DOUBT: Final = "fapiao.resolve_in_doubt"
POLL: Final = "fapiao.poll"
POLL_DUE: Final = "fapiao.poll_due"
RECONCILE: Final = "fapiao.reconcile"
NOTIFY_ERP: Final = "fapiao.notify_erp"
REFRESH_TOKENS: Final = "fapiao.refresh_tokens"
SWEEP: Final = "fapiao.sweep"
# Three-way reconciliation of the previous day (not RECONCILE: that one applies a callback).
RECONCILE_DAILY: Final = "fapiao.reconcile_daily"

QUEUES: Final[tuple[str, ...]] = ("push", "poll", "callbacks", "erp", "maintenance")

ROUTES: Final[dict[str, str]] = {
    PUSH: "push",
    PUSH_BATCH: "push",
    WITHDRAW: "push",
    RESOLVE_IN_DOUBT: "poll",
    POLL: "poll",
    RECONCILE: "callbacks",
    NOTIFY_ERP: "erp",
    POLL_DUE: "maintenance",
    SWEEP: "maintenance",
    REFRESH_TOKENS: "maintenance",
    RECONCILE_DAILY: "maintenance",
}


def push_messages(
    pushes: Sequence[tuple[int, str, str]], batch_size: int
) -> list[tuple[str, dict[str, Any]]]:
    """``(task, kwargs)`` messages owing a push to each ``(document_id, bill_no, tenant)``."""
    size = max(1, batch_size)
    messages: list[tuple[str, dict[str, Any]]] = []
    for start in range(0, len(pushes), size):
        chunk = pushes[start : start + size]
        if len(chunk) == 1:
            document_id, bill_no, tenant = chunk[0]
            messages.append(
                (PUSH, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant})
            )
            continue
        messages.append(
            (
                PUSH_BATCH,
                {
                    "document_ids": [push[0] for push in chunk],
                    "bill_nos": [push[1] for push in chunk],
                    "tenants": [push[2] for push in chunk],
                },
            )
        )
    return messages
