#!/usr/bin/env bash
# The cluster test: real processes, real kill -9. Starts a cluster on its own ports and data
# folder, runs orders at concurrency 16, kills the coordinator that has txns in flight and
# restarts it, kills the accounts RM and restarts it, then checks that every txn has one
# outcome everywhere, that what clients were told holds, and the business invariants.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TXNS="${TXNS:-800}"
WORK="$(mktemp -d /tmp/dtc-cluster-test.XXXXXX)"
CONFIG="$WORK/cluster.json"
export DTC_BUILD="${DTC_BUILD:-debug}"

write_test_config "$ROOT/cluster.json" "$CONFIG" 27100

cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
cleanup() {
  local code=$?
  [ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  if [ "$code" -ne 0 ]; then
    say "FAILED; last log lines of each process:"
    for f in "$WORK"/run/logs/*.log; do echo "--- $f"; tail -n 15 "$f"; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ensure_prerequisites
find_binaries
dtc() { "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }

# Column $2 of process $1 in `dtc status` (e.g. in-flight is column 5 for nodes, prepared 4 for RMs).
status_field() { { dtc status 2>/dev/null || true; } | awk -v n="$1" -v c="$2" '$1 == n && $3 == "up" { print $c }'; }

# Waits (bounded) until process $1's status column $2 is above zero.
wait_busy() {
  for _ in $(seq 1 300); do
    local v; v="$(status_field "$1" "$2")"
    [ -n "$v" ] && [ "$v" -gt 0 ] && return 0
    sleep 0.05
  done
  die "$1 never had work in flight"
}

cluster up
say "load: $TXNS orders at concurrency 16"
dtc load --txns "$TXNS" --concurrency 16 --seed 42 --retry-for 120 --json --history "$WORK/history.jsonl" \
  > "$WORK/load.json" 2> "$WORK/load.err" &
LOAD_PID=$!

wait_busy n1 5
say "kill -9 n1 with $(status_field n1 5) txns in flight"
cluster kill n1
start=$(date +%s.%N)
cluster restart n1
say "n1 serving again $(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')") s after restart began"

wait_busy accounts 4
say "kill -9 accounts with $(status_field accounts 4) prepared txns"
cluster kill accounts
cluster restart accounts

wait "$LOAD_PID" || die "dtc load failed: $(cat "$WORK/load.err" | tail -n 2)"
LOAD_PID=""
cat "$WORK/load.json"
python3 - "$WORK/load.json" "$TXNS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
assert s["committed"] + s["aborted"] + s["unknown"] == n, f"outcomes do not add up to {n}: {s}"
assert s["unknown"] == 0, f"{s['unknown']} txns ended with an unknown outcome"
assert s["committed"] > n // 2, f"too few commits: {s['committed']}"
assert abs(s["throughput"] - s["committed"] / s["durationS"]) < 1, f"throughput does not match committed/duration: {s}"
PY

dtc check --wait-quiet 60 --history "$WORK/history.jsonl"
dtc status

# Bad input: one readable line, exit 2, nothing changes.
expect_usage_error() {
  local out code=0
  out="$("$@" 2>&1)" || code=$?
  [ "$code" -eq 2 ] || die "expected exit 2 from '$*', got $code: $out"
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || die "expected one line from '$*', got: $out"
  say "rejected as expected: $out"
}
expect_usage_error dtc order --user user-1 --sku sku-1 --qty 0 --amount 5
expect_usage_error dtc order --user user-1 --sku sku-1 --qty 1 --amount 5 --txn "$(printf 'x%.0s' $(seq 1 129))"
echo '{ "nodes": [' > "$WORK/bad.json"
expect_usage_error "$BIN/dtc" status --config "$WORK/bad.json"
expect_usage_error "$BIN/dtc" status --config "$WORK/missing.json"
expect_usage_error dtc load --txns 10 --hot-skus 0
expect_usage_error dtc load --txns 10 --hot-skus 100000
expect_usage_error dtc load --txns 10 --hot-skus 2 --hot-fraction 1.5
dtc check --wait-quiet 5 >/dev/null

# Contention: every order goes to one of two SKUs (wait-die aborts some; none may be lost).
HOT_TXNS=200
say "load: $HOT_TXNS orders at concurrency 32, all on 2 hot SKUs"
dtc load --txns "$HOT_TXNS" --concurrency 32 --seed 7 --hot-skus 2 --hot-fraction 1 --json --history "$WORK/hot.jsonl" \
  > "$WORK/hot.json" 2> "$WORK/hot.err" || die "dtc load --hot-skus failed: $(tail -n 2 "$WORK/hot.err")"
cat "$WORK/hot.json"
python3 - "$WORK/hot.json" "$WORK/hot.jsonl" "$HOT_TXNS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[3])
assert s["committed"] + s["aborted"] == n and s["unknown"] == 0, f"outcomes do not add up to {n}: {s}"
assert s["hotSkus"] == 2, s
skus = {json.loads(line)["sku"] for line in open(sys.argv[2]) if '"sku"' in line}
assert skus <= {"sku-0", "sku-1"}, f"orders outside the hot SKUs: {sorted(skus)[:5]}"
PY
dtc check --wait-quiet 60 --history "$WORK/hot.jsonl"
say "cluster test passed"
