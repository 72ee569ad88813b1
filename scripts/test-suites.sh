#!/usr/bin/env bash
# The whole suite on PostgreSQL and on SQLite at the same time (`make test`): two pytest
# processes, each on its own database and its own Redis database, so that one suite's waits
# (worker processes, simulators, browsers, PostgreSQL) overlap the other's work on two cores.
#
# The tests that do not depend on the database (unit tests, the simulator's own, ...: see
# tests/conftest.py) give the same result on both runs, so by default only the SQLite suite
# runs them and the PostgreSQL one, the longer, deselects them (FAPIAO_TEST_DB_INDEPENDENT=skip);
# DB_INDEPENDENT_ONCE=no runs every test in both suites.
#
# Each suite writes its log to $TEST_LOG_DIR/pytest-<postgresql|sqlite>.log; a log is printed in full,
# under a header, as soon as its suite ends, so the two never interleave. Exit status: 0 only
# when both suites passed; otherwise the failed suites are named last.
#
# Environment (the Makefile sets them): PY, PG_TEST_URL, REDIS_TEST_URL (PostgreSQL suite),
# REDIS_TEST_URL_SQLITE (SQLite suite), TEST_LOG_DIR, DB_INDEPENDENT_ONCE (yes|no),
# TEST_DURATIONS (each log ends with that many slowest tests, default 30: where the CI budget
# goes), PYTEST_ARGS (word-split, as in make).
set -uo pipefail
cd "$(dirname "$0")/.."

py=${PY:-.venv/bin/python}
logs=${TEST_LOG_DIR:-.test-logs}
pg_url=${PG_TEST_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
pg_redis=${REDIS_TEST_URL:-redis://127.0.0.1:6379/15}
sqlite_redis=${REDIS_TEST_URL_SQLITE:-redis://127.0.0.1:6379/14}
read -r -a extra <<<"${PYTEST_ARGS:-}"
case ${DB_INDEPENDENT_ONCE:-yes} in
  yes) pg_independent=skip ;;
  no) pg_independent=run ;;
  *) echo "test-suites: DB_INDEPENDENT_ONCE is yes or no, not ${DB_INDEPENDENT_ONCE}" >&2; exit 2 ;;
esac

if [ "$pg_redis" = "$sqlite_redis" ]; then
  # Each suite FLUSHDBs its Redis database around tests: a shared one breaks both.
  echo "test-suites: REDIS_TEST_URL and REDIS_TEST_URL_SQLITE must differ ($pg_redis)" >&2
  exit 2
fi
mkdir -p "$logs"

declare -A pids names started
start() { # start SUITE DATABASE_URL REDIS_URL DB_INDEPENDENT
  local suite=$1
  FAPIAO_TEST_DATABASE_URL=$2 FAPIAO_TEST_REDIS_URL=$3 FAPIAO_TEST_DB_INDEPENDENT=$4 \
    "$py" -m pytest --durations="${TEST_DURATIONS:-30}" "${extra[@]}" \
    >"$logs/pytest-${suite,,}.log" 2>&1 &
  pids[$suite]=$!
  names[$!]=$suite
  started[$suite]=$SECONDS
  echo "== pytest on $suite started (log: $logs/pytest-${suite,,}.log) =="
}

stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  wait
  exit 130
}
trap stop_all INT TERM

start PostgreSQL "$pg_url" "$pg_redis" "$pg_independent"
start SQLite sqlite "$sqlite_redis" run

failed=()
while [ "${#pids[@]}" -gt 0 ]; do
  wait -n -p done_pid "${pids[@]}"
  status=$?
  suite=${names[$done_pid]}
  unset "pids[$suite]"
  if [ "$status" -eq 5 ] && [ "$suite" = PostgreSQL ] && [ "$pg_independent" = skip ]; then
    status=0 # pytest's "no tests collected": PYTEST_ARGS chose only database-independent tests
  fi
  echo
  echo "== pytest on $suite: exit $status after $((SECONDS - started[$suite])) s (full log) =="
  cat "$logs/pytest-${suite,,}.log"
  if [ "$status" -ne 0 ]; then
    failed+=("$suite (exit $status)")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "== FAILED: pytest on ${failed[*]} (logs in $logs/) ==" >&2
  exit 1
fi
echo "== pytest passed on PostgreSQL and on SQLite =="
