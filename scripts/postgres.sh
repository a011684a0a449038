#!/usr/bin/env bash
# Runs throwaway local PostgreSQL servers for the rms of a cluster config that have a
# "postgres" object (dtc-pg's branches): one server per distinct postgres port, under the run
# folder beside the config.
#
#   scripts/postgres.sh [--config FILE] up|down|stop-immediate|restart|status|psql NAME [psql args...]
#
#   up              installs Debian's postgresql when its server binaries are missing, creates
#                   each server's cluster once (initdb), starts what is not running, and makes
#                   sure every rm's user (LOGIN, its password) and database (owned by that user)
#                   exist. On a running server it only does the last part.
#   down            fast shutdown (SIGINT) of each server, SIGKILL after 30 s.
#   stop-immediate  immediate shutdown (SIGQUIT): like a crash, the next start runs crash
#                   recovery; prepared transactions survive.
#   restart         starts whatever is not running (the same as up).
#   status          one line per server: up (pid) or down.
#   psql NAME ...   psql connected over TCP to rm NAME's database as its user, with the rest of
#                   the arguments (e.g. -At -c 'select 1').
#
# Server of port P: data in run/postgres/P, postmaster PID in run/pids/postgres-P.pid, log in
# run/logs/postgres-P.log. It listens on 127.0.0.1:P and on a unix socket in its data folder;
# local connections are trusted, TCP ones need the user's password (scram-sha-256). Servers are
# stopped only by the PIDs this script recorded. The Debian package's own "main" cluster (port
# 5432), if the package made one, is neither used nor touched.
#
# Run as root, the servers run as the postgres OS user (initdb refuses root), which must be
# able to enter every folder above the data folder. When it cannot, this script grants
# traversal only (chmod o+x, no listing or reading) to the folders that are the config's own
# (its folder and those below it, e.g. a mktemp -d folder of a test), and refuses with a clear
# message for any folder above the config's (e.g. /root): it changes no system folder.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CONFIG="$ROOT/cluster.json"
if [ "${1:-}" = "--config" ]; then CONFIG="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2; fi
[ -f "$CONFIG" ] || die "no cluster config at $CONFIG"
command -v python3 >/dev/null || die "python3 is needed to read $CONFIG"
SERVERS="$(postgres_servers "$CONFIG")" || die "cannot read the PostgreSQL servers of $CONFIG"
CONFIG_DIR="$(dirname "$CONFIG")"
RUN="$CONFIG_DIR/run"
PIDS="$RUN/pids"
LOGS="$RUN/logs"

usage() { die "usage: postgres.sh [--config FILE] up|down|stop-immediate|restart|status|psql NAME [psql args...]"; }

data_of() { echo "$RUN/postgres/$1"; }
pid_file() { echo "$PIDS/postgres-$1.pid"; }
log_of() { echo "$LOGS/postgres-$1.log"; }
pid_of() { local f; f="$(pid_file "$1")"; if [ -f "$f" ]; then cat "$f"; fi; }
# Alive and not a zombie: a killed process stays a zombie until init reaps it.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
is_running() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && alive "$pid"; }

as_root() { [ "$(id -u)" = 0 ]; }
# Runs a PostgreSQL program as the postgres OS user when root (from /, which it can enter).
as_pg() {
  if as_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Sets PGBIN to the bin folder of the highest installed PostgreSQL version with the server's
# programs, or fails.
find_pg_bin() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    if ! { [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && [ -x "$dir/pg_isready" ] && [ -x "$dir/psql" ]; }; then continue; fi
    if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$dir" | sort -V | tail -n 1)" = "$dir" ]; then best="$dir"; fi
  done
  [ -n "$best" ] || return 1
  PGBIN="$best"
}

