"""``python -m simulator``: the same command as ``fapiao simulator``."""

from __future__ import annotations

from simulator.cli import main

main()
