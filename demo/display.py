"""What the demo shows: live progress, the final table by state, and where to look next.

| observer | for | shows |
|---|---|---|
| ``LiveDisplay`` | a terminal | a Rich live panel: counts by state, every document, recent events |
| ``PlainDisplay`` | ``--headless``, CI, tests | one line per event and per state change |

``render_final(console, report, samples)`` prints the final tables (by state, then per
document against the manifest), ``render_where_next(console, stack, samples)`` the URLs,
credentials and commands to explore what happened.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from demo.samples import SampleSet
from demo.scenario import DemoReport, DocumentRow
from demo.stack import DemoStack

__all__ = ["LiveDisplay", "PlainDisplay", "render_final", "render_where_next"]

# Display order follows the lifecycle (docs/LIFECYCLE.md).
STATE_ORDER = (
    "draft",
    "pushing",
    "in_doubt",
    "pushed",
    "partially_invoiced",
    "invoiced",
    "invoice_failed",
    "rejected",
    "failed",
    "withdrawing",
    "withdrawn",
    "returned",
    "reversed",
)
STATE_STYLE = {
    "invoiced": "green",
    "withdrawn": "cyan",
    "rejected": "yellow",
    "failed": "red",
    "invoice_failed": "red",
    "returned": "magenta",
}


def _state(status: str) -> Text:
    return Text(status, style=STATE_STYLE.get(status, "white"))


def _ordered(counts: Counter[str] | dict[str, int]) -> list[tuple[str, int]]:
    known = [(s, counts[s]) for s in STATE_ORDER if counts.get(s)]
    other = sorted((s, n) for s, n in counts.items() if s not in STATE_ORDER and n)
    return known + other


def _counts_table(counts: Counter[str] | dict[str, int], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("state")
    table.add_column("documents", justify="right")
    for status, count in _ordered(counts):
        table.add_row(_state(status), str(count))
    table.add_row(Text("total", style="bold"), str(sum(counts.values())))
    return table


class PlainDisplay:
    """Line by line; no cursor movement (``--headless``)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self._seen: dict[str, tuple[str, int]] = {}

    def note(self, text: str) -> None:
        self.console.print(escape(text))

    def progress(self, rows: list[DocumentRow], elapsed: float) -> None:
        for row in rows:
            now = (row.status, row.invoices)
            if self._seen.get(row.bill_no) != now:
                self._seen[row.bill_no] = now
                extra = f" ({row.invoices} invoice(s))" if row.invoices else ""
                self.console.print(
                    f"{elapsed:6.1f}s  {row.tenant:<6} {row.bill_no:<24} {row.status}{extra}"
                )


class LiveDisplay:
    """A Rich live panel, redrawn on every progress report; use as a context manager."""

    def __init__(self, console: Console | None = None, stories: dict[str, str] | None = None):
        self.console = console or Console()
        self.stories = stories or {}
        self.rows: list[DocumentRow] = []
        self.elapsed = 0.0
        self.events: list[str] = []
        self._live = Live(self._render(), console=self.console, refresh_per_second=8)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.update(self._render())
        self._live.__exit__(exc_type, exc, tb)

    def note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')}  {text}")
        self._live.update(self._render())

    def progress(self, rows: list[DocumentRow], elapsed: float) -> None:
        self.rows, self.elapsed = rows, elapsed
        self._live.update(self._render())

    def _render(self) -> Panel:
        counts = Counter(row.status for row in self.rows)
        documents = Table(expand=True)
        for column in ("tenant", "bill", "state", "invoices", "what happens"):
            documents.add_column(column, no_wrap=column != "what happens")
        for row in self.rows:
            documents.add_row(
                row.tenant,
                row.bill_no,
                _state(row.status),
                str(row.invoices or ""),
                escape(self.stories.get(row.bill_no, "")),
            )
        events = Text("\n".join(self.events[-6:]), style="dim")
        return Panel(
            Group(_counts_table(counts, "documents by state"), documents, events),
            title=f"fapiao-bridge demo — {self.elapsed:5.1f} s",
        )


