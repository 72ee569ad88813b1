"""``python -m demo``: the whole bridge, end to end, on this machine (``make demo``).

Exit codes: 0 every document reached its expected state and nothing was issued twice;
1 not so (the final table says which); 2 the stack could not start (the logs say why);
130 interrupted (Ctrl-C). Everything the demo started is stopped on exit, unless
``--keep-running`` (then it waits for Ctrl-C).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from demo.samples import DEFAULT_SAMPLES_DIR
    from demo.stack import REPO_ROOT

    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run fapiao-bridge end to end against the simulated Kingdee cloud:"
        " simulator, HTTP API, Celery worker, beat and Flower, then a realistic sample set.",
    )
    parser.add_argument("--headless", action="store_true", help="Plain lines, no live table.")
    parser.add_argument(
        "--keep-running", action="store_true", help="Keep everything up until Ctrl-C."
    )
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".demo",
                        help="Database, tenants file and logs (default .demo/).")  # fmt: skip
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES_DIR,
                        help="Directory with manifest.toml and the documents.")  # fmt: skip
    parser.add_argument("--database-url", help="Default: an SQLite file in the work directory.")
    parser.add_argument("--redis-url", help="Default: FAPIAO_REDIS_URL if it answers.")
    parser.add_argument("--no-redis-server", action="store_true",
                        help="Do not start redis-server; fall back to fakeredis.")  # fmt: skip
    parser.add_argument("--flower-user", default="demo")
    parser.add_argument("--flower-password", help="Default: a random one, printed at the end.")
    return parser


def _interrupt_on_signals() -> None:
    """SIGTERM and SIGINT both mean "stop everything": KeyboardInterrupt unwinds the stack."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A shell that starts us in the background ignores SIGINT for us; Ctrl-C must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    from demo.display import LiveDisplay, PlainDisplay, render_final, render_where_next
    from demo.processes import ChildExited
    from demo.samples import load_samples
    from demo.scenario import run_scenario
    from demo.stack import DemoOptions, running_stack

    args = _parser().parse_args(argv)
    console = Console(highlight=False)
    samples = load_samples(args.samples)
    options = DemoOptions(
        workdir=args.workdir.resolve(),
        database_url=args.database_url,
        redis_url=args.redis_url,
        allow_redis_server=not args.no_redis_server,
        flower_user=args.flower_user,
        **({"flower_password": args.flower_password} if args.flower_password else {}),
    )
    _interrupt_on_signals()
    console.print(f"[bold]fapiao-bridge demo[/] — starting everything in {options.workdir} …")
    try:
        with running_stack(options) as stack:
            if stack.redis.notice:
                style = "bold yellow" if stack.redis.kind == "fakeredis" else "dim"
                console.print(f"[{style}]{escape(stack.redis.notice)}[/]")
            console.print(
                f"simulator {stack.simulator_url}, API {stack.api_url},"
                f" Flower {stack.flower_url}, worker + beat up; logs in {stack.logs}/"
            )
            if args.headless:
                report = run_scenario(stack, samples, PlainDisplay(console))
            else:
                stories = {d.bill_no: d.story for d in samples.documents}
                with LiveDisplay(console, stories) as live:
                    report = run_scenario(stack, samples, live)
            render_final(console, report, samples)
            render_where_next(console, stack, samples)
            if args.keep_running:
                console.print("Everything keeps running; Ctrl-C stops it all.")
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    console.print("\nstopping everything the demo started …")
            else:
                console.print("Stopping everything the demo started (--keep-running keeps it).")
    except KeyboardInterrupt:
        console.print("\ninterrupted: everything the demo started is stopped.")
        return 130
    except (ChildExited, TimeoutError, RuntimeError) as exc:
        console.print(f"[bold red]the demo could not run:[/] {escape(str(exc))}")
        console.print(f"logs: {options.workdir / 'logs'}/")
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
