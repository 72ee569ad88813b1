"""How `make test` splits the work between its two concurrent suites (tests/conftest.py,
scripts/test-suites.sh): with FAPIAO_TEST_DB_INDEPENDENT=skip a run deselects exactly the tests
that do not depend on the database and are not ``postgres_only``; a test that depends on it
only through a fixture requested by name at run time still counts as depending on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MONEY = "tests/unit/test_money.py::test_to_decimal_refuses_float_naming_the_rule"
STORE = "tests/integration/test_store_db.py::test_idle_connections_are_pinged"
# postgres_only and database-independent: only the PostgreSQL suite can run it.
BENCH = "tests/integration/test_bench_harnesses.py::test_fuzz_finds_no_500_and_no_state_change"
# Reaches the database only through `either_world`'s request.getfixturevalue("world").
EITHER = (
    "tests/integration/test_worker_reconcile.py"
    "::test_duplicate_and_out_of_order_callbacks_never_go_backwards"
)


def test_skip_deselects_only_what_the_other_suite_runs() -> None:
    env = {**os.environ, "FAPIAO_TEST_DB_INDEPENDENT": "skip"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         MONEY, STORE, BENCH, EITHER],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    kept = {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}
    assert kept == {STORE, BENCH, EITHER}
    assert "1 deselected" in result.stdout
