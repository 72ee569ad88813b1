#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback before the test suite runs.
# Starts them when they are installed but down; otherwise says what is missing and exits 1.
set -u

PGHOST=${FAPIAO_TEST_PGHOST:-127.0.0.1}
PGPORT=${FAPIAO_TEST_PGPORT:-5432}
REDIS_PORT=${FAPIAO_TEST_REDIS_PORT:-6379}

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG
  else
    # No client: speak the protocol ourselves.
    python3 - "$REDIS_PORT" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
  fi
}

pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PGHOST" -p "$PGPORT"
  else
    python3 -c "import socket,sys; socket.create_connection(('$PGHOST', $PGPORT), timeout=2)" 2>/dev/null
  fi
}

wait_for() {  # wait_for NAME CHECK_FN
  for _ in $(seq 1 40); do "$2" && return 0; sleep 0.25; done
  return 1
}

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: Redis is down on 127.0.0.1:$REDIS_PORT, starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
    wait_for redis redis_up || { echo "ensure-services: redis-server did not answer after start" >&2; exit 1; }
  else
    echo "ensure-services: Redis does not answer on 127.0.0.1:$REDIS_PORT and redis-server is not installed." >&2
    echo "  Install it (Debian: apt-get install redis-server) or point FAPIAO_TEST_REDIS_URL at a running Redis." >&2
    exit 1
  fi
fi

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "ensure-services: PostgreSQL is down on $PGHOST:$PGPORT, starting cluster $ver/main"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_for postgres pg_up || { echo "ensure-services: PostgreSQL did not answer after start" >&2; exit 1; }
  else
    echo "ensure-services: PostgreSQL does not answer on $PGHOST:$PGPORT and no local cluster is installed." >&2
    echo "  Install it (Debian: apt-get install postgresql) or set FAPIAO_TEST_PG_URL to a reachable server." >&2
    exit 1
  fi
fi
echo "ensure-services: PostgreSQL and Redis answer on loopback"
