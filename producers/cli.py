"""The ``fapiao`` command line: the operator's entry point.

Every verb builds what it needs from ``Settings`` when it runs (one composition root per
process); importing this module builds nothing. Sub-commands that live in other rooms (the
simulator) are imported lazily so that ``fapiao --help`` stays fast and the layering holds.

| command | does | exit 1 |
|---|---|---|
| ``submit FILE|DIR|-`` | submit JSON / JSON Lines documents, per-document result | any refused |
| ``status`` | states by tenant: counts, oldest age; paused, stuck, parked | |
| ``show BILL_NO`` | one document: state, reason, invoices, timeline | not found |
| ``replay`` | failed/rejected → draft (``--dry-run`` lists, ``--yes`` skips asking) | skipped |
| ``withdraw BILL_NO`` | withdraw (BILL.WITHDRAW when it reached the cloud) | refused |
| ``reverse BILL_NO`` | red-letter (红冲) document(s) of an issued one | refused |
| ``tenants list|pause|resume`` | tenants and their quota; resume ends a quota hold too | unknown |
| ``notifications list|resend`` | ERP notifications; send parked ones again | id unknown |
| ``db upgrade`` / ``db current`` | Alembic migrations | |
| ``db purge --older-than 90d`` | export, then delete old settled rows (``store.purge``) | |
| ``reconcile --since D`` | ERP list (``--erp``), bridge and cloud compared | findings |
| ``doctor`` | settings, database, Redis, each tenant's token; what to fix | 1 if any fails |
| ``probe --tenant NAME`` | a sandbox tenant's dialect (``[tenants.cloud]``) | a bill left live |
| ``console hash-password`` | a password hash for ``FAPIAO_CONSOLE__USERS`` | empty password |
| ``api`` | serve the HTTP app (uvicorn) | |
| ``simulator`` | the simulated Kingdee cloud (``simulator.cli``, loaded lazily) | |

Read commands take ``--json``. Operator actions are recorded with actor ``operator:<user>``
(``--actor``) and ``--reason`` in the document's event log and, once per command, in
``operator_actions`` (``producers.operations``, shared with the HTTP API). Exit code 2: bad
settings or arguments.
"""

from __future__ import annotations

import getpass
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from producers.bootstrap import Components
    from schemas.settings import Settings

app = typer.Typer(
    name="fapiao",
    help="fapiao-bridge: ERP sales documents → Kingdee Invoice Cloud (金蝶发票云) and back.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants: list, pause, resume.", no_args_is_help=True)
