"""The words of the lifecycle: document states, events, and the states of inbox/outbox rows.

These strings are a contract (CLI, HTTP, metrics and docs use them); `store.lifecycle`
holds the table that connects them. They live in their own module so `store.models` can
name them in CHECK constraints and partial indexes without importing the lifecycle.

Document states (see docs/LIFECYCLE.md, "States"):

| state                | meaning                                                           |
|----------------------|-------------------------------------------------------------------|
| `draft`              | accepted from the ERP and committed; a push is owed               |
| `pushing`            | a worker holds the push lease and is calling BILL.PUSH            |
| `in_doubt`           | the push may or may not have reached the cloud; only a query moves it |
| `pushed`             | the cloud accepted the form; invoices are owed                    |
| `partially_invoiced` | some invoices issued, the rest pending or failed                  |
| `invoiced`           | issued invoices cover the full amount (terminal)                  |
| `invoice_failed`     | issuance failed in the cloud and nothing is issued                |
| `rejected`           | the cloud refused the push for a business reason                  |
| `failed`             | pushing gave up (retries exhausted, configuration or auth error)  |
| `withdrawing`        | a BILL.WITHDRAW is owed or in flight                              |
| `withdrawn`          | withdrawn from the cloud, or cancelled before it reached it       |
| `returned`           | the cloud handed the form back upstream (回退, 5.1.01)            |
| `reversed`           | every issued invoice was voided (作废) or fully reversed (红冲)   |
|                      | after issuance (terminal)                                         |

Due columns (which timestamp makes a row due for which sweep):

| states                                        | column             | sweep (store.queries) |
|-----------------------------------------------|--------------------|-----------------------|
| `draft`                                       | `next_attempt_at`  | `due_drafts`          |
| `withdrawing`                                 | `next_attempt_at`  | `due_withdrawals`     |
| `pushing`                                     | `lease_expires_at` | `expired_leases`      |
| `in_doubt`, `pushed`, `partially_invoiced`,   | `next_poll_at`     | `due_for_poll`        |
| `invoice_failed` (`POLLED_STATUSES`)          |                    |                       |
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ISSUE_OVERDUE",
    "POLLED_STATUSES",
    "QUOTA_EXHAUSTED",
    "QUOTA_HELD",
    "RESUBMITTABLE_STATUSES",
    "DocumentStatus",
    "Event",
    "EventOutcome",
    "InboxState",
    "InvoiceStanding",
    "OutboxState",
]

# `documents.last_error_code` of a `pushed` document that has waited for its invoices longer
# than `poll.issue_overdue_seconds` while the query still shows nothing: the bridge's own
# code (cloud codes are numbers or dotted names), so views and checkers can tell it apart.
ISSUE_OVERDUE: Final = "issue_overdue"
# `last_error_code` of a `draft` waiting for credit quota (授信额度), and of a document whose
# issuance the cloud refused for quota (授信额度不足): see `store.quota`.
QUOTA_HELD: Final = "quota_held"
QUOTA_EXHAUSTED: Final = "quota_exhausted"


class DocumentStatus(StrEnum):
    draft = "draft"
    pushing = "pushing"
    in_doubt = "in_doubt"
    pushed = "pushed"
    partially_invoiced = "partially_invoiced"
    invoiced = "invoiced"
    invoice_failed = "invoice_failed"
    rejected = "rejected"
    failed = "failed"
    withdrawing = "withdrawing"
    withdrawn = "withdrawn"
    returned = "returned"
    reversed = "reversed"


class Event(StrEnum):
    """What happened to a document. `submit` only ever creates a document (no from-state)."""

    submit = "submit"  # a new document (revision 1) was accepted from the ERP
    claim = "claim"  # a worker took the push lease
    accepted = "accepted"  # BILL.PUSH succeeded, or a query shows the bill in the cloud
    refused = "refused"  # BILL.PUSH refused for a business reason
    unsure = "unsure"  # outcome unknown (timeout/crash after send, expired lease)
    give_up = "give_up"  # retries exhausted, or a configuration/auth error
    retry = "retry"  # transient failure BEFORE the request was sent: back to draft
    absent = "absent"  # a query shows the bill never reached the cloud
    issued_all = "issued_all"  # invoices cover the full amount
    issued_some = "issued_some"  # some invoices issued
    issue_failed = "issue_failed"  # issuance failed, nothing issued
    withdraw = "withdraw"  # an operator/ERP asked to withdraw
    withdrawn_ok = "withdrawn_ok"  # BILL.WITHDRAW succeeded
    withdraw_refused = "withdraw_refused"  # BILL.WITHDRAW refused, query shows nothing issued
    returned = "returned"  # the cloud handed the form back (5.1.01)
    resubmit = "resubmit"  # different content after a dead end: a new revision
    replay = "replay"  # an operator pushes the same content again
    reversed_all = "reversed_all"  # every issued invoice is voided or fully reversed


class InvoiceStanding(StrEnum):
    """An issued (blue) invoice after issuance (``invoices.standing``); only ever moves
    right: normal → partially_reversed → reversed, or normal → voided."""

    normal = "normal"  # 正常: nothing reversed
    partially_reversed = "partially_reversed"  # 部分红冲: canRedAmount below the amount
    reversed = "reversed"  # 红冲 (invoiceStatus 3, or nothing left to reverse)
    voided = "voided"  # 作废 (invoiceStatus 6)


class EventOutcome(StrEnum):
    """What a `document_events` row records."""

    applied = "applied"  # the state changed (or the document was created)
    stale = "stale"  # an answer for an older push attempt: recorded, not applied
    superseded = "superseded"  # this revision was replaced by a newer one (state kept)


class InboxState(StrEnum):
    received = "received"
    processed = "processed"
    orphan = "orphan"
    failed = "failed"


class OutboxState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    parked = "parked"


# Polled by BILL.INVOICE.QUERY until they settle (in_doubt: to learn whether the push landed).
POLLED_STATUSES: tuple[DocumentStatus, ...] = (
    DocumentStatus.in_doubt,
    DocumentStatus.pushed,
    DocumentStatus.partially_invoiced,
    DocumentStatus.invoice_failed,
)

# Dead ends from which different content becomes a new revision.
RESUBMITTABLE_STATUSES: tuple[DocumentStatus, ...] = (
    DocumentStatus.rejected,
    DocumentStatus.failed,
    DocumentStatus.withdrawn,
    DocumentStatus.returned,
)