def render_final(console: Console, report: DemoReport, samples: SampleSet) -> None:
    console.print(_counts_table(report.counts, "Final states"))
    table = Table(title="Every document against the sample manifest", title_justify="left")
    table.add_column("", min_width=1)
    table.add_column("bill", no_wrap=True, min_width=22)
    table.add_column("type", no_wrap=True, min_width=5)
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("inv", justify="right", min_width=3)
    # The other columns and the borders take 62 characters; the story gets the rest.
    story_width = max(20, console.width - 62)
    table.add_column("what happened", no_wrap=True, overflow="ellipsis", max_width=story_width)
    for sample in samples.documents:
        outcome = report.outcomes[sample.bill_no]
        problems = report.mismatches.get(sample.bill_no)
        mark = Text("✗", style="bold red") if problems else Text("✓", style="green")
        if problems:
            told = "; ".join(problems)
        elif outcome.status in ("rejected", "failed", "withdrawn"):
            told = f"{outcome.reason} — {sample.story}"
        else:
            told = sample.story
        table.add_row(
            mark,
            sample.bill_no,
            sample.invoice_type,
            _state(outcome.status),
            str(outcome.invoices),
            escape(told),
        )
    console.print(table)
    console.print(escape(_along_the_way(report.cloud_stats)))
    double = report.double_issues
    if double:
        console.print(f"[bold red]double issue detected by the cloud: {report.double_issue}[/]")
    else:
        console.print(
            "[green]no double issue[/] (the cloud's live_twice and over_issued are empty)"
        )
    verdict = "[bold green]as expected[/]" if report.ok else "[bold red]NOT as expected[/]"
    console.print(f"Settled in {report.elapsed:.1f} s — {verdict}")


def _along_the_way(stats: dict[str, Any]) -> str:
    calls: dict[str, dict[str, int]] = stats.get("calls", {})
    expired = sum(per.get("401", 0) for per in calls.values())
    callbacks: dict[str, int] = stats.get("callbacks", {})
    queries = calls.get("BILL.INVOICE.QUERY", {}).get("success", 0)
    logins = sum(t.get("access", 0) for t in stats.get("tokens", {}).values())
    return (
        f"Along the way: {expired} call(s) met an expired token (refreshed, retried once;"
        f" {logins} logins in all), {callbacks.get('dropped', 0)} callback(s) dropped by the"
        f" cloud, {callbacks.get('acknowledged', 0)} acknowledged, {queries} BILL.INVOICE.QUERY"
        " answers."
    )


def render_where_next(console: Console, stack: DemoStack, samples: SampleSet) -> None:
    user, password = stack.flower_auth
    example = next(
        (d for d in samples.documents if d.expect == "invoiced" and d.invoices > 1),
        samples.documents[0],
    )
    env = f"set -a; . {stack.env_file}; set +a;"
    lines: Sequence[str] = (
        "(the servers below stop with the demo; run it with --keep-running to explore them)",
        f"Flower (Celery tasks, search by bill_no): {stack.flower_url}"
        f"  user [bold]{user}[/] password [bold]{escape(password)}[/]",
        f"HTTP API: {stack.api_url}/docs  (Authorization: Bearer {escape(stack.api_key)})",
        f'  {env} curl -H "Authorization: Bearer $FAPIAO_API_KEY"'
        f" $FAPIAO_API_URL/v1/documents/{example.bill_no}",
        f"Simulated cloud: {stack.simulator_url}/_sim/stats, {stack.simulator_url}/_sim/bills",
        f"One document's whole story: {env} .venv/bin/fapiao show {example.bill_no}",
        f"States by tenant: {env} .venv/bin/fapiao status",
        f"Logs of every process: {stack.logs}/",
        f"Redis: {stack.redis.url} ({stack.redis.kind})",
    )
    console.print(Panel("\n".join(lines), title="Where to look next", title_align="left"))