console_app = typer.Typer(help="The operator console at /console: accounts.", no_args_is_help=True)
notifications_app = typer.Typer(
    help="ERP notifications: list, send parked ones again.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(notifications_app, name="notifications")
app.add_typer(console_app, name="console")

__all__ = ["CliContext", "app", "main"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
SellerOption = Annotated[
    str | None, typer.Option("--seller-tax-id", help="销方税号, when several sellers share it.")
]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Tenant name.")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who acts (audit log); default operator:<user>.")
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (audit log).")]


@dataclass
class CliContext:
    """How commands get Settings and Components; tests pass their own (``obj=``)."""

    load_settings: Callable[[], Settings] | None = None
    build_components: Callable[[Settings], Components] | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _components: Components | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            from schemas.settings import Settings, SettingsError

            try:
                self._settings = (self.load_settings or Settings.load)()
            except SettingsError as exc:
                _fail(str(exc), code=2)
        return self._settings

    def components(self) -> Components:
        if self._components is None:
            from producers.bootstrap import Components
            from schemas.tenants import TenantsFileError

            settings = self.settings()
            try:
                build = self.build_components or Components.build
                self._components = build(settings)
            except TenantsFileError as exc:
                _fail(str(exc), code=2)
        return self._components


def _context(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    if not isinstance(root.obj, CliContext):
        root.obj = CliContext()
    return root.obj


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _fail(message: str, code: int = 1) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    from producers.documents import jsonable

    typer.echo(json.dumps(jsonable(value), ensure_ascii=False, indent=2))


def _actor(actor: str | None) -> str:
    if actor:
        return actor[:64]
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"operator:{user}"[:64]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO date/datetime (naive = UTC)."""
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(UTC)
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO date/datetime",
            param_hint="--since",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr (silent with ``--json`` or nothing to do)."""
    if not enabled or total == 0:
        yield lambda _: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)


# ---------------------------------------------------------------------------------- submit

SUBMIT_CHUNK = 100


@app.command()
def submit(
    ctx: typer.Context,
    paths: Annotated[
        list[str], typer.Argument(help="JSON / JSON Lines files, directories, or - for stdin.")
    ],
    tenant: TenantOption = None,
    actor: Annotated[str, typer.Option(help="Recorded as the submitter.")] = "cli",
    as_json: JsonOption = False,
) -> None:
    """Submit ERP documents (one object, an array, {"documents": [...]}, or JSON Lines)."""
    from producers.intake import SubmitResult
    from producers.reading import Loaded, SourceError, load_documents

    components = _context(ctx).components()
    intake = components.intake(actor=actor)
    items = list(load_documents(paths))
    loaded = [item for item in items if isinstance(item, Loaded)]
    errors = [item for item in items if isinstance(item, SourceError)]
    results: list[tuple[str, SubmitResult]] = []
    with _progress(not as_json, len(loaded), "submitting") as advance:
        for start in range(0, len(loaded), SUBMIT_CHUNK):
            chunk = loaded[start : start + SUBMIT_CHUNK]
            outcome = intake.submit_many([item.document for item in chunk], tenant=tenant)
            results.extend(zip((item.source for item in chunk), outcome, strict=True))
            advance(len(chunk))
    refused = len(errors) + sum(1 for _, result in results if not result.accepted)
    if as_json:
        _print_json(
            {
                "results": [{"source": source, **result.as_dict()} for source, result in results],
                "source_errors": [{"source": e.source, "message": e.message} for e in errors],
                "refused": refused,
            }
        )
    else:
        console = _console()
        for error in errors:
            console.print(f"[red]✗ {error.source}[/]: {error.message}")
        for source, result in results:
            _print_submit_result(console, source, result)
        summary: dict[str, int] = {}
        for _, result in results:
            summary[result.outcome.value] = summary.get(result.outcome.value, 0) + 1
        parts = ", ".join(f"{count} {name}" for name, count in sorted(summary.items()))
        console.print(
            f"{len(results)} document(s): {parts or 'none'}"
            + (f"; {len(errors)} unreadable source(s)" if errors else "")
        )
    if refused or not results:
        raise typer.Exit(1)


def _print_submit_result(console: Console, source: str, result: Any) -> None:
    from rich.markup import escape

    bill = escape(result.bill_no or "(no billNo)")
    where = escape(source)
    if result.accepted:
        console.print(
            f"[green]✓[/] {result.outcome.value:<12} {bill}  tenant={result.tenant} "
            f"#{result.document_id} {result.status}  [dim]{where}[/]"
        )
        return
    if result.outcome.value == "conflict":
        console.print(f"[red]✗ conflict[/]     {bill}  [dim]{where}[/]: {escape(result.message)}")
        return
    console.print(f"[red]✗ invalid[/]      {bill}  [dim]{where}[/]")
    for issue in result.issues:
        console.print(
            f"    {escape(issue.path or '(bill)')} [yellow]\\[{issue.rule}][/] "
            f"{escape(issue.message)} / {escape(issue.message_zh)}"
        )


# ---------------------------------------------------------------------------------- status


@app.command()
def status(ctx: typer.Context, tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """States by tenant: counts and oldest ages; paused, stuck and parked highlighted."""
    from producers.overview import ATTENTION_STATES, overview
    from store.states import DocumentStatus

    components = _context(ctx).components()
    with components.sessions() as session:
        data = overview(session, components.tenants, components.settings.stuck_alert, tenant=tenant)
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    # States as rows, tenants as columns: fits an 80-column terminal with three tenants.
    console = _console()
    table = Table(title="documents by state (count · oldest age)")
    table.add_column("state")
    for row in data["tenants"]:
        header = f"[bold red]{row['tenant']}\nPAUSED[/]" if row["paused"] else row["tenant"]
        table.add_column(header, justify="right")
    attention = {state.value for state in ATTENTION_STATES}
    for state in DocumentStatus:
        cells = [state.value]
        for row in data["tenants"]:
            item = row["states"][state.value]
            if not item["count"]:
                cells.append("[dim]0[/]")
                continue
            text = f"{item['count']} · {_age(item['oldest_age_seconds'])}"
            if item["stuck"]:
                text = f"[bold red]{text} STUCK[/]"
            elif state.value in attention:
                text = f"[yellow]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    console.print(table)
    for row in data["tenants"]:
        if row["paused"]:
            console.print(f"[bold red]tenant {row['tenant']} is paused:[/] {row['paused_reason']}")
        if row["parked_notifications"]:
            console.print(
                f"[bold red]tenant {row['tenant']}: {row['parked_notifications']} ERP "
                "notification(s) parked[/] (delivery gave up)"
            )
        if row["attention"]:
            console.print(
                f"[yellow]tenant {row['tenant']}: {row['attention']} document(s) need an "
                "operator[/] (fapiao replay --dry-run)"
            )
    callbacks = data["callbacks"]
    console.print(
        "callbacks: " + ", ".join(f"{state} {count}" for state, count in callbacks.items())
    )


# ---------------------------------------------------------------------------------- show


def _find(session: Any, bill_no: str, seller_tax_id: str | None, tenant: str | None) -> Any:
    from producers.documents import AmbiguousBillNo, find_document

    try:
        return find_document(session, bill_no, seller_tax_id=seller_tax_id, tenant=tenant)
    except AmbiguousBillNo as exc:
        _fail_ambiguous(exc)
    except LookupError as exc:
        _fail(str(exc))


def _fail_ambiguous(exc: Any) -> NoReturn:
    lines = "\n".join(
        f"  --tenant {c['tenant']} --seller-tax-id {c['seller_tax_id']}  ({c['status']})"
        for c in exc.candidates
    )
    _fail(f"{exc}\n{lines}")


@app.command()
def show(
    ctx: typer.Context,
    bill_no: Annotated[str, typer.Argument(help="单据编号 (billNo).")],
    seller_tax_id: SellerOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """One document: state, reason, invoices and timeline.

    The timeline merges transitions, cloud calls, callbacks and invoices, oldest first.
    """
    from producers.documents import document_view

    components = _context(ctx).components()
    with components.sessions() as session:
        document = _find(session, bill_no, seller_tax_id, tenant)
        view = document_view(session, document)
    if as_json:
        _print_json(view)
        return
    _render_view(view)


def _render_view(view: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from producers.documents import jsonable

    console = _console()
    console.print(
        f"[bold]{escape(view['bill_no'])}[/]  tenant {view['tenant']}  seller "
        f"{view['seller_tax_id']}  revision {view['revision']}  document #{view['document_id']}"
    )
    console.print(
        f"state [bold]{view['status']}[/] for {_age(view['age_seconds'])}; total "
        f"{jsonable(view['total_amount'])} (incl. tax {jsonable(view['total_incl_tax'])}), "
        f"issued {jsonable(view['issued_amount'])}"
    )
    if view["reason"]:
        console.print(f"reason: {escape(str(view['reason']))}")
    if view.get("original"):
        original = view["original"]
        console.print(
            f"red-letter document (红冲) of [bold]{escape(original['bill_no'])}[/] "
            f"(document #{original['document_id']}, {original['status']})"
        )
    if view.get("red_documents"):
        reds = Table(title="red-letter documents (红字单据)")
        for column in ("bill", "state", "total", "reverses invoice", "redReason"):
            reds.add_column(column)
        for red in view["red_documents"]:
            reds.add_row(
                escape(red["bill_no"]),
                red["status"],
                str(jsonable(red["total_amount"])),
                red["original_invoice_number"] or "",
                red["red_reason"] or "",
            )
        console.print(reds)
    if view["invoices"]:
        table = Table(title="invoices")
        columns = (
            "code", "number", "status", "standing", "date", "amount", "tax", "files / error"
        )  # fmt: skip
        merged = any(invoice["merged"] for invoice in view["invoices"])
        for column in columns + (("merged with",) if merged else ()):
            table.add_column(column)
        for invoice in view["invoices"]:
            files = " ".join(invoice["files"].values()) or (invoice["issue_error_message"] or "")
            others = [no for no in invoice["bill_nos"] if no != view["bill_no"]]
            table.add_row(
                invoice["invoice_code"] or "",
                invoice["invoice_num"] or "",
                invoice["invoice_status"] or "",
                _standing(invoice),
                invoice["invoice_date"] or "",
                str(jsonable(invoice["total_amount"]) or ""),
                str(jsonable(invoice["total_tax_amount"]) or ""),
                escape(files),
                *((escape(", ".join(others)),) if merged else ()),
            )
        console.print(table)
    table = Table(title="timeline")
    for column in ("at", "what", "detail", "by"):
        table.add_column(column)
    for entry in view["timeline"]:
        at = entry["at"].strftime("%Y-%m-%d %H:%M:%S")
        kind = entry["kind"]
        if kind == "transition":
            what = f"{entry['event']}: {entry['from'] or '∅'} → {entry['to']}"
            if entry["outcome"] != "applied":
                what += f" ({entry['outcome']})"
            detail, by = entry["reason"] or "", entry["actor"]
        elif kind == "cloud_call":
            what = f"call {entry['interface']} → {entry['outcome']}"
            code = f" code {entry['error_code']}" if entry["error_code"] else ""
            detail = f"HTTP {entry['http_status']}{code} {entry['message'] or ''}"
            by = f"attempt {entry['attempt']}" if entry["attempt"] else ""
        elif kind == "callback":
            what = f"callback #{entry['inbox_id']} ({entry['style']})"
            detail, by = f"{entry['state']} {entry['error'] or ''}", "cloud"
        elif kind == "invoice_standing":
            number = f"{entry['invoice_code'] or ''}{entry['invoice_num'] or ''}"
            what = f"invoice {number} {entry['standing']}"
            left = entry["can_red_amount"]
            detail, by = ("" if left is None else f"can red {jsonable(left)}"), "cloud"
        else:
            what = f"invoice {entry['invoice_code'] or ''}{entry['invoice_num'] or ''}"
            detail, by = entry["issue_error_message"] or entry["invoice_status"] or "", ""
        table.add_row(at, escape(what), escape(detail.strip()), escape(by or ""))
    console.print(table)


def _standing(invoice: dict[str, Any]) -> str:
    """An invoice's standing after issuance, with what is left to reverse or what it reverses."""
    standing = str(invoice.get("standing") or "normal")
    if invoice.get("original_invoice_num"):
        code = invoice.get("original_invoice_code") or ""
        return f"red of {code}{invoice['original_invoice_num']}"
    if standing == "partially_reversed" and invoice.get("can_red_amount") is not None:
        return f"{standing} (left {invoice['can_red_amount']})"
    return "" if standing == "normal" else standing


# ---------------------------------------------------------------------------------- replay


@app.command()
def replay(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="failed and/or rejected (default both). Repeatable."),
    ] = None,
    bill: Annotated[
        list[str] | None, typer.Option("--bill", help="Only these bill numbers. Repeatable.")
    ] = None,
    tenant: TenantOption = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only documents that entered their state since (2h, 7d, ISO date)."),
    ] = None,
    error_code: Annotated[
        str | None, typer.Option("--error-code", help="Only this last errorCode.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be replayed; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Push failed or rejected documents again (same content).

    Documents in any other state (in_doubt, pushed, invoiced, …) are never replayed.
    """
    from producers.documents import document_summary
    from producers.operations import DocumentFilter, FilterError, plan, run_planned

    criteria = DocumentFilter(
        statuses=tuple(state or ()),
        tenant=tenant,
        bill_nos=tuple(bill or ()),
        changed_since=parse_since(since) if since else None,
        error_code=error_code,
    )
    components = _context(ctx).components()
    with components.sessions() as session:
        try:
            candidates = plan(session, "replay", criteria, limit=limit)
        except FilterError as exc:  # the only criterion a user can get wrong here: --state
            raise typer.BadParameter(exc.message, param_hint="--state") from None
        listed = [document_summary(doc) for doc in candidates]
        for item, doc in zip(listed, candidates, strict=True):
            item["last_error_message"] = doc.last_error_message
    if dry_run or not listed:
        if as_json:
            _print_json({"dry_run": dry_run, "would_replay": listed, "count": len(listed)})
        else:
            if listed:
                _print_candidates(listed, "would replay")
            else:
                _console().print("nothing to replay")
        return
    if not as_json:
        _print_candidates(listed, "replay")
    if not yes and not typer.confirm(f"Replay {len(listed)} document(s)?", default=False):
        _console(stderr=True).print("nothing replayed")
        raise typer.Exit(1)

    who = _actor(actor)
    with _progress(not as_json, len(listed), "replaying") as advance:
        result = run_planned(
            components,
            "replay",
            candidates,
            actor=who,
            reason=reason or "replayed by an operator (fapiao replay)",
            criteria={**criteria.criteria(), "limit": limit},
            progress=advance,
        )
    by_id = {item["document_id"]: item for item in listed}
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in result.documents:
        item = by_id[entry["document_id"]]
        if entry["outcome"] == "replayed":
            done.append({**item, "status": entry["to_status"], "from_status": entry["status"]})
        else:
            skipped.append({**item, "skipped": entry["outcome"]})
    if as_json:
        _print_json({"replayed": done, "skipped": skipped, "count": len(done)})
    else:
        console = _console()
        console.print(f"replayed {len(done)} document(s) (actor {who})")
        for item in skipped:
            console.print(f"[yellow]skipped {item['bill_no']}[/]: {item['skipped']}")
    if skipped:
        raise typer.Exit(1)


def _print_candidates(listed: Sequence[dict[str, Any]], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{title}: {len(listed)} document(s)")
    for column in ("bill_no", "tenant", "seller", "state", "for", "error"):
        table.add_column(column)
    for item in listed:
        error = " ".join(
            part for part in (item["last_error_code"], item["last_error_message"]) if part
        )
        table.add_row(
            escape(item["bill_no"]),
            item["tenant"],
            item["seller_tax_id"],
            item["status"],
            _age(item["age_seconds"]),
            escape(error[:80]),
        )
    _console().print(table)


# ---------------------------------------------------------------------------------- withdraw


@app.command()
def withdraw(
    ctx: typer.Context,
    bill_no: Annotated[str, typer.Argument(help="单据编号 (billNo).")],
    seller_tax_id: SellerOption = None,
    tenant: TenantOption = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw a document: at once when it never reached the cloud, else BILL.WITHDRAW."""
    from producers.documents import AmbiguousBillNo
    from producers.operations import act_on_document
    from store.lifecycle import LifecycleError

    components = _context(ctx).components()
    try:
        action = act_on_document(
            components,
            "withdraw",
            bill_no,
            seller_tax_id=seller_tax_id,
            tenant=tenant,
            actor=_actor(actor),
            reason=reason or "withdrawn by an operator",
        )
    except AmbiguousBillNo as exc:
        _fail_ambiguous(exc)
    except (LookupError, LifecycleError) as exc:
        _fail(str(exc))
    if as_json:
        _print_json(action.as_dict())
        return
    if not action.applied:
        _console().print(f"{bill_no} is already {action.to_status}; nothing to do")
    elif action.enqueue:
        _console().print(
            f"{bill_no}: {action.from_status} → {action.to_status}; BILL.WITHDRAW sent"
        )
    else:
        _console().print(f"{bill_no}: {action.from_status} → {action.to_status}")


@app.command()
def reverse(
    ctx: typer.Context,
    bill_no: Annotated[str, typer.Argument(help="单据编号 (billNo) of the issued original.")],
    red_reason: Annotated[
        str,
        typer.Option(
            "--red-reason",
            help="冲红原因 redReason: 1 销货退回, 2 开票有误, 3 服务中止, 4 销售折让.",
        ),
    ],
    line: Annotated[
        list[str] | None,
        typer.Option(
            "--line",
            help="DETAIL_ID[=AMOUNT]: reverse this line (all that is left, or AMOUNT on the "
            "original's tax basis); repeat it. None: the whole document.",
        ),
    ] = None,
    red_info_bill_no: Annotated[
        str | None,
        typer.Option("--red-info-bill-no", help="红字确认单编号 redInfoBillNo (专票: required)."),
    ] = None,
    red_bill_no: Annotated[
        str | None,
        typer.Option("--red-bill-no", help="The red bill's billNo (default <BILL_NO>-R<k>)."),
    ] = None,
    seller_tax_id: SellerOption = None,
    tenant: TenantOption = None,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reverse an issued document with red-letter (红冲) document(s): one per blue invoice.

    Checked against what the cloud says may still be reversed (canRedAmount); a repeat of the
    same request answers the same red documents.
    """
    from producers.documents import AmbiguousBillNo
    from producers.operations import reverse_document
    from producers.reversal import (
        BadReversalRequest,
        CloudUnavailable,
        NotReversible,
        ReversalRefused,
        reversal_request,
    )

    lines = []
    for text in line or []:
        detail_id, sep, amount = text.partition("=")
        lines.append({"detailId": detail_id, **({"amount": amount} if sep else {})})
    body: dict[str, Any] = {
        "redReason": red_reason,
        "redInfoBillNo": red_info_bill_no,
        "lines": lines,
        "red_bill_no": red_bill_no,
    }
    try:
        wanted = reversal_request(bill_no, body, seller_tax_id=seller_tax_id, tenant=tenant)
    except BadReversalRequest as exc:
        _fail(f"{exc} / {exc.message_zh}", code=2)
    components = _context(ctx).components()
    try:
        result = reverse_document(
            components, wanted, actor=_actor(actor), reason=reason or "reversed by an operator"
        )
    except AmbiguousBillNo as exc:
        _fail_ambiguous(exc)
    except ReversalRefused as exc:
        if as_json:
            _print_json({"refused": exc.bill_no, "issues": [i.as_dict() for i in exc.issues]})
            raise typer.Exit(1) from None
        from rich.markup import escape

        _fail(
            "\n".join(
                [f"reversal of {bill_no} refused / 红冲未通过校验:"]
                + [f"  - {escape(str(issue))}" for issue in exc.issues]
            )
        )
    except (LookupError, NotReversible, CloudUnavailable) as exc:
        from rich.markup import escape

        _fail(escape(str(exc)))
    if as_json:
        _print_json(result.as_dict())
        return
    console = _console()
    for item in result.red_documents:
        console.print(
            f"{item['bill_no']}: {item['outcome']}, {item['status']}, total "
            f"{item['total_amount']} reverses invoice {item['original_invoice_number']}"
        )
    if not result.created:
        console.print("nothing new: this request was made before / 该红冲请求已处理过")


# ---------------------------------------------------------------------------------- tenants


@tenants_app.command("list")
def tenants_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every tenant of the tenants file, with its pause state, token health and credit quota."""
    from producers.operations import tenant_rows

    rows = tenant_rows(_context(ctx).components())
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="tenants")
    for column in ("name", "base URL", "businessSystemCode", "sellers", "callbacks", "token"):
        table.add_column(column)
    table.add_column("credit quota left (day / month)")
    table.add_column("state")
    for item in rows:
        state_text = (
            f"[bold red]PAUSED[/] {item['paused_reason'] or ''}" if item["paused"] else "active"
        )
        table.add_row(
            item["name"],
            item["base_url"],
            item["business_system_code"],
            "\n".join(item["seller_tax_ids"]),
            item["callback_style"],
            item["token_health"],
            _quota_text(item["quota"]),
            state_text,
        )
    _console().print(table)


def _quota_text(quota: dict[str, Any] | None) -> str:
    """One line per seller: surplus of the day / month, warning, hold (until when)."""
    if quota is None:
        return "unknown"
    lines = []
    for seller in quota["sellers"]:
        text = f"{seller['day_surplus'] or '?'} / {seller['month_surplus'] or '?'}"
        if seller["is_warning"]:
            text += " [yellow]WARNING[/]"
        if seller["held"]:
            text += f" [bold red]HELD[/] until {seller['held_until']:%Y-%m-%d %H:%M} UTC"
        lines.append(text)
    return "\n".join(lines)


def _tenant_action(
    ctx: typer.Context, name: str, pause: bool, reason: str | None, actor: str | None
) -> dict[str, Any]:
    from producers.operations import UnknownTenant, pause_tenant, resume_tenant

    components = _context(ctx).components()
    act = pause_tenant if pause else resume_tenant
    try:
        return act(components, name, actor=_actor(actor), reason=reason)
    except UnknownTenant as exc:
        _fail(str(exc))


@tenants_app.command("pause")
def tenants_pause(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    reason: ReasonOption = None,
    actor: ActorOption = None,
) -> None:
    """Stop pushes, polls and withdrawals for a tenant (callbacks are still stored)."""
    row = _tenant_action(ctx, name, True, reason, actor)
    _console().print(f"tenant {name} paused: {row['paused_reason']}")


@tenants_app.command("resume")
def tenants_resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    reason: ReasonOption = None,
    actor: ActorOption = None,
) -> None:
    """Let a paused tenant's work go on (fix the cause first: fapiao doctor); also releases
    a credit-quota (授信额度) hold."""
    row = _tenant_action(ctx, name, False, reason, actor)
    _console().print(f"tenant {name} resumed")
    if row["paused"]:
        _console().print("[yellow]note: the tenants file still says paused = true[/]")


# ---------------------------------------------------------------------------------- notifications


@notifications_app.command("list")
def notifications_list(
    ctx: typer.Context,
    state: Annotated[
        str, typer.Option("--state", help="pending, delivered, parked or all.")
    ] = "parked",
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """ERP notifications (parked ones by default), oldest first."""
    from producers.operations import FilterError, list_notifications

    try:
        page = list_notifications(
            _context(ctx).components(),
            state=None if state == "all" else state,
            tenant=tenant,
            limit=limit,
        )
    except FilterError as exc:
        raise typer.BadParameter(str(exc), param_hint="--state") from None
    if as_json:
        _print_json(page["items"])
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"ERP notifications ({state})")
    for column in ("id", "bill_no", "tenant", "event", "state", "tries", "last error"):
        table.add_column(column)
    for item in page["items"]:
        table.add_row(
            str(item["id"]),
            escape(item["bill_no"]),
            item["tenant"],
            item["event"],
            item["state"],
            str(item["attempts"]),
            escape((item["last_error"] or "")[:60]),
        )
    _console().print(table)


@notifications_app.command("resend")
def notifications_resend(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(help="Notification (outbox) ids.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audit log).")],
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send parked ERP notifications again (back to pending, due now)."""
    from producers.operations import FilterError, resend_notifications

    try:
        answer = resend_notifications(
            _context(ctx).components(), ids, actor=_actor(actor), reason=reason
        )
    except FilterError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.field) from None
    if as_json:
        _print_json(answer)
    else:
        console = _console()
        for item in answer["notifications"]:
            console.print(f"#{item['id']} {item['bill_no'] or ''}: {item['outcome']}")
        console.print(f"{answer['count']} notification(s) sent again")
    if any(item["outcome"] == "not_found" for item in answer["notifications"]):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database of FAPIAO_DATABASE_URL up to REVISION (default: the newest)."""
    from store import migrate

    settings = _context(ctx).settings()
    try:
        migrate.upgrade(settings.database_url, revision)
    except Exception as exc:  # alembic/driver errors: say what failed, no traceback
        _fail(f"upgrade failed: {type(exc).__name__}: {exc}")
    _console().print(f"database at revision {migrate.current(settings.database_url)}")


@db_app.command("current")
def db_current(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The revision the database is at, and the newest the code knows."""
    from store import migrate

    settings = _context(ctx).settings()
    data = {"current": migrate.current(settings.database_url), "head": migrate.head()}
    if as_json:
        _print_json(data)
    else:
        _console().print(f"current {data['current']}, head {data['head']}")


def _cutoff(older_than: str, now: datetime) -> datetime:
    """``--older-than``: a duration (90d, 12h, 30m) or an ISO date/datetime, not in the future."""
    try:
        cutoff = parse_since(older_than, now=now)
    except typer.BadParameter as exc:
        raise typer.BadParameter(str(exc.message), param_hint="--older-than") from None
    if cutoff > now:
        raise typer.BadParameter(f"{older_than!r} is in the future", param_hint="--older-than")
    return cutoff


@db_app.command("purge")
def db_purge(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Age of what goes: 90d, 12h, 30m (or an ISO date as cutoff)."
        ),
    ],
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            file_okay=False,
            help="Directory to write the doomed rows to first (JSON Lines, gzip, per table).",
        ),
    ] = None,
    no_export: Annotated[
        bool, typer.Option("--no-export", help="Delete without exporting (say so explicitly).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go per table; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=50_000, help="Rows per DELETE transaction.")
    ] = 5000,
    as_json: JsonOption = False,
) -> None:
    """Delete old settled callbacks, cloud-call ledger rows and delivered ERP notifications.

    Only rows whose document is no longer live; never documents, events or invoices, never an
    unsettled callback or an undelivered notification. Rows are exported before deletion
    (--export DIR) unless --no-export says otherwise.
    """
    from store.db import make_engine
    from store.purge import count_doomed, purge

    now = datetime.now(UTC)
    cutoff = _cutoff(older_than, now)
    if not dry_run and (export is None) == (not no_export):
        raise typer.BadParameter(
            "give --export DIR (rows are saved before they are deleted) or --no-export",
            param_hint="--export / --no-export",
        )
    settings = _context(ctx).settings()
    # DEFERRED on SQLite: the export's read snapshot must not hold the write lock meanwhile.
    engine = make_engine(settings.database_url, sqlite_begin="DEFERRED")
    try:
        counts = count_doomed(engine, cutoff)
        total = sum(counts.values())
        if dry_run or total == 0:
            if as_json:
                _print_json(
                    {"dry_run": dry_run, "cutoff": cutoff, "would_delete": counts, "total": total}
                )
            else:
                _console().print(
                    f"{'would delete' if dry_run else 'nothing to delete'} (older than"
                    f" {cutoff:%Y-%m-%d %H:%M:%S} UTC): "
                    + ", ".join(f"{name} {count}" for name, count in counts.items())
                )
            return
        if not yes:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            if not typer.confirm(f"Delete {total} row(s) ({listed})?", default=False):
                _console(stderr=True).print("nothing deleted")
                raise typer.Exit(1)
        try:
            with _progress(not as_json, total, "purging") as advance:
                report = purge(
                    engine,
                    cutoff,
                    export_dir=export if not no_export else None,
                    batch_size=batch_size,
                    now=now,
                    progress=lambda _table, done: advance(done),
                )
        except OSError as exc:
            _fail(f"export failed, nothing deleted: {exc}")
    finally:
        engine.dispose()
    if as_json:
        _print_json({"dry_run": False, "cutoff": cutoff, "tables": [r.as_dict() for r in report]})
        return
    from rich.table import Table

    console = _console()
    table = Table(title=f"purged: older than {cutoff:%Y-%m-%d %H:%M:%S} UTC")
    for column in ("table", "deleted", "kept (changed meanwhile)"):
        table.add_column(column)
    for item in report:
        table.add_row(item.table, str(item.deleted), str(item.kept))
    console.print(table)
    for item in report:
        if item.export_file is not None:
            console.print(f"exported {item.exported} {item.table} row(s) to {item.export_file}")


# ---------------------------------------------------------------------------------- doctor


@app.command()
def doctor(
    ctx: typer.Context,
    tokens: Annotated[
        bool, typer.Option("--tokens/--no-tokens", help="Ask the cloud for each tenant's token.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Check settings, database, Redis and each tenant's token; say what to fix.

    Also checks the tenants file, the migrations and the broker.
    """
    from producers.doctor import diagnose
    from schemas.settings import Settings

    context = _context(ctx)
    checks = diagnose(context.load_settings or Settings.load, tokens=tokens)
    if as_json:
        _print_json({"ok": all(c.ok for c in checks), "checks": [
            {"name": c.name, **c.as_dict()} for c in checks
        ]})  # fmt: skip
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="fapiao doctor")
        for column in ("check", "", "detail", "fix"):
            table.add_column(column)
        for check in checks:
            mark = "[green]✓[/]" if check.ok else "[bold red]✗[/]"
            table.add_row(check.name, mark, escape(check.detail), escape(check.hint))
        _console().print(table)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- reconcile

CSV_COLUMNS: Final = (
    "kind",
    "billNo",
    "tenant",
    "sellerTaxpayerId",
    "erp_totalAmount",
    "erp_includeTaxAmount",
    "bridge_status",
    "bridge_includeTaxAmount",
    "cloud_known",
    "cloud_invoiceStatus",
    "cloud_includeTaxAmount",
    "reason",
    "reason_zh",
)


def _csv_row(finding: dict[str, Any]) -> list[str]:
    erp, bridge, cloud = finding.get("erp") or {}, finding.get("bridge") or {}, finding.get("cloud")
    statuses = ""
    if cloud:
        invoices = cloud.get("invoices") or []
        statuses = " ".join(str(i.get("invoiceStatus") or "") for i in invoices) or str(
            cloud.get("invoiceStatus") or ""
        )
    values = (
        finding["kind"],
        finding["billNo"],
        finding["tenant"],
        finding.get("sellerTaxpayerId"),
        erp.get("totalAmount"),
        erp.get("includeTaxAmount"),
        bridge.get("status"),
        bridge.get("includeTaxAmount"),
        None if cloud is None else ("yes" if cloud.get("known") else "no"),
        statuses,
        None if cloud is None else cloud.get("includeTaxAmount"),
        finding["reason"],
        finding["reason_zh"],
    )
    return ["" if v is None else str(v) for v in values]


@app.command()
def reconcile(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="First day, YYYY-MM-DD (Asia/Shanghai).")],
    until: Annotated[
        str | None, typer.Option("--until", help="Last day, inclusive (default: --since).")
    ] = None,
    tenant: TenantOption = None,
    erp: Annotated[
        str | None,
        typer.Option(
            "--erp",
            help="The ERP's list: CSV with a header (billNo,totalAmount,includeTaxAmount,"
            "sellerTaxpayerId,tenant) or JSON; - reads stdin.",
        ),
    ] = None,
    grace_minutes: Annotated[
        int, typer.Option("--grace-minutes", min=0, help="Changed more recently: in flight.")
    ] = 30,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the findings as CSV.")] = False,
    actor: ActorOption = None,
) -> None:
    """Three-way reconciliation: the ERP's list, the bridge and the cloud (stored report).

    Exit 0: no finding and every bill answered; 1: findings or unanswered bills; 2: bad input.
    """
    from producers.reconciliation import ReconciliationInputError, run, window_of
    from schemas.reconciliation import ErpListError, parse_erp_list

    if as_json and as_csv:
        _fail("give --json or --csv, not both / --json 与 --csv 只能二选一", code=2)
    try:
        window = window_of(since, until)
    except ReconciliationInputError as exc:
        _fail(f"{exc} / {exc.message_zh}", code=2)
    erp_bills = None
    if erp is not None:
        try:
            raw = sys.stdin.buffer.read() if erp == "-" else Path(erp).read_bytes()
        except OSError as exc:
            _fail(f"--erp {erp}: cannot read ({exc.strerror}) / 无法读取 ERP 清单文件", code=2)
        try:
            erp_bills = parse_erp_list(raw)
        except ErpListError as exc:
            _fail(f"--erp {erp}: {exc}", code=2)
    components = _context(ctx).components()
    try:
        report = run(
            components,
            window,
            trigger="cli",
            actor=_actor(actor),
            tenant=tenant,
            erp=erp_bills,
            grace=timedelta(minutes=grace_minutes),
        )
    except ReconciliationInputError as exc:
        _fail(f"{exc} / {exc.message_zh}", code=2)
    if as_json:
        _print_json(report)
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for finding in report["findings"]:
            writer.writerow(_csv_row(finding))
    else:
        _print_reconciliation(report)
    if report["total"] or report["unanswered"]:
        raise typer.Exit(1)


def _print_reconciliation(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    window = report["window"]
    console = _console()
    console.print(
        f"reconciliation #{report['id']} {window['since']}..{window['until']} (Asia/Shanghai),"
        f" tenant {report['tenant'] or 'all'}: {report['documents']} document(s),"
        f" {report['queried']} query(ies), {report.get('in_flight', 0)} in flight,"
        f" {report['total']} finding(s)"
    )
    counts = ", ".join(f"{kind}={n}" for kind, n in report["counts"].items())
    console.print(f"by kind: {counts}")
    if report["findings"]:
        table = Table()
        for column in ("kind", "billNo", "tenant", "seller", "reason / 原因"):
            table.add_column(column, overflow="fold")
        for f in report["findings"]:
            table.add_row(
                f["kind"],
                escape(f["billNo"]),
                f["tenant"],
                f.get("sellerTaxpayerId") or "",
                escape(f"{f['reason']}\n{f['reason_zh']}"),
            )
        console.print(table)
    for item in report["unanswered"]:
        console.print(
            f"[yellow]unanswered / 未获答复: {escape(item['billNo'])} ({item['tenant']}):"
            f" {escape(item['reason'])}[/]"
        )


# ---------------------------------------------------------------------------------- probe


@app.command()
def probe(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name (a sandbox account).")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Probe a tenant not marked sandbox = true (pushes test bills)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Learn a sandbox tenant's contract dialect and print its [tenants.cloud] table.

    Only harmless calls: queries and withdraws of random unknown bills, one call with a
    made-up token, and test bills pushed with autoInvoice 0 and withdrawn at once.
    """
    from producers.probe import cloud_table, run_probe
    from worker.kingdee import (
        CallContext,
        CloudError,
        HttpKingdeeClient,
        fetch_access_token,
        make_http_client,
    )
    from worker.ledger import SqlCallLedger
    from worker.ratelimit import RedisRateGate

    context = _context(ctx)
    components = context.components()
    config = components.tenants.by_name(tenant)
    if config is None:
        _fail(f"unknown tenant {tenant!r}; known: {', '.join(components.tenants.names)}", code=2)
    if not config.sandbox and not force:
        _fail(
            f"tenant {tenant!r} is not marked `sandbox = true` in the tenants file. The probe"
            " pushes test bills (autoInvoice 0, withdrawn at once) and must only meet a sandbox"
            " account: mark it, or pass --force if you are sure."
            f" / 租户 {tenant!r} 未标记 sandbox = true；探测会推送测试单据（不开票，随即撤回），"
            "只应对沙箱账号运行：请先标记，或确认后使用 --force",
            code=2,
        )
    http = make_http_client(context.settings().http)
    try:
        # The workers' shared per-tenant rate gate: the probe takes its calls from the same budget.
        gate = RedisRateGate(components.redis) if components.redis is not None else None
        ledger = SqlCallLedger(components.sessions)
        client = HttpKingdeeClient(config, http, ledger=ledger, rate_gate=gate)
        try:
            token = fetch_access_token(client)
        except CloudError as exc:
            _fail(f"no access_token for tenant {tenant!r}: {exc.reason}")
        report = run_probe(
            client,
            lambda envelope, access_token: client.send_envelope(
                envelope, access_token=access_token, context=CallContext()
            ),
            token.value,
        )
    finally:
        http.close()
    if as_json:
        _print_json(report.as_json())
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"fapiao probe: tenant {tenant}, seller {report.seller_tax_id}")
        for column in ("switch", "reading", "why", "evidence (call → answer)"):
            table.add_column(column, overflow="fold")
        for name, finding in report.findings.items():
            shown = "\n".join(f"{e.call} → {e.answer}" for e in finding.evidence[:2])
            value = finding.value or "[dim]unknown[/]"
            table.add_row(name, value, escape(finding.reason), escape(shown))
        _console(stderr=True).print(table)
        typer.echo(cloud_table(report), nl=False)
    if report.left_live:
        err = _console(stderr=True)
        for bill_no in report.left_live:
            err.print(
                f"[bold red]WARNING: test bill {bill_no} may still be LIVE in tenant {tenant!r}"
                " (the cloud never confirmed it gone): withdraw it in the cloud console."
                f" / 警告：测试单据 {bill_no} 可能仍在云端，请在发票云手工撤回。[/]",
                highlight=False,
            )
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- servers


@app.command()
def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies trusted for X-Forwarded-For (the callback IP allow-list)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="FAPIAO_API_WORKERS",
            help="API processes (one per core): each builds its own app from the FAPIAO_* "
            "environment; one process is CPU-bound on large batches.",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP app: ERP hooks (/v1), Kingdee callbacks, /healthz, /metrics, /docs."""
    import uvicorn

    from producers.http import create_app
    from schemas.settings import SettingsError
    from worker.logs import configure_logging
    from worker.metrics import OWN_DIR_PREFIX, prepare_multiprocess

    context = _context(ctx)
    settings = context.settings()
    try:
        settings.require_api_secrets()  # only the API process needs them (not db, workers)
    except SettingsError as exc:
        _fail(str(exc), code=2)
    configure_logging(settings.log_format, settings.log_level)
    http_app: Any
    shared_metrics: Path | None = None
    if workers > 1:
        context.components()  # refuse a bad tenants file here, before any worker starts
        http_app = "producers.http:app_from_environment"
        # Spawned processes inherit the variable: their counters add up (producers.metrics).
        shared_metrics = prepare_multiprocess(settings.metrics.multiproc_dir).path
    else:
        http_app = create_app(settings, components=context.components())
    try:
        uvicorn.run(
            http_app,
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            http="httptools",
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            proxy_headers=forwarded_allow_ips is not None,
            forwarded_allow_ips=forwarded_allow_ips,
            access_log=False,
            log_level=log_level,
            log_config=None,  # keep configure_logging's structured handler (FAPIAO_LOG_FORMAT)
        )
    finally:
        if shared_metrics is not None and shared_metrics.name.startswith(OWN_DIR_PREFIX):
            shutil.rmtree(shared_metrics, ignore_errors=True)


@console_app.command("hash-password")
def console_hash_password(
    name: Annotated[
        str | None, typer.Option("--name", help="Also print the account entry for this name.")
    ] = None,
    role: Annotated[
        str, typer.Option("--role", help="operator (acts) or viewer (reads only).")
    ] = "operator",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Hash a console password (PBKDF2-SHA256); asks twice unless --password-stdin."""
    from producers.console.auth import hash_password

    if role not in ("operator", "viewer"):
        _fail("--role must be operator or viewer / 角色只能是 operator 或 viewer", code=2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password / 密码", hide_input=True, confirmation_prompt=True)
    if not password:
        _fail("the password is empty / 密码为空")
    hashed = hash_password(password)
    if name is None:
        typer.echo(hashed)
        return
    # One entry of FAPIAO_CONSOLE__USERS (a JSON list) or of a users file's [[users]].
    typer.echo(json.dumps({"name": name, "role": role, "password_hash": hashed}))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def simulator(ctx: typer.Context) -> None:
    """Run the simulated Kingdee Invoice Cloud (fapiao simulator --help for its options)."""
    from simulator.cli import simulator as simulator_command

    wrapper = typer.Typer(add_completion=False)
    wrapper.command(name="simulator")(simulator_command)
    command = typer.main.get_command(wrapper)
    command.main(args=list(ctx.args), prog_name="fapiao simulator")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
