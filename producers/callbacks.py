"""The storage step of the Kingdee callback receiver: dedupe key, inbox row, document link.

The HTTP route (``producers.http``) is the checklist — authenticate the path, allow-list,
size limit, parse, **store raw + dedupe (here, through ``store.inbox.receive_callback``)**,
commit, ACK, enqueue ``fapiao.reconcile``.
Slow work (invoice upserts, transitions, confirming queries) never runs in the request.

AES tenants (``data_encryption = "aes"``): ``data`` is decoded by trying BASE64, then each AES
tenant's key (``TenantsFile.callback_codecs``); the route and the reconcile task parse alike.

Dedupe key (``callback_dedupe_key``): the callback's ``interfaceCode`` plus, per invoice,
``InvoiceItem.dedupe_key`` (``orderNo``, else code + number + billNo) and the item's billNo: a
merged invoice (``autoMerge=1``) is called back once per bill it covers, with the same
``orderNo``, and each of those is news for its own bill. A cancel or red of the
same invoice is a new fact (another interfaceCode), a re-sent callback is not. Failed
issuance items have no number: their key adds ``issueErrorMessage``; a cancel item without
its own number (``cancel_item=original_only``) adds the ``original*`` invoice it voids. A 回退
(BILL.RETURN) is keyed by billNo, seller and reason. Keys longer than the column are hashed
(sha256).

| result | meaning | HTTP |
|---|---|---|
| ``stored`` | a new inbox row, state ``received`` | 200 ACK, reconcile enqueued |
| ``duplicate`` | the same key is stored already; nothing written | 200 ACK |
| ``orphan`` (flag) | stored; no current document has that bill (reconcile: ``orphan``) | 200 ACK |

A stored callback that matches exactly one document which is ``pushed`` (waiting for its
invoices) also moves that document's ``next_poll_at`` to at least now + ``poll_grace``
(``FAPIAO_CALLBACKS__POLL_GRACE_SECONDS``, 60 s), in the same transaction: the reconcile of
this callback is already on its way and will ask the cloud itself, so a poll meanwhile would
be a second BILL.INVOICE.QUERY for the same answer (under a backlog of callbacks that doubled
the queries). The poll stays the safety net: if the reconcile is lost or deferred, the poll
comes after the grace. Documents in any other state are left alone (an ``in_doubt`` document's
queries are the in-doubt resolver's). The UPDATE is the lifecycle's ``defer_poll``.

Statements of a stored callback: the INSERT (its ``document_id`` found by a subquery in the
same statement) and, for a linked document, the UPDATE above; then the route's COMMIT. Only an
unlinked callback asks once more whether any document has its bill (orphan or ambiguous). Both
hot statements are built once and run with parameters (``store_callback``'s table).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.orm import Session

from schemas.kingdee import InvoiceItem, ParsedCallback
from schemas.tenants import normalise_tax_id
from store.columns import utcnow
from store.inbox import receive_callback
from store.lifecycle import defer_poll
from store.models import CallbackInbox, Document

__all__ = [
    "MAX_KEY_LENGTH",
    "StoredCallback",
    "callback_bills",
    "callback_dedupe_key",
    "store_callback",
    "unstorable_text",
]

MAX_KEY_LENGTH: Final = 200
POLL_GRACE: Final = timedelta(seconds=60)


def _item_key(item: InvoiceItem) -> str:
    key = item.dedupe_key
    if key.startswith("order:"):
        key += f"@{item.billNo}"
    if not item.is_issued and not (item.orderNo or "").strip():
        key += ":" + (item.issueErrorMessage or "")
        original = (item.originalInvoiceNumber or "").strip()
        if original:
            # An INVOICE.CANCEL item with only original* (cancel_item=original_only): the
            # voided invoice is its key, else two voids of one bill would look the same.
            key += f":original:{item.originalInvoiceCode or ''}:{original}"
    return key


def callback_dedupe_key(parsed: ParsedCallback) -> str:
    """The key that makes a re-sent callback a duplicate (module docstring)."""
    if parsed.returned is not None:
        returned = parsed.returned
        parts = [returned.billNo, returned.sellerTaxpayerId, returned.reason]
    else:
        parts = sorted(_item_key(item) for item in parsed.items)
    key = f"{parsed.interfaceCode}|{parsed.style}|" + "|".join(parts)
    if len(key) > MAX_KEY_LENGTH:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _all_texts(value: Any) -> list[str]:
    """Every key and string value in ``value`` (any order): ``_texts`` without generators."""
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                texts.append(str(key))
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return texts


def unstorable_text(parsed: ParsedCallback) -> str | None:
    """Why the callback's text cannot be stored or looked up (NUL, lone surrogates), or None.

    One check over all texts joined (C speed); only a refused callback walks them in order
    for the first problem, so the reason is the same as text by text.
    """
    dumped = parsed.model_dump(mode="python")
    joined = "".join(_all_texts(dumped))
    if "\x00" not in joined:
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return None
    for text in _texts(dumped):
        if "\x00" in text:
            return "a text value contains a NUL character"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a text value is invalid Unicode (a lone surrogate)"
    return None


def callback_bills(parsed: ParsedCallback) -> set[tuple[str, str | None]]:
    """(billNo, seller tax id or None) of every bill the callback talks about."""
    if parsed.returned is not None:
        seller = parsed.returned.sellerTaxpayerId or None
        return {(parsed.returned.billNo, normalise_tax_id(seller) if seller else None)}
    return {
        (
            item.billNo,
            normalise_tax_id(item.sellerTaxpayerId) if item.sellerTaxpayerId else None,
        )
        for item in parsed.items
    }


@dataclass(frozen=True, slots=True)
class StoredCallback:
    inbox_id: int
    duplicate: bool
    orphan: bool
    document_id: int | None
    # Labels for the reconcile message (Flower and logs find the job by bill number).
    bill_no: str | None = None
    tenant: str | None = None


_INBOX: Final = cast("Table", CallbackInbox.__table__)


# Bills folded into the INSERT's subquery (bind parameters: 2 a bill). A callback names one
# bill; a sender mixing more gets the former per-bill SELECTs (no parameter limit to hit).
MAX_LINKED_BILLS: Final = 8


def _any_document(session: Session, bills: set[tuple[str, str | None]]) -> bool:
    """Does any current document have one of ``bills``? (Only asked when none was linked.)"""
    matches = [
        (Document.bill_no == bill_no) & (Document.seller_tax_id == seller)
        if seller
        else Document.bill_no == bill_no
        for bill_no, seller in bills
    ]
    if not matches:
        return False
    found = session.scalar(
        select(Document.id).where(Document.is_current.is_(True), or_(*matches)).limit(1)
    )
    return found is not None


def _matching_document(
    session: Session, bills: set[tuple[str, str | None]]
) -> tuple[int | None, bool]:
    """(the one document of many ``bills`` or None, orphan: none matches), a SELECT a bill."""
    ids: set[int] = set()
    for bill_no, seller in bills:
        statement = select(Document.id).where(
            Document.bill_no == bill_no, Document.is_current.is_(True)
        )
        if seller:
            statement = statement.where(Document.seller_tax_id == seller)
        ids.update(session.scalars(statement))
    if len(ids) == 1:
        return next(iter(ids)), False
    return None, not ids


def store_callback(
    session: Session,
    raw_body: bytes,
    parsed: ParsedCallback,
    remote_addr: str | None,
    *,
    poll_grace: timedelta = POLL_GRACE,
) -> StoredCallback:
    """Insert the raw body into ``callback_inbox`` unless its key is there. No commit.

    The row is linked to its document when exactly one current document matches (so
    ``fapiao show`` lists it at once); the reconciler links or orphans the rest. A matched
    ``pushed`` document's next poll moves to at least now + ``poll_grace`` (module docstring).

    | statement | when |
    |---|---|
    | INSERT ... ON CONFLICT DO NOTHING, ``document_id`` from a subquery | always |
    | SELECT the stored row's id | a duplicate |
    | UPDATE documents ... RETURNING tenant (``defer_poll``: poll grace) | a linked document |
    | SELECT any document of the bills (orphan or ambiguous?) | no document linked |
    | a SELECT per bill, UPDATE the row's ``document_id`` | over ``MAX_LINKED_BILLS`` bills |
    """
    bills = callback_bills(parsed)
    linked_in_insert = len(bills) <= MAX_LINKED_BILLS
    received = receive_callback(
        session,
        dedupe_key=callback_dedupe_key(parsed),
        raw_body=raw_body,
        remote_addr=remote_addr[:64] if remote_addr else None,
        style=parsed.style,
        bills=bills if linked_in_insert else None,
    )
    if received.duplicate:
        return StoredCallback(received.inbox_id, duplicate=True, orphan=False, document_id=None)
    if linked_in_insert:
        document_id = received.document_id
        orphan = document_id is None and not _any_document(session, bills)
    else:
        document_id, orphan = _matching_document(session, bills)
        if document_id is not None:
            session.execute(
                update(_INBOX)
                .where(_INBOX.c.id == received.inbox_id)
                .values(document_id=document_id)
            )
    tenant: str | None = None
    if document_id is not None:
        tenant = defer_poll(session, document_id, utcnow() + poll_grace)
    bill_no = next((bill for bill, _ in bills if bill), None)
    return StoredCallback(
        received.inbox_id,
        duplicate=False,
        orphan=orphan,
        document_id=document_id,
        bill_no=bill_no,
        tenant=tenant,
    )
