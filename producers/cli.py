"""The ``fapiao`` command line: the operator's entry point.

Every verb builds what it needs from ``Settings`` when it runs (one composition root per
process); importing this module builds nothing. Sub-commands that live in other rooms (the
simulator) are imported lazily so that ``fapiao --help`` stays fast and the layering holds.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fapiao",
    help="fapiao-bridge: ERP sales documents → Kingdee Invoice Cloud (金蝶发票云) and back.",
    no_args_is_help=True,
    add_completion=False,
)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
