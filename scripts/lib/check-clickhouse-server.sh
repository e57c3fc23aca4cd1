#!/usr/bin/env bash
# Checks scripts/clickhouse-server end to end, on its own ports (0 = any free
# port) and a temporary data directory, so it never touches a running stack:
#   - READY line with both ports, /ping, the engine version, pool settings
#   - users: default may write; chgate_reader (readonly=2) may read and change
#     settings per query but every write or DDL fails with READONLY
#   - SIGTERM stops cleanly and flushes a Buffer table into its MergeTree
#   - a port already in use is a clear, non-zero failure
#
#   scripts/lib/check-clickhouse-server.sh [PYTHON]
# PYTHON runs the launcher (default: the cached virtualenv's, else python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LAUNCHER=$ROOT/scripts/clickhouse-server
CACHE=${CHGATE_CACHE:-$HOME/.cache/chgate}
PYTHON=${1:-}
if [ -z "$PYTHON" ]; then
  if [ -x "$CACHE/venv/bin/python" ]; then PYTHON=$CACHE/venv/bin/python; else PYTHON=python3; fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chgate-ch-check.XXXXXX")
PID=""
HTTP=""
FAILED=0

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { printf 'ok   %s\n' "$*"; }
bad() {
  printf 'FAIL %s\n' "$*"
  FAILED=1
}
check() { # DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected '$2', got '$3'"; fi
}

start() {
  : >"$WORK/out" && : >"$WORK/err"
  "$PYTHON" "$LAUNCHER" --data "$WORK/data" --http-port 0 --tcp-port 0 >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 1 600); do
    grep -q '^READY ' "$WORK/out" && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -qE '^READY http=[0-9]+ tcp=[0-9]+$' "$WORK/out"; then
    bad "launcher prints 'READY http=<port> tcp=<port>' (stdout: $(cat "$WORK/out"); stderr tail below)"
    tail -n 20 "$WORK/err"
    exit 1
  fi
  HTTP=$(sed -n 's/^READY http=\([0-9]*\) tcp=\([0-9]*\)$/\1/p' "$WORK/out")
  TCP=$(sed -n 's/^READY http=\([0-9]*\) tcp=\([0-9]*\)$/\2/p' "$WORK/out")
}

stop() {
  kill -TERM "$PID"
  local status=0
  wait "$PID" || status=$?
  PID=""
  check "SIGTERM stops the launcher with status 0" 0 "$status"
}

# q USER SQL: the response body; the HTTP status goes to $WORK/code.
q() {
  curl -sS -o "$WORK/body" -w '%{http_code}' "http://127.0.0.1:$HTTP/?user=$1" --data-binary "$2" >"$WORK/code" || true
  cat "$WORK/body"
}

start
ok "READY http=$HTTP tcp=$TCP"
check "/ping answers Ok." "Ok." "$(curl -sS "http://127.0.0.1:$HTTP/ping")"
version=$(q default "SELECT version()")
case $version in 26.9.*) ok "engine version $version" ;; *) bad "engine version: got '$version'" ;; esac
check "background_schedule_pool_size is 16" 16 \
  "$(q default "SELECT value FROM system.server_settings WHERE name = 'background_schedule_pool_size'")"
# shellcheck disable=SC2016 # expanded by the inner shell
if timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$TCP" 2>/dev/null; then
  ok "native TCP port $TCP accepts connections"
else
  bad "native TCP port $TCP accepts connections"
fi

# Users.
q default "CREATE TABLE dst (x UInt64) ENGINE = MergeTree ORDER BY x" >/dev/null
check "default: CREATE TABLE" 200 "$(cat "$WORK/code")"
q default "INSERT INTO dst SELECT number FROM numbers(10)" >/dev/null
check "default: INSERT" 200 "$(cat "$WORK/code")"
check "chgate_reader: SELECT" "chgate_reader	10" "$(q chgate_reader "SELECT currentUser(), count() FROM dst")"
check "chgate_reader: settings per query" "7	2" \
  "$(q chgate_reader "SELECT getSetting('max_threads'), getSetting('readonly') SETTINGS max_threads = 7")"
for sql in "INSERT INTO dst VALUES (1)" "CREATE TABLE t2 (x UInt8) ENGINE = Memory" "DROP TABLE dst" \
  "ALTER TABLE dst DELETE WHERE 1" "SET readonly = 0"; do
  body=$(q chgate_reader "$sql")
  if [[ $body == *"(READONLY)"* ]]; then ok "chgate_reader refused: $sql"; else bad "chgate_reader not refused: $sql -> $body"; fi
done

# Buffer flush on SIGTERM: thresholds far away, so only a clean shutdown flushes.
q default "CREATE TABLE buf AS dst ENGINE = Buffer(default, dst, 1, 3600, 3600, 1000000000000, 1000000000000, 1000000000000000, 1000000000000000)" >/dev/null
q default "INSERT INTO buf SELECT number + 100 FROM numbers(100000)" >/dev/null
check "rows wait in the Buffer (dst, buf)" "10	100010" \
  "$(q default "SELECT (SELECT count() FROM dst), (SELECT count() FROM buf)")"
stop
start
check "after SIGTERM and restart every Buffer row is in the MergeTree" 100010 "$(q default "SELECT count() FROM dst")"

# Port in use.
status=0
"$PYTHON" "$LAUNCHER" --data "$WORK/data2" --http-port "$HTTP" --tcp-port 0 >"$WORK/out2" 2>"$WORK/err2" || status=$?
if [ "$status" -ne 0 ] && grep -q "already in use" "$WORK/err2" && [ ! -s "$WORK/out2" ]; then
  ok "a port in use fails with status $status: $(grep -m1 'already in use' "$WORK/err2")"
else
  bad "a port in use: status $status, stderr: $(cat "$WORK/err2")"
fi
stop

if [ "$FAILED" -ne 0 ]; then
  echo "check-clickhouse-server: FAILED"
  exit 1
fi
echo "check-clickhouse-server: all checks passed"
