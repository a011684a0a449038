#!/usr/bin/env bash
# Runs a local dtc cluster: every process of the cluster config in the background, with PID
# files and logs under the run folder beside the config.
#
#   scripts/cluster.sh [--config FILE] up|down|status|kill NAME|pause NAME|resume NAME|restart NAME|logs NAME
#
# DTC_BUILD=debug|release picks the build (release by default). DTC_CRASH_AT_<name>=POINT
# arms a crash point in that one node (see Sources/DTCNode/CrashPoints.swift).
# DTC_FAULT_INJECTION=1 starts every process with --allow-fault-injection, so that
# `dtc fault` can make its links misbehave (off by default). An rm runs the program its
# optional "program" in the config names (an executable in the build's bin folder, dtc-rm by
# default) with --config CONFIG --name NAME. Processes are ended only by the PIDs this script
# recorded. When rms have a "postgres" object (dtc-pg), up first starts their PostgreSQL
# servers and down stops them last, with scripts/postgres.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CONFIG="$ROOT/cluster.json"
if [ "${1:-}" = "--config" ]; then CONFIG="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2; fi
[ -f "$CONFIG" ] || die "no cluster config at $CONFIG"
cluster_processes "$CONFIG" >/dev/null || die "cannot read the processes of $CONFIG"
RUN="$(dirname "$CONFIG")/run"
PIDS="$RUN/pids"
LOGS="$RUN/logs"
mkdir -p "$PIDS" "$LOGS"

usage() { die "usage: cluster.sh [--config FILE] up|down|status|kill NAME|pause NAME|resume NAME|restart NAME|logs NAME"; }

pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid" || true; }
# Alive and not a zombie: a killed process stays a zombie until init reaps it.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
is_running() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && alive "$pid"; }

process_line() { cluster_processes "$CONFIG" | awk -v n="$1" '$2 == n' ; }

check_program() { [ -x "$BIN/$2" ] || die "$1: no program $2 in $BIN (build it: swift build -c ${DTC_BUILD:-release} --product $2)"; }

# Starts process $2 (kind $1) with its program $3 (dtc-node, dtc-rm, or an rm's "program").
start_one() {
  local kind="$1" name="$2" program="${3:-}"
  if is_running "$name"; then say "$name already running (pid $(pid_of "$name"))"; return; fi
  if [ -z "$program" ]; then [ "$kind" = node ] && program=dtc-node || program=dtc-rm; fi
  check_program "$name" "$program"
  local cmd=("$BIN/$program" --config "$CONFIG" --name "$name")
  # Only dtc's own programs know the test flag; another participant may refuse it.
  if [ "${DTC_FAULT_INJECTION:-0}" = 1 ]; then
    cmd+=(--allow-fault-injection)
  fi
  echo "=== start $(date -u +%FT%T.%3NZ)" >> "$LOGS/$name.log"
  # A shell variable name: "accounts-2" reads DTC_CRASH_AT_accounts_2.
  local crash="DTC_CRASH_AT_${name//[^A-Za-z0-9_]/_}"
  nohup env -u DTC_CRASH_AT ${!crash:+DTC_CRASH_AT=${!crash}} "${cmd[@]}" >> "$LOGS/$name.log" 2>&1 &
  echo $! > "$PIDS/$name.pid"
}

# Waits until the process listens on its port (bounded), or fails if it died.
wait_listening() {
  local name="$1" host="$2" port="$3"
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    is_running "$name" || die "$name exited during start; see $LOGS/$name.log: $(tail -n 3 "$LOGS/$name.log" | tr '\n' ' ')"
    sleep 0.1
  done
  die "$name did not listen on $host:$port within 30 s; see $LOGS/$name.log"
}

stop_one() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

cmd="${1:-}"; name="${2:-}"
case "$cmd" in
  up)
    ensure_prerequisites
    find_binaries
    # Every program must exist before anything starts.
    while read -r kind pname host port program; do check_program "$pname" "$program"; done < <(cluster_processes "$CONFIG")
    # The PostgreSQL servers of rms with a "postgres" object (dtc-pg) run before any rm.
    pg_servers="$(postgres_servers "$CONFIG")" || die "cannot read the PostgreSQL servers of $CONFIG"
    if [ -n "$pg_servers" ]; then "$ROOT/scripts/postgres.sh" --config "$CONFIG" up; fi
    # RMs first, so coordinators that recover txns find them.
    while read -r kind pname host port program; do [ "$kind" = rm ] && start_one "$kind" "$pname" "$program"; done < <(cluster_processes "$CONFIG")
    while read -r kind pname host port program; do [ "$kind" = node ] && start_one "$kind" "$pname" "$program"; done < <(cluster_processes "$CONFIG")
    while read -r kind pname host port program; do wait_listening "$pname" "$host" "$port"; done < <(cluster_processes "$CONFIG")
    say "cluster up: $(cluster_processes "$CONFIG" | awk '{print $2}' | tr '\n' ' ')(logs in $LOGS)"
    ;;
  down)
    while read -r kind pname host port program; do stop_one "$pname"; done < <(cluster_processes "$CONFIG")
    pg_servers="$(postgres_servers "$CONFIG")" || die "cannot read the PostgreSQL servers of $CONFIG"
    if [ -n "$pg_servers" ]; then "$ROOT/scripts/postgres.sh" --config "$CONFIG" down; fi
    say "cluster down"
    ;;
  status)
    while read -r kind pname host port program; do
      pid="$(pid_of "$pname")"
      if is_running "$pname"; then
        state="running"; grep -q "^State:.*T" "/proc/$pid/status" 2>/dev/null && state="paused"
        printf '%-10s %-5s %-21s pid %-8s %s\n' "$pname" "$kind" "$host:$port" "$pid" "$state"
      else
        printf '%-10s %-5s %-21s %s\n' "$pname" "$kind" "$host:$port" "down"
      fi
    done < <(cluster_processes "$CONFIG")
    ;;
  kill|pause|resume|restart|logs)
    [ -n "$name" ] || usage
    line="$(process_line "$name")"
    [ -n "$line" ] || die "no process named '$name' in $CONFIG"
    read -r kind pname host port program <<< "$line"
    case "$cmd" in
      kill) is_running "$name" || die "$name is not running"; kill -KILL "$(pid_of "$name")"; say "killed $name (SIGKILL)" ;;
      pause) is_running "$name" || die "$name is not running"; kill -STOP "$(pid_of "$name")"; say "paused $name (SIGSTOP)" ;;
      resume) is_running "$name" || die "$name is not running"; kill -CONT "$(pid_of "$name")"; say "resumed $name (SIGCONT)" ;;
      restart)
        find_binaries
        stop_one "$name"
        start_one "$kind" "$name" "$program"
        wait_listening "$name" "$host" "$port"
        say "restarted $name (pid $(pid_of "$name"))"
        ;;
      logs) tail -n "${LINES_SHOWN:-50}" "$LOGS/$name.log" ;;
    esac
    ;;
  *) usage ;;
esac
