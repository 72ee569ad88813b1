"""``fapiao simulator``: run the simulated Kingdee Invoice Cloud (uvicorn, uvloop, httptools).

Mount it in the ``fapiao`` CLI with ``app.command("simulator")(simulator.cli.simulator)``;
``python -m simulator`` runs it alone. The tenants file is the bridge's own
(``--tenants-file``, else ``FAPIAO_TENANTS_FILE``, else ``tenants.toml``); it is read as in
development, so the simulator-only placeholder secrets of ``tenants.example.toml`` are fine.

Examples::

    fapiao simulator --tenants-file tenants.example.toml --callback-url \\
        http://127.0.0.1:8000/callbacks/kingdee/<secret>
    fapiao simulator --faults push_5xx_before=0.1 --faults drop_after_commit=0.05 --seed 7
    fapiao simulator --issue-delay 0.2 --token-ttl 30 --callback-retry-schedule 0.05,0.1,0.2
    fapiao simulator --tenants-file one-tenant.toml --tenant-path /demo
    fapiao simulator --tenant-path demo=/kingdee --tenant-path shop=/shop2
    fapiao simulator --dialect unknown_bill=empty_list --dialect merge=when_asked
    fapiao simulator --quota demo=1000.00:20000.00 --quota shop=500:5000

``--tenant-path`` overrides the path a tenant is served under (by default the path of its
``base_url``): a bare ``/path`` when the tenants file has exactly one tenant, else
``NAME=/path`` (repeatable, one per tenant). The tenant then answers only under the new path,
and its invoice file URLs point there too.

``--quota TENANT=DAY:MONTH`` (repeatable) gives a tenant a credit quota (授信额度) in yuan incl.
tax; ``GET``/``PUT /_sim/quota`` read and change it at run time (``simulator.quota``).

``--dialect NAME=VALUE`` (repeatable) picks one reading of a guessed part of the contract
(``schemas.cloud_contract.DIALECT_SWITCHES``; ``GET /_sim/dialect`` lists the current one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

if TYPE_CHECKING:
    from simulator.tenancy import SimTenant

__all__ = ["main", "override_tenant_paths", "simulator"]


class TenantPathError(ValueError):
    """A ``--tenant-path`` value that names no tenant, is ambiguous, or is not a path."""


def _clean_path(raw: str, option: str) -> str:
    path = raw.strip()
    if not path.startswith("/"):
        raise TenantPathError(f"{option!r}: the path must start with '/'")
    if any(ch in path for ch in "?#") or any(ch.isspace() for ch in path):
        raise TenantPathError(f"{option!r}: the path may not contain '?', '#' or spaces")
    if "//" in path:
        raise TenantPathError(f"{option!r}: the path may not contain '//'")
    return path.rstrip("/")


def override_tenant_paths(tenants: Sequence[SimTenant], options: Sequence[str]) -> list[SimTenant]:
    """``tenants`` with the paths of ``--tenant-path`` values (``/path`` or ``NAME=/path``).

    A bare ``/path`` is only accepted when there is exactly one tenant. The tenant's base URL
    keeps its scheme and host; only the path changes (so its file URLs follow it).
    """
    by_name = {tenant.name: tenant for tenant in tenants}
    paths: dict[str, str] = {}
    for option in options:
        name, sep, raw = option.partition("=")
        if not sep:
            raw, name = option, ""
            if len(tenants) != 1:
                names = ", ".join(sorted(by_name))
                raise TenantPathError(
                    f"{option!r} is ambiguous: the tenants file has {len(tenants)} tenants"
                    f" ({names}); use NAME=/path"
                )
            name = tenants[0].name
        name = name.strip()
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise TenantPathError(f"{option!r}: no tenant named {name!r} (tenants: {known})")
        if name in paths:
            raise TenantPathError(f"{option!r}: tenant {name!r} is given a path twice")
        paths[name] = _clean_path(raw, option)
    result: list[SimTenant] = []
    for tenant in tenants:
        if tenant.name not in paths:
            result.append(tenant)
            continue
        parts = urlsplit(tenant.base_url)
        base_url = urlunsplit((parts.scheme, parts.netloc, paths[tenant.name], "", ""))
        result.append(replace(tenant, base_url=base_url))
    return result


def simulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    tenants_file: Annotated[
        Path,
        typer.Option(
            envvar="FAPIAO_TENANTS_FILE",
            help="Tenants TOML (the bridge's own); each tenant is served on its base URL path.",
        ),
    ] = Path("tenants.toml"),
    tenant_path: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Serve a tenant under another path than its base URL's: '/path' when the"
                " tenants file has one tenant, else NAME=/path (repeatable)."
            ),
        ),
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(help="Where callbacks go (overridable per businessSystemCode via /_sim/)."),
    ] = None,
    issue_delay: Annotated[
        float, typer.Option(help="Seconds from acceptance to issuance of auto-issued bills.")
    ] = 2.0,
    token_ttl: Annotated[
        float, typer.Option(help="Lifetime of app_token and access_token, seconds.")
    ] = 7200.0,
    faults: Annotated[
        list[str] | None,
        typer.Option(help="Fault NAME=VALUE (repeatable); see GET /_sim/faults for names."),
    ] = None,
    state_file: Annotated[
        Path | None, typer.Option(help="SQLite file keeping bills and statistics across restarts.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault dice.")] = None,
    callback_retry_schedule: Annotated[
        str | None,
        typer.Option(help="Comma-separated seconds between callback attempts, e.g. 60,300,900."),
    ] = None,
    callback_timeout: Annotated[
        float | None, typer.Option(help="Seconds one callback attempt may take.")
    ] = None,
    invoice_amount_limit: Annotated[
        str | None,
        typer.Option(help="Per-invoice limit (限额, excluding tax); larger bills are split."),
    ] = None,
    max_lines_per_invoice: Annotated[
        int | None, typer.Option(help="Lines per invoice before a split (default 8 / 2000 数电).")
    ] = None,
    lenient_data: Annotated[
        bool, typer.Option(help="Accept a raw JSON `data` instead of base64.")
    ] = False,
    plain_query_data: Annotated[
        bool, typer.Option(help="Answer BILL.INVOICE.QUERY with plain JSON `data`.")
    ] = False,
    dialect: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Contract dialect NAME=VALUE (repeatable): which reading of a guessed part of"
                " the contract to play; see GET /_sim/dialect."
            ),
        ),
    ] = None,
    quota: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Credit quota TENANT=DAY:MONTH in yuan incl. tax (repeatable); issuance beyond"
                " it fails. See GET /_sim/quota."
            ),
        ),
    ] = None,
    unknown_originals: Annotated[
        str,
        typer.Option(
            help=(
                "A red bill reversing an invoice this simulator never issued: 'refused'"
                " (-10013) or 'assumed' issued before the simulator's time (demo samples)."
            ),
        ),
    ] = "refused",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run a faithful, fault-injecting Kingdee Invoice Cloud for development and tests."""
    import uvicorn

    from schemas.cloud_contract import Dialect, DialectError
    from schemas.tenants import TenantsFileError, load_tenants
    from simulator.app import create_app
    from simulator.config import SimulatorConfig, parse_schedule
    from simulator.faults import FaultPlan, FaultSpecError
    from simulator.quota import QuotaError, parse_quota_option
    from simulator.tenancy import tenants_from_config

    try:
        tenants = tenants_from_config(load_tenants(tenants_file, "development"))
    except TenantsFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenants-file") from exc
    try:
        tenants = override_tenant_paths(tenants, tenant_path or [])
    except TenantPathError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant-path") from exc
    try:
        plan = FaultPlan.from_specs(faults or [])
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from exc
    try:
        played = Dialect.parse(dialect or [])
    except DialectError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dialect") from exc
    try:
        quotas = tuple(parse_quota_option(spec) for spec in quota or [])
    except QuotaError as exc:
        raise typer.BadParameter(str(exc), param_hint="--quota") from exc
    unknown = sorted({name for name, _ in quotas} - {t.name for t in tenants})
    if unknown:
        raise typer.BadParameter(f"no tenant named {', '.join(unknown)}", param_hint="--quota")
    defaults = SimulatorConfig()
    try:
        limit = Decimal(invoice_amount_limit) if invoice_amount_limit else None
        schedule = (
            parse_schedule(callback_retry_schedule)
            if callback_retry_schedule is not None
            else defaults.callback_retry_schedule
        )
        config = SimulatorConfig(
            issue_delay=issue_delay,
            token_ttl=token_ttl,
            callback_url=callback_url,
            callback_retry_schedule=schedule,
            callback_timeout=callback_timeout or defaults.callback_timeout,
            invoice_amount_limit=limit,
            max_lines_per_invoice=max_lines_per_invoice,
            lenient_data=lenient_data,
            plain_query_data=plain_query_data,
            dialect=played,
            faults=plan,
            seed=seed,
            state_file=state_file,
            quotas=quotas,
            unknown_originals=unknown_originals,
        )
    except (ValueError, InvalidOperation) as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        app = create_app(tenants, config)
    except ValueError as exc:  # e.g. two tenants moved onto one path with one accountId
        hint = "--tenant-path" if tenant_path else "--tenants-file"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    for tenant in app.cloud.tenants:
        typer.echo(
            f"tenant {tenant.name}: http://{host}:{port}{tenant.path}"
            f" (businessSystemCode {', '.join(sorted(tenant.business_system_codes))})"
        )
    if plan.active():
        typer.echo(f"faults: {plan.active()}")
    for name, limits in quotas:
        typer.echo(f"quota {name}: day {limits.day}, month {limits.month}")
    if played.differences():
        typer.echo(f"dialect: {played.differences()}")
    typer.echo(f"admin: http://{host}:{port}/_sim/stats")
    uvicorn.run(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level=log_level,
        lifespan="on",
    )


def main() -> None:
    """``python -m simulator``."""
    typer.run(simulator)