# Installs Debian's postgresql when the server's programs are missing, and sets PGBIN.
ensure_postgres() {
  find_pg_bin && return 0
  say "installing postgresql (its server programs are missing)"
  if as_root; then
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
  else
    sudo apt-get update -qq >/dev/null && sudo apt-get install -y -qq postgresql >/dev/null
  fi || die "could not install postgresql"
  find_pg_bin || die "postgresql is installed but no /usr/lib/postgresql/<version>/bin has initdb, pg_ctl, postgres, pg_isready and psql"
}

# Makes sure the postgres OS user can enter folder $1 and every folder above it (see the header).
ensure_traversable() {
  as_root || return 0
  runuser -u postgres -- test -x "$1" && return 0
  local d="" part parts
  IFS=/ read -ra parts <<< "${1#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    runuser -u postgres -- test -x "$d" && continue
    case "$d/" in
      "$CONFIG_DIR"/*) say "letting the postgres user enter $d (chmod o+x)"; chmod o+x "$d" ;;
      *) die "the postgres OS user (which runs the servers) cannot enter $d, above the config's folder $CONFIG_DIR; put the config in a folder it can reach (e.g. under /tmp or /work) or allow it yourself: chmod o+x $d" ;;
    esac
  done
}

# Writes the server's settings (dtc.conf, included from postgresql.conf) and pg_hba.conf.
configure() {
  local port="$1" data="$2"
  cat > "$data/dtc.conf" <<EOF
# Written by scripts/postgres.sh on every up; changes here are overwritten.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
max_prepared_transactions = 256
max_connections = 300
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 128MB
log_min_messages = warning
EOF
  grep -qx "include = 'dtc.conf'" "$data/postgresql.conf" || echo "include = 'dtc.conf'" >> "$data/postgresql.conf"
  cat > "$data/pg_hba.conf" <<'EOF'
# Written by scripts/postgres.sh on every up; changes here are overwritten.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF
  if as_root; then chown postgres:postgres "$data/dtc.conf" "$data/pg_hba.conf"; fi
  chmod 600 "$data/dtc.conf" "$data/pg_hba.conf"
}

# Creates the cluster of port $1 once, in its data folder.
init_cluster() {
  local port="$1" data="$2" locale=C
  [ -f "$data/PG_VERSION" ] && return 0
  case "$data" in *"'"*) die "the data folder $data has a single quote in its path, which the server's settings cannot hold" ;; esac
  # The unix socket lives in the data folder; a socket's path has at most 107 bytes.
  [ $(( ${#data} + ${#port} + 11 )) -le 107 ] || die "the data folder $data is too long a path for PostgreSQL's unix socket in it (at most 107 bytes in all); use a config in a shorter folder"
  mkdir -p "$data"
  [ -z "$(ls -A "$data")" ] || die "$data holds files but no PG_VERSION (an initdb that did not finish?); delete that folder and run up again"
  ensure_traversable "$(dirname "$data")"
  chmod 700 "$data"
  if as_root; then chown postgres:postgres "$data"; fi
  locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' && locale=C.UTF-8
  say "creating the PostgreSQL cluster for port $port in $data"
  as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale="$locale" >> "$(log_of "$port")" 2>&1 \
    || die "initdb failed for port $port; see $(log_of "$port"): $(tail -n 5 "$(log_of "$port")" | tr '\n' ' ')"
}

# Records the PID of the postmaster running in $2 (from its postmaster.pid) for port $1, if any.
adopt_postmaster() {
  local port="$1" data="$2" pid
  [ -f "$data/postmaster.pid" ] || return 1
  pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  # A stale postmaster.pid may name a PID that another program now has.
  local cmdline
  cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *postgres*" -D $data "* ]] || return 1
  echo "$pid" > "$(pid_file "$port")"
}

# Makes sure every rm's user and database exist on the server of port $1 (over its socket).
ensure_roles() {
  local port="$1" data="$2" rm host tport db user password
  while read -r rm host tport db user password; do
    [ "$tport" = "$port" ] || continue
    as_pg "$PGBIN/psql" -X -q -h "$data" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -v user="$user" -v password="$password" -v db="$db" >/dev/null <<'SQL' \
      || die "could not create user $user and database $db (rm $rm) on port $port"
SELECT format('CREATE ROLE %I', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"user";
SQL
  done < <(postgres_targets "$CONFIG")
}

start_server() {
  local port="$1" host="$2" data log pid
  data="$(data_of "$port")"; log="$(log_of "$port")"
  if ! is_running "$port" && ! adopt_postmaster "$port" "$data"; then
    rm -f "$(pid_file "$port")"
    init_cluster "$port" "$data"
    configure "$port" "$data"
    ensure_traversable "$LOGS"
    touch "$log"
    if as_root; then chown postgres "$log"; fi
    echo "=== start $(date -u +%FT%T.%3NZ)" >> "$log"
    local started=0
    as_pg "$PGBIN/pg_ctl" start -D "$data" -l "$log" -w -t 30 -s >&2 || started=$?
    # pg_ctl may give up waiting while the postmaster lives on: record it all the same.
    adopt_postmaster "$port" "$data" || true
    if [ "$started" != 0 ] || ! is_running "$port"; then
      die "PostgreSQL on port $port did not start; see $log: $(tail -n 5 "$log" | tr '\n' ' ')"
    fi
    local ready=0
    for _ in $(seq 1 300); do
      if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then ready=1; break; fi
      is_running "$port" || break
      sleep 0.1
    done
    [ "$ready" = 1 ] || die "PostgreSQL on port $port does not answer on 127.0.0.1:$port; see $log: $(tail -n 5 "$log" | tr '\n' ' ')"
  fi
  ensure_roles "$port" "$data"
  pid="$(pid_of "$port")"
  say "postgres $host:$port up (pid $pid, data ${data#"$CONFIG_DIR"/})"
}

# Sends signal $2 to the server of port $1 and waits up to 30 s for it to exit, then SIGKILL.
stop_server() {
  local port="$1" signal="$2" pid
  pid="$(pid_of "$port")"
  if [ -n "$pid" ] && alive "$pid"; then
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      say "postgres on port $port did not stop within 30 s after SIG$signal; killing it (SIGKILL)"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    fi
    say "postgres port $port stopped (SIG$signal, pid $pid)"
  fi
  rm -f "$(pid_file "$port")"
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
if [ -z "$SERVERS" ] && [ "$cmd" != psql ]; then
  [ "$cmd" = status ] || say "no rm in $CONFIG has a \"postgres\" object; nothing to do"
  exit 0
fi
case "$cmd" in
  up|restart)
    mkdir -p "$PIDS" "$LOGS"
    ensure_postgres
    while read -r port host; do start_server "$port" "$host"; done <<< "$SERVERS"
    ;;
  down|stop-immediate)
    [ "$cmd" = down ] && signal=INT || signal=QUIT
    while read -r port host; do stop_server "$port" "$signal"; done <<< "$SERVERS"
    ;;
  status)
    while read -r port host; do
      if is_running "$port"; then
        data="$(data_of "$port")"
        echo "postgres $host:$port up (pid $(pid_of "$port"), data ${data#"$CONFIG_DIR"/})"
      else
        echo "postgres $host:$port down"
      fi
    done <<< "$SERVERS"
    ;;
  psql)
    name="${1:-}"
    [ -n "$name" ] || usage
    shift
    line="$(postgres_targets "$CONFIG" | awk -v n="$name" '$1 == n')"
    [ -n "$line" ] || die "no rm named '$name' with a \"postgres\" object in $CONFIG"
    read -r rm host port db user password <<< "$line"
    find_pg_bin || die "PostgreSQL is not installed; run scripts/postgres.sh up first"
    # The server listens on 127.0.0.1 only, whether the config says 127.0.0.1 or localhost.
    PGPASSWORD="$password" PGCONNECT_TIMEOUT=10 exec "$PGBIN/psql" -X -h 127.0.0.1 -p "$port" -U "$user" -d "$db" "$@"
    ;;
  *) usage ;;
esac
