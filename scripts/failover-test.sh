#!/usr/bin/env bash
# Failover tests with real processes: a 3-node cluster with replication factor 3, load
# running, and then: a leader killed with kill -9; the leader dying at each named crash point;
# a leader paused past the suspicion timeout and resumed; 2 of 3 nodes down; a node restarted
# with an empty data directory; a member that keeps missing ENDs while the others trim, then
# stands in a takeover. After each, `dtc check` verifies the invariants and that what every
# client was told holds.
#
#   scripts/failover-test.sh [SCENARIO...]   (kill-leader crash-points pause-leader two-down empty-restart stale-member)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

export DTC_BUILD="${DTC_BUILD:-debug}"
WORK="$(mktemp -d /tmp/dtc-failover-test.XXXXXX)"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(kill-leader crash-points pause-leader two-down empty-restart stale-member)
CONFIG=""
LOAD_PID=""

ensure_prerequisites
find_binaries

cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
dtc() { "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

cleanup() {
  local code=$?
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
  if [ -n "$CONFIG" ]; then
    if [ "$code" -ne 0 ]; then
      say "FAILED; the cluster's status, then the last log lines of each process:"
      "$BIN/dtc" status --config "$CONFIG" 2>&1 || true
      for f in "$(dirname "$CONFIG")"/run/logs/*.log; do echo "--- $f"; grep -v '^0x' "$f" | tail -n 12; done
    fi
    cluster down >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A fresh cluster config (own ports and data) for scenario $1; $2 is the log retention in ms.
new_cluster() {
  [ -n "$CONFIG" ] && cluster down >/dev/null 2>&1 || true
  mkdir -p "$WORK/$1"
  CONFIG="$WORK/$1/cluster.json"
  local patch='{"replicationFactor": 3}'
  [ -n "${2:-}" ] && patch="{\"replicationFactor\": 3, \"timing\": {\"logRetentionMs\": $2}}"
  write_test_config "$ROOT/cluster.json" "$CONFIG" 28100 "$patch"
  say "=== $1"
}

# Column $2 of process $1 in `dtc status` while it is up (led = 4, in-flight = 5 for nodes).
field() { { dtc status 2>/dev/null || true; } | awk -v n="$1" -v c="$2" '$1 == n && ($3 == "up" || $3 == "joining") { print $c }'; }
led() { local v; v="$(field "$1" 4)"; echo "${v:-0}"; }
total_led() { echo $(( $(led n1) + $(led n2) + $(led n3) )); }
partitions() { python3 -c "import json; print(json.load(open('$CONFIG'))['partitions'])"; }

# Polls "$@" every 50 ms until it succeeds, for at most $WAIT seconds (default 30).
wait_until() {
  local deadline=$(( $(date +%s) + ${WAIT:-30} ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for: $*"
    sleep 0.05
  done
}
busy() { local v; v="$(field "$1" 5)"; [ -n "$v" ] && [ "$v" -gt 0 ]; }
all_led() { [ "$(total_led)" -eq "$(partitions)" ]; }
leads_none() { [ "$(led "$1")" -eq 0 ]; }
is_dead() { local pid; pid="$(cat "$(dirname "$CONFIG")/run/pids/$1.pid")"; ! kill -0 "$pid" 2>/dev/null || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; }
is_ready() { [ "$(field "$1" 3)" = up ]; }

start_load() {
  dtc load --txns "$1" --concurrency "${2:-16}" --retry-for 120 --json --history "$(dirname "$CONFIG")/history.jsonl" \
    > "$(dirname "$CONFIG")/load.json" 2> "$(dirname "$CONFIG")/load.err" &
  LOAD_PID=$!
}

# Waits for the load, then checks that every txn got a known outcome.
finish_load() {
  wait "$LOAD_PID" || die "dtc load failed: $(tail -n 2 "$(dirname "$CONFIG")/load.err")"
  LOAD_PID=""
  python3 - "$(dirname "$CONFIG")/load.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
assert s["committed"] + s["aborted"] + s["unknown"] == n, f"outcomes do not add up to {n}: {s}"
assert s["unknown"] == 0, f"{s['unknown']} txns ended with an unknown outcome"
print(f"    load: {s['committed']} committed, {s['aborted']} aborted, {s['retried']} retried, p99 {s['p99Ms']} ms, max {s['maxMs']} ms")
PY
}

# The invariants, what clients were told, and no RM ever refused a contradicting decision.
check() {
  dtc check --wait-quiet 60 --history "$(dirname "$CONFIG")/history.jsonl" | sed 's/^/    /'
  local conflicting
  conflicting="$({ dtc status || true; } | awk '$1 ~ /^(inventory|orders|accounts)$/ && $3 == "up" { s += $9 } END { print s + 0 }')"
  [ "$conflicting" -eq 0 ] || die "RMs saw $conflicting conflicting decisions"
}

scenario_kill_leader() {
  new_cluster kill-leader
  cluster up >/dev/null
  wait_until all_led
  start_load 1000
  wait_until busy n1
  local inflight; inflight="$(field n1 5)"
  local t0; t0="$(now)"
  cluster kill n1 >/dev/null
  wait_until leads_none n1
  WAIT=20 wait_until all_led
  say "kill -9 n1 with $inflight txns in flight: its partitions served by n2 and n3 $(since "$t0") s after the kill"
  finish_load 1000
  check
  grep -h "took over" "$(dirname "$CONFIG")"/run/logs/n[23].log | grep -v " 0 txns in doubt" | tail -n 3 | sed 's/^/    /' || true
  cluster restart n1 >/dev/null
  wait_until is_ready n1
  start_load 300
  finish_load 300
  check
  say "n1 rejoined and leads $(led n1) partitions (no automatic move back)"
}

scenario_crash_points() {
  for point in after-prepares-sent after-votes after-commit-local after-commit-quorum midway-commits; do
    new_cluster "crash-$point"
    DTC_CRASH_AT_n1="$point:5" cluster up >/dev/null
    wait_until all_led
    start_load 400
    WAIT=60 wait_until is_dead n1
    grep -q "crash point $point reached" "$(dirname "$CONFIG")/run/logs/n1.log" || die "n1 died without reaching $point"
    finish_load 400
    check
    say "crash point $point: outcome uniform at every RM and as told"
  done
}

scenario_pause_leader() {
  new_cluster pause-leader
  cluster up >/dev/null
  wait_until all_led
  start_load 1000
  wait_until busy n1
  local t0; t0="$(now)"
  cluster pause n1 >/dev/null
  # n1 is frozen, so the others' view decides: every partition led by n2 or n3.
  local deadline=$(( $(date +%s) + 20 ))
  until [ $(( $(led n2) + $(led n3) )) -eq "$(partitions)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "n2 and n3 did not take over n1's partitions"
    sleep 0.05
  done
  say "n1 paused: n2 and n3 lead every partition $(since "$t0") s later"
  cluster resume n1 >/dev/null
  wait_until leads_none n1
  grep -q "stepping down\|stepped down" "$(dirname "$CONFIG")/run/logs/n1.log" || die "n1 did not step down"
  say "n1 resumed and stepped down"
  finish_load 1000
  check
  { dtc status || true; } | awk '$1 ~ /inventory|orders|accounts/ { print "    " $1 " stale-epoch refusals: " $8 }'
}

scenario_two_down() {
  new_cluster two-down
  cluster up >/dev/null
  wait_until all_led
  start_load 200
  finish_load 200
  cluster kill n2 >/dev/null
  cluster kill n3 >/dev/null
  sleep_until_suspected() { { dtc status 2>/dev/null || true; } | awk '$1 == "n1"' | grep -q "n2 DOWN.*n3 DOWN"; }
  wait_until sleep_until_suspected
  local out code=0
  out="$(dtc order --user user-1 --sku sku-1 --qty 1 --amount 100 --txn two-down-1 --retry-for 2 2>&1)" || code=$?
  [ "$code" -ne 0 ] || die "an order was accepted with 2 of 3 nodes down: $out"
  echo "$out" | grep -q "unavailable" || die "expected UNAVAILABLE, got: $out"
  echo "$out" | grep -q "partition" || die "expected the refusal to name the partition: $out"
  say "2 of 3 down: refused: $(echo "$out" | sed 's/.*unknown: //')"
  cluster restart n2 >/dev/null
  WAIT=30 wait_until all_led
  say "n2 restarted: every partition served again"
  # The refused txn was never decided; it may now commit like any new txn.
  dtc order --user user-1 --sku sku-1 --qty 1 --amount 100 --txn two-down-2 | sed 's/^/    /'
  start_load 300
  finish_load 300
  check
}

scenario_empty_restart() {
  new_cluster empty-restart
  cluster up >/dev/null
  wait_until all_led
  start_load 300
  finish_load 300
  cluster kill n3 >/dev/null
  rm -rf "$(dirname "$CONFIG")/run/data/n3"
  cluster restart n3 >/dev/null
  wait_until is_ready n3
  start_load 300
  finish_load 300
  local rows; rows="$(field n3 10)"
  [ "${rows:-0}" -gt 0 ] || die "n3 holds no rows after rejoining with an empty data directory"
  say "n3 restarted empty, caught up ${rows} rows from its peers"
  # Now n3 must stand in a quorum: kill n1, so its partitions move with n3's promises.
  cluster kill n1 >/dev/null
  WAIT=20 wait_until all_led
  start_load 300
  finish_load 300
  check
}

# A member (n3) is killed and restarted while txns run, so it holds STARTs whose decision and
# END it missed. The others must not trim those txns before n3 holds their ENDs too: else n3's
# START-only rows would outlive them, and a takeover with n3 would abort txns that committed.
scenario_stale_member() {
  new_cluster stale-member 1500
  cluster up >/dev/null
  wait_until all_led
  start_load 3000 32
  for _ in 1 2; do
    wait_until busy n1
    cluster kill n3 >/dev/null
    wait_until is_dead n3
    cluster restart n3 >/dev/null
    wait_until is_ready n3
  done
  finish_load 3000
  # Every row leaves every log once all three hold its END and the retention has passed.
  trimmed_everywhere() { for n in n1 n2 n3; do [ "$(field "$n" 10)" = 0 ] || return 1; done; }
  # 60 s: one CI run (of many) timed out at 30 s with rows left; the status printed on failure
  # says on which member, if it happens again.
  WAIT=60 wait_until trimmed_everywhere
  say "all rows trimmed on every member ($(field n3 11) at n3) once n3 held every END"
  cluster kill n1 >/dev/null
  WAIT=20 wait_until all_led
  start_load 300
  finish_load 300
  check
}

for scenario in "${SCENARIOS[@]}"; do
  case "$scenario" in
    kill-leader) scenario_kill_leader ;;
    crash-points) scenario_crash_points ;;
    pause-leader) scenario_pause_leader ;;
    two-down) scenario_two_down ;;
    empty-restart) scenario_empty_restart ;;
    stale-member) scenario_stale_member ;;
    *) die "unknown scenario $scenario" ;;
  esac
done
say "failover tests passed: ${SCENARIOS[*]}"
