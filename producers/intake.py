"""Taking documents in from the ERP: validate, find the tenant, store, commit, then enqueue.

This is the one path every producer uses (the Python ``submit()``, ``POST /v1/documents``,
``fapiao submit``), so all three accept and refuse exactly the same documents.

Steps for one document

| step | what | refusal |
|---|---|---|
| 1 | every BILL.PUSH rule (``schemas.erp.validate_bill``) | ``invalid`` + issues (HTTP 422) |
| 2 | the tenant: the given one, else the owner of ``sellerTaxpayerId`` | ``invalid`` + issue |
| 2b | a red bill (``invoiceProperty`` 1): ``red_letters`` finds its original and checks it | |
| | against what the cloud says may still be reversed (``producers.reversal``) | ``invalid`` |
| 3 | ``store.acceptance.accept_documents`` (one bill is a batch of one) | ``conflict`` (HTTP 409) |
| 4 | COMMIT (ours, or the caller's when ``session`` is passed) | |
| 5 | enqueue ``fapiao.push`` for created / new revisions, AFTER the commit | never fails |

Outcomes (``SubmitOutcome``) and their HTTP status

| outcome | HTTP | meaning |
|---|---|---|
| ``created`` | 202 | a new document, draft; a push is owed |
| ``new_revision`` | 202 | different content after rejected/failed/withdrawn/returned |
| ``unchanged`` | 200 | identical content was already accepted (idempotent resubmission) |
| ``invalid`` | 422 | the document breaks rules; ``issues`` lists every one |
| ``conflict`` | 409 | different content while the current revision is still live |

Tenant rule codes (added to the ``schemas.errors`` rules, same ``Issue`` shape)

| rule | meaning |
|---|---|
| ``unknown_seller`` | no tenant issues for this ``sellerTaxpayerId`` |
| ``unknown_tenant`` | the tenant named by the caller is not in the tenants file |
| ``tenant_mismatch`` | the seller belongs to another tenant than the one named |
| ``tenant_required`` | no ``sellerTaxpayerId`` (``orgCode`` only): the tenant must be named |

A document is identified by (tenant, seller, billNo); the seller is the upper-cased
``sellerTaxpayerId``, or ``orgCode`` for bills that carry only that.

The stored payload is the normalised bill (``Bill.to_wire()``, what BILL.PUSH sends) with one
default filled in: ``autoInvoice`` from the tenant's ``auto_invoice`` when the ERP left it
out. ``content_hash`` is taken over the ERP's bill *before* that default, so changing the
tenant setting never turns an identical resubmission into a conflict.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from schemas.erp import Bill, validate_bill, wire_content_hash
from schemas.errors import DocumentInvalid, Issue
from schemas.settings import PushSettings, Settings
from schemas.tenants import TenantsFile, normalise_tax_id
from store.acceptance import Acceptance, BillToAccept, accept_documents
from store.db import make_engine, make_session_factory, unit_of_work
from store.lifecycle import RevisionConflict

if TYPE_CHECKING:
    # Imported where used: importing producers loads no worker code (test_cli_servers).
    from producers.reversal import RedLetterGate
    from worker.coalesce import PushCoalescer
    from worker.enqueue import Enqueuer

__all__ = [
    "TENANT_RULES",
    "Intake",
    "SubmitOutcome",
    "SubmitResult",
    "default_intake",
    "set_default_intake",
    "submit",
]

log = logging.getLogger(__name__)

TENANT_RULES: dict[str, str] = {
    "unknown_seller": "no tenant issues invoices for this sellerTaxpayerId",
    "unknown_tenant": "the named tenant is not in the tenants file",
    "tenant_mismatch": "the seller belongs to another tenant than the one named",
    "tenant_required": "a bill without sellerTaxpayerId needs the tenant named",
}


class SubmitOutcome(StrEnum):
    created = "created"
    new_revision = "new_revision"
    unchanged = "unchanged"
    invalid = "invalid"
    conflict = "conflict"


_HTTP_STATUS = {
    SubmitOutcome.created: 202,
    SubmitOutcome.new_revision: 202,
    SubmitOutcome.unchanged: 200,
    SubmitOutcome.invalid: 422,
    SubmitOutcome.conflict: 409,
}


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What happened to one submitted document."""

    bill_no: str | None
    outcome: SubmitOutcome
    document_id: int | None = None
    status: str | None = None
    issues: tuple[Issue, ...] = ()
    tenant: str | None = None
    seller_tax_id: str | None = None
    revision: int | None = None
    message: str | None = None

    @property
    def accepted(self) -> bool:
        """Stored (now or before): the ERP may forget it; the bridge owns it."""
        return self.outcome in (
            SubmitOutcome.created,
            SubmitOutcome.new_revision,
            SubmitOutcome.unchanged,
        )

    @property
    def push_owed(self) -> bool:
        return self.outcome in (SubmitOutcome.created, SubmitOutcome.new_revision)

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "bill_no": self.bill_no,
            "outcome": self.outcome.value,
            "document_id": self.document_id,
            "status": self.status,
            "tenant": self.tenant,
            "seller_tax_id": self.seller_tax_id,
            "revision": self.revision,
            "message": self.message,
            "issues": [issue.as_dict() for issue in self.issues],
        }


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A valid bill with its identity, ready to store."""

    bill: Bill
    tenant: str
    seller_tax_id: str
    # A red bill admitted by the RedLetterGate: the document it reverses.
    original_document_id: int | None = None


def _raw_bill_no(document: object) -> str | None:
    if isinstance(document, Bill):
        return document.billNo
    if isinstance(document, Mapping):
        value = document.get("billNo")
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _issue(path: str, rule: str, en: str, zh: str, hint: str, hint_zh: str) -> Issue:
    return Issue(path, rule, en, zh, hint, hint_zh)


# No field of a bill holds a number beyond 10^±40; refusing such numbers before the rules run
# keeps a 20-byte "1e999999" from becoming megabytes of error text (rules quote the value).
_EXPONENT_LIMIT = 40


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid Unicode (a lone surrogate)"
    return None


def _unstorable(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, what) of values no database column can hold: absurd numbers, NUL characters,
    lone surrogates (JSON "\\ud800") — in values and in field names."""
    if isinstance(value, str):
        problem = _bad_text(value)
        if problem:
            yield path, problem
    elif isinstance(value, Decimal):
        if value.is_finite() and abs(value.adjusted()) > _EXPONENT_LIMIT:
            yield path, "a number beyond 1E±40"
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**_EXPONENT_LIMIT:
            yield path, "a number beyond 1E±40"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            problem = _bad_text(name)
            if problem:
                yield (path or "(bill)"), f"a field name with {problem}"
                continue
            yield from _unstorable(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _unstorable(item, f"{path}[{index}]")


_NUMBER_LIMIT: int = 10**_EXPONENT_LIMIT


def _storable(value: object) -> bool:
    """``_unstorable(value)`` finds nothing: the same checks in one pass without paths
    (exact JSON types; anything else is asked of ``_unstorable``)."""
    kind = type(value)
    if kind is str:
        text = cast(str, value)
        return "\x00" not in text and (text.isascii() or _bad_text(text) is None)
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is str:
                if not (_storable(key) and _storable(item)):
                    return False
            elif next(_unstorable({key: item}), None) is not None:
                return False
        return True
    if kind is list:
        return all(_storable(item) for item in cast(list[object], value))
    if kind is Decimal:
        number = cast(Decimal, value)
        return not number.is_finite() or abs(number.adjusted()) <= _EXPONENT_LIMIT
    if kind is int:
        return -_NUMBER_LIMIT < cast(int, value) < _NUMBER_LIMIT
    if value is None or kind is bool:
        return True
    return next(_unstorable(value), None) is None


def _validate(document: object) -> Bill | tuple[Issue, ...]:
    found = [] if isinstance(document, Bill) or _storable(document) else list(_unstorable(document))
    if found:
        return tuple(
            _issue(
                path,
                "type",
                f"{path} holds {what}, which no amount, code or text field can hold",
                f"{path} 含有无法保存的值（{what}）",
                "Send the real value of the field: numbers within range, text without NUL "
                "characters or broken Unicode.",
                "请填写该字段的实际值：数值在合理范围内，文本不含NUL字符或无效Unicode。",
            )
            for path, what in found[:20]
        )
    try:
        return validate_bill(document)  # type: ignore[arg-type]  # non-mappings become issues
    except DocumentInvalid as exc:
        return exc.issues
    except ValidationError as exc:
        # validate_bill's own rules passed but the model refused the shape: report it the
        # same way instead of failing the request.
        return tuple(
            _issue(
                ".".join(str(part) for part in err["loc"]),
                "type",
                f"{err['msg']}",
                f"字段格式错误：{err['msg']}",
                "Fix the value's type or format.",
                "请修正该字段的类型或格式。",
            )
            for err in exc.errors()
        )
    except (ArithmeticError, RecursionError, TypeError, ValueError) as exc:
        log.exception("validate_bill raised instead of reporting issues")
        return (
            _issue(
                "",
                "type",
                f"the document could not be read ({type(exc).__name__})",
                "无法读取该单据",
                "Check the numbers and nesting of the document.",
                "请检查单据中的数字和嵌套结构。",
            ),
        )


def resolve_tenant(bill: Bill, tenants: TenantsFile, named: str | None) -> tuple[str, str] | Issue:
    """(tenant, seller identity) for ``bill``, or the Issue that prevents it."""
    seller_id = normalise_tax_id(bill.sellerTaxpayerId) if bill.sellerTaxpayerId else None
    owner = tenants.tenant_for_seller(seller_id) if seller_id else None
    if named is not None:
        if tenants.by_name(named) is None:
            return _issue(
                "tenant",
                "unknown_tenant",
                f"tenant {named!r} is not configured; known tenants: {', '.join(tenants.names)}",
                f"租户 {named!r} 不存在，已配置的租户：{'、'.join(tenants.names)}",
                "Name one of the configured tenants, or leave the tenant out to pick it by "
                "sellerTaxpayerId.",
                "请填写已配置的租户，或不填写租户，由销方税号自动确定。",
            )
        if owner is not None and owner.name != named:
            return _issue(
                "sellerTaxpayerId",
                "tenant_mismatch",
                f"seller {seller_id} belongs to tenant {owner.name!r}, not {named!r}",
                f"销方税号 {seller_id} 属于租户 {owner.name!r}，而不是 {named!r}",
                "Leave the tenant out, or send the document to the seller's tenant.",
                "请不填写租户，或改为该销方税号所属的租户。",
            )
        if seller_id is not None and owner is None:
            return _unknown_seller(seller_id, tenants)
        return named, seller_id or (bill.orgCode or "")
    if seller_id is None:
        if len(tenants.tenants) == 1:
            return tenants.tenants[0].name, bill.orgCode or ""
        return _issue(
            "tenant",
            "tenant_required",
            "the bill has no sellerTaxpayerId, so the tenant cannot be found; name it",
            "单据未填写销方税号，无法确定租户，请指定租户",
            "Send sellerTaxpayerId, or name the tenant (?tenant=… / --tenant / tenant=…).",
            "请填写销方税号，或指定租户（?tenant=… / --tenant / tenant=…）。",
        )
    if owner is None:
        return _unknown_seller(seller_id, tenants)
    return owner.name, seller_id


def _unknown_seller(seller_id: str, tenants: TenantsFile) -> Issue:
    return _issue(
        "sellerTaxpayerId",
        "unknown_seller",
        f"no tenant issues invoices for seller {seller_id}; configured tenants: "
        f"{', '.join(tenants.names)}",
        f"销方税号 {seller_id} 不属于任何已配置的租户",
        "Check sellerTaxpayerId, or add it to the seller_tax_ids of its tenant in the "
        "tenants file.",
        "请核对销方税号，或在租户配置文件中将其加入对应租户的 seller_tax_ids。",
    )


@dataclass
class Intake:
    """Submits documents: the database, the tenants file and the broker it needs."""

    sessions: sessionmaker[Session] | None
    tenants: TenantsFile
    enqueuer: Enqueuer
    actor: str = "erp"
    # Documents per fapiao.push_batch message (FAPIAO_PUSH__BATCH_SIZE).
    push_batch_size: int = PushSettings.model_fields["batch_size"].default
    # Coalesces one-document pushes (worker.coalesce); None: every document sends its own.
    coalescer: PushCoalescer | None = None
    # Red bills (invoiceProperty 1) are linked to their original and checked against what the
    # cloud says may still be reversed (producers.reversal); None: taken as they are.
    red_letters: RedLetterGate | None = None

    def admit(self, prepared: Sequence[_Prepared | SubmitResult]) -> list[_Prepared | SubmitResult]:
        """Red bills through the gate (a refused one becomes ``invalid``); others unchanged."""
        if self.red_letters is None:
            return list(prepared)
        return self.red_letters.admit(prepared)

    def prepare(self, document: object, tenant: str | None = None) -> _Prepared | SubmitResult:
        """Validate and resolve the tenant (no database); an ``invalid`` result if refused."""
        bill_no = _raw_bill_no(document)
        checked = _validate(document)
        if not isinstance(checked, Bill):
            return SubmitResult(bill_no, SubmitOutcome.invalid, issues=checked, tenant=tenant)
        resolved = resolve_tenant(checked, self.tenants, tenant)
        if isinstance(resolved, Issue):
            return SubmitResult(checked.billNo, SubmitOutcome.invalid, issues=(resolved,))
        return _Prepared(checked, resolved[0], resolved[1])

    def store(self, session: Session, prepared: _Prepared, actor: str) -> SubmitResult:
        """Store one bill (a batch of one); no commit, no enqueue."""
        return self.store_many(session, [prepared], actor)[0]

    def _payload(self, prepared: _Prepared) -> tuple[dict[str, Any], str]:
        """(stored payload, content hash) from ONE ``to_wire()``: the hash of the ERP's bill
        (``Bill.content_hash``), then the payload = that wire bill with the tenant's
        ``autoInvoice`` default."""
        payload = prepared.bill.to_wire()
        content_hash = wire_content_hash(payload)
        if "autoInvoice" not in payload:
            config = self.tenants.by_name(prepared.tenant)
            if config is not None:
                payload["autoInvoice"] = "1" if config.auto_invoice else "0"
        return payload, content_hash

    def _to_accept(self, prepared: _Prepared) -> BillToAccept:
        bill = prepared.bill
        totals = bill.total()
        payload, content_hash = self._payload(prepared)
        return BillToAccept(
            tenant=prepared.tenant,
            seller_tax_id=prepared.seller_tax_id,
            bill_no=bill.billNo,
            payload=payload,
            content_hash=content_hash,
            total_amount=bill.totalAmount,
            total_incl_tax=totals.incl,
            total_tax=totals.tax,
            invoice_type=bill.invoiceType.value,
        )

    def store_many(
        self, session: Session, prepared: Sequence[_Prepared | SubmitResult], actor: str
    ) -> list[SubmitResult]:
        """Store a batch (no commit, no enqueue), results in order: ONE ``accept_documents``
        call for every valid bill, exactly as storing them one by one would settle them."""
        valid = [item for item in prepared if isinstance(item, _Prepared)]
        accepted = iter(accept_documents(session, [self._to_accept(p) for p in valid], actor=actor))
        results = [
            item if isinstance(item, SubmitResult) else _submit_result(item, next(accepted))
            for item in prepared
        ]
        links = {
            result.document_id: item.original_document_id
            for item, result in zip(prepared, results, strict=True)
            if isinstance(item, _Prepared)
            and item.original_document_id is not None
            and result.accepted
            and result.document_id is not None
        }
        if links:
            from producers.reversal import link_red_documents

            link_red_documents(session, links)
        return results

    def _enqueue(self, result: SubmitResult) -> None:
        self.enqueue_pushes([result])

    def submit(
        self,
        document: Mapping[str, Any] | Bill,
        *,
        tenant: str | None = None,
        session: Session | None = None,
        actor: str | None = None,
    ) -> SubmitResult:
        """One document (module docstring). With ``session``: the caller commits; the push is
        enqueued after the caller's commit (and dropped if it rolls back)."""
        [prepared] = self.admit([self.prepare(document, tenant)])
        if isinstance(prepared, SubmitResult):
            return prepared
        who = actor or self.actor
        if session is not None:
            result = self.store(session, prepared, who)
            if result.push_owed:
                from worker.enqueue import after_commit

                after_commit(session, lambda: self._enqueue(result))
            return result
        with unit_of_work(self._sessions()) as own:
            result = self.store(own, prepared, who)
        self._enqueue(result)
        return result

    def submit_many(
        self,
        documents: Sequence[object],
        *,
        tenant: str | None = None,
        actor: str | None = None,
        defer_enqueue: bool = False,
    ) -> list[SubmitResult]:
        """A batch in ONE transaction (``store_many``: bulk statements, see
        ``store.acceptance``), results in order.

        One bad document never blocks the others. With ``defer_enqueue`` the caller sends the
        pushes itself (``enqueue_pushes``) after the response, e.g. from a background task.
        """
        who = actor or self.actor
        prepared = self.admit([self.prepare(document, tenant) for document in documents])
        results: list[SubmitResult] = []
        if any(not isinstance(item, SubmitResult) for item in prepared):
            with unit_of_work(self._sessions()) as session:
                results = self.store_many(session, prepared, who)
        else:
            results = [item for item in prepared if isinstance(item, SubmitResult)]
        if not defer_enqueue:
            self.enqueue_pushes(results)
        return results

    def enqueue_pushes(self, results: Sequence[SubmitResult]) -> int:
        """Owe a push for every result that needs one (after the commit): one batch of
        ``fapiao.push_batch`` messages of up to ``push_batch_size`` documents (a lone document
        is a ``fapiao.push``, not sent when the ``coalescer`` says one of its tenant is
        waiting). Returns how many messages the broker took; a failure is logged and left to
        the sweeper."""
        owed = [
            (result.document_id, result.bill_no or "", result.tenant)
            for result in results
            if result.push_owed and result.document_id is not None and result.tenant is not None
        ]
        if not owed:
            return 0
        from worker.enqueue import push_messages

        if len(owed) == 1 and self.coalescer is not None and not self.coalescer.owe(owed[0][2]):
            return 0  # a push of this tenant is waiting and gathers this draft
        return self.enqueuer.send(push_messages(owed, self.push_batch_size))

    def _sessions(self) -> sessionmaker[Session]:
        if self.sessions is None:
            raise RuntimeError("this Intake has no database; pass session=… or build it with one")
        return self.sessions


def _submit_result(prepared: _Prepared, accepted: Acceptance | RevisionConflict) -> SubmitResult:
    """What ``accept_documents`` settled for one bill, as the producers report it."""
    if isinstance(accepted, RevisionConflict):
        return SubmitResult(
            prepared.bill.billNo,
            SubmitOutcome.conflict,
            document_id=accepted.document_id,
            status=accepted.status.value,
            revision=accepted.revision,
            message=str(accepted),
            tenant=prepared.tenant,
            seller_tax_id=prepared.seller_tax_id,
        )
    return SubmitResult(
        prepared.bill.billNo,
        SubmitOutcome(accepted.outcome.value),
        document_id=accepted.document_id,
        status=accepted.status,
        revision=accepted.revision,
        tenant=prepared.tenant,
        seller_tax_id=prepared.seller_tax_id,
    )


_default: Intake | None = None
_default_lock = threading.Lock()


def default_intake() -> Intake:
    """The process-wide Intake, built from ``Settings.load()`` on first use (not at import)."""
    global _default
    with _default_lock:
        if _default is None:
            from producers.bootstrap import Components
            from worker.app import create_app
            from worker.enqueue import CeleryEnqueuer

            settings = Settings.load()
            sessions = make_session_factory(make_engine(settings.database_url))
            tenants = settings.load_tenants()
            enqueuer = CeleryEnqueuer(create_app(settings))
            # The Components only build the worker runtime, on the first red bill.
            parts = Components(settings, tenants, sessions, enqueuer)
            _default = Intake(
                sessions=sessions,
                tenants=tenants,
                enqueuer=enqueuer,
                push_batch_size=settings.push.batch_size,
                red_letters=parts.red_letters(),
            )
        return _default


def set_default_intake(intake: Intake | None) -> None:
    """Use ``intake`` for ``submit()`` calls without ``intake=`` (None: build from settings)."""
    global _default
    with _default_lock:
        _default = intake


def submit(
    document: Mapping[str, Any] | Bill,
    *,
    tenant: str | None = None,
    session: Session | None = None,
    intake: Intake | None = None,
    actor: str | None = None,
) -> SubmitResult:
    """Submit one ERP document (a dict as parsed by ``loads_exact``, or a ``Bill``).

    Invalid documents come back with ``outcome="invalid"`` and their ``issues`` (nothing is
    raised); identical resubmissions come back ``unchanged``. Pass ``session`` to store inside
    your own transaction: nothing is committed here and the push is sent after your commit.
    """
    return (intake or default_intake()).submit(
        document, tenant=tenant, session=session, actor=actor
    )
