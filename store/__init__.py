"""store: the database side of fapiao-bridge (SQLAlchemy 2.x). Imports `schemas` only.

| module             | holds                                                               |
|--------------------|---------------------------------------------------------------------|
| `store.db`         | `make_engine`, `make_session_factory`, `unit_of_work`, `is_postgres` |
| `store.models`     | the tables (documents, document_events, invoices, cloud_calls, ...) |
| `store.states`     | `DocumentStatus`, `Event`, inbox/outbox states, `POLLED_STATUSES`   |
| `store.lifecycle`  | `TRANSITIONS`, `transition`, `update_fields`, `defer_poll`, errors   |
| `store.claims`     | `claim_for_push`, `claim_many_for_push` (draft -> pushing)          |
| `store.acceptance` | `accept_documents` (submit / resubmit: new documents, revisions)    |
| `store.queries`    | batch claims for sweeps/polls, lookups, counts                      |
| `store.invoices`   | `record_invoice` (idempotent), `invoices_of`                        |
| `store.inbox`      | `receive_callback` (dedupe), `settle_callback`                      |
| `store.outbox`     | `add_notification`, `mark_delivered`, `mark_attempt_failed`         |
| `store.ledger`     | `mask_secrets`, `record_cloud_call`                                 |
| `store.tenants`    | `pause_tenant`, `resume_tenant`, `is_paused`                        |
| `store.migrate`    | `upgrade(url)`, `current(url)` (Alembic from Python)                |
| `store.columns`    | `UTCDateTime`, `Money`, `JSONValue`, `utcnow`                       |

Nothing here builds an engine or reads settings at import time.
"""

from store.acceptance import Acceptance, AcceptanceOutcome, BillToAccept, accept_documents
from store.claims import Claimed, claim_for_push
from store.db import is_postgres, make_engine, make_session_factory, unit_of_work
from store.lifecycle import (
    TRANSITIONS,
    LifecycleError,
    LostRace,
    RevisionConflict,
    TransitionNotAllowed,
    TransitionOutcome,
    TransitionResult,
    transition,
    update_fields,
)
from store.states import DocumentStatus, Event

__all__ = [
    "TRANSITIONS",
    "Acceptance",
    "AcceptanceOutcome",
    "BillToAccept",
    "Claimed",
    "DocumentStatus",
    "Event",
    "LifecycleError",
    "LostRace",
    "RevisionConflict",
    "TransitionNotAllowed",
    "TransitionOutcome",
    "TransitionResult",
    "accept_documents",
    "claim_for_push",
    "is_postgres",
    "make_engine",
    "make_session_factory",
    "transition",
    "unit_of_work",
    "update_fields",
]
