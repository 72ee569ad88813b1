"""How one simulator process behaves: every knob of ``fapiao simulator`` in one value.

| field | default | meaning |
|---|---|---|
| ``issue_delay`` | 2.0 s | acceptance → issuance of an auto-issued bill (the real cloud: ~2 min) |
| ``token_ttl`` | 7200 s | lifetime of app_token and access_token (the cloud: 2 h) |
| ``callback_url`` | None | where callbacks go unless overridden per businessSystemCode |
| ``callback_retry_schedule`` | contract | waits between callback attempts |
| ``callback_timeout`` | contract | seconds one callback attempt may take |
| ``invoice_amount_limit`` | contract (None) | per-invoice limit (限额), amount excluding tax |
| ``max_lines_per_invoice`` | None | overrides the contract's 8 (税控) / 2000 (数电) |
| ``lenient_data`` | False | accept a raw JSON ``data`` (object/array) instead of base64 |
| ``plain_query_data`` | False | answer BILL.INVOICE.QUERY with a plain JSON array |
| ``dialect`` | default | ``schemas.cloud_contract.Dialect`` played at start and after a reset |
| ``faults`` | all off | ``FaultPlan`` |
| ``seed`` | None | seed of the fault dice |
| ``state_file`` | None | SQLite file keeping bills, invoices and statistics across restarts |
| ``quotas`` | none | ``(tenant, Quota)`` credit quotas (授信额度) at start and after a reset |
| ``unknown_originals`` | ``refused`` | red bill reversing an invoice never issued here (a) |

(a) ``refused`` (-10013 原蓝票<n>不存在), or ``assumed`` issued before the simulator's time:
the simulator knows only the invoices it issued itself; ``assumed`` lets samples that
reverse a real-world invoice through (no canRedAmount bookkeeping, no INVOICE.RED). A known
original is always checked (voided, canRedAmount).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from schemas.cloud_contract import (
    CALLBACK_RETRY_DELAYS_SECONDS,
    CALLBACK_TIMEOUT_SECONDS,
    SINGLE_INVOICE_AMOUNT_LIMIT,
    Dialect,
)
from simulator.faults import FaultPlan
from simulator.quota import Quota

__all__ = ["UNKNOWN_ORIGINALS", "SimulatorConfig", "parse_schedule"]

UNKNOWN_ORIGINALS = ("refused", "assumed")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    issue_delay: float = 2.0
    token_ttl: float = 7200.0
    callback_url: str | None = None
    callback_retry_schedule: tuple[float, ...] = tuple(
        float(s) for s in CALLBACK_RETRY_DELAYS_SECONDS
    )
    callback_timeout: float = CALLBACK_TIMEOUT_SECONDS
    invoice_amount_limit: Decimal | None = SINGLE_INVOICE_AMOUNT_LIMIT
    max_lines_per_invoice: int | None = None
    lenient_data: bool = False
    plain_query_data: bool = False
    dialect: Dialect = field(default_factory=Dialect.default)
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int | None = None
    state_file: Path | None = None
    quotas: tuple[tuple[str, Quota], ...] = ()
    unknown_originals: str = "refused"

    def __post_init__(self) -> None:
        if self.issue_delay < 0:
            raise ValueError("issue_delay must not be negative")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if any(delay < 0 for delay in self.callback_retry_schedule):
            raise ValueError("callback retry delays must not be negative")
        if self.invoice_amount_limit is not None and self.invoice_amount_limit <= 0:
            raise ValueError("invoice_amount_limit must be positive")
        if self.unknown_originals not in UNKNOWN_ORIGINALS:
            raise ValueError(f"unknown_originals must be one of {', '.join(UNKNOWN_ORIGINALS)}")
        if self.max_lines_per_invoice is not None and self.max_lines_per_invoice < 2:
            raise ValueError("max_lines_per_invoice must be at least 2 (a line and its discount)")


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"0.05,0.1,0.2"`` → ``(0.05, 0.1, 0.2)``; an empty text means no retries."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(f"not a comma-separated list of seconds: {text!r}") from None
