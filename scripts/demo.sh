#!/usr/bin/env bash
# The dtc demo, from a fresh machine: installs what is missing, builds release, starts a
# 3-node cluster with 3 RMs, runs a load of orders, kills a coordinator with kill -9 mid-load,
# restarts it, checks every invariant, prints what happened and stops the cluster.
#
#   scripts/demo.sh [--txns N] [--concurrency C]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TXNS=20000
CONCURRENCY=64
while [ $# -gt 0 ]; do
  case "$1" in
    --txns) TXNS="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    *) die "usage: demo.sh [--txns N] [--concurrency C]" ;;
  esac
done

DEMO="$ROOT/run-demo"
CONFIG="$DEMO/cluster.json"
export DTC_BUILD=release
cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
trap 'cluster down >/dev/null 2>&1 || true' EXIT

ensure_prerequisites
build_binaries
dtc() { "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }

[ -d "$DEMO/run/pids" ] && cluster down >/dev/null 2>&1 || true
rm -rf "$DEMO"
mkdir -p "$DEMO"
cp "$ROOT/cluster.json" "$CONFIG"

echo
echo "== 1. Start 3 coordinator nodes and 3 resource managers (each with its own LMDB)"
cluster up
dtc status

echo
echo "== 2. One order by hand, then the same txn ID again (idempotent submit)"
dtc order --user user-1 --sku sku-1 --qty 2 --amount 1500 --txn demo-order-1
dtc order --user user-1 --sku sku-1 --qty 2 --amount 1500 --txn demo-order-1
dtc order --user user-2 --sku sku-2 --qty 5000 --amount 100 --txn demo-order-2
dtc txn demo-order-1

echo
echo "== 3. $TXNS random orders at concurrency $CONCURRENCY; n2 is killed with kill -9 mid-load"
led() { dtc status | awk -v n="$1" '$1 == n && $3 == "up" { print $4 }'; }
echo "partitions led before: n1 $(led n1), n2 $(led n2), n3 $(led n3)"
dtc load --txns "$TXNS" --concurrency "$CONCURRENCY" --retry-for 120 --history "$DEMO/history.jsonl" > "$DEMO/load.txt" &
LOAD=$!
sleep 3
inflight="$(dtc status | awk '$1 == "n2" { print $5 }')"
cluster kill n2
echo "killed n2 with ${inflight:-?} txns in flight; its clients retry with the same txn IDs"
sleep 2
echo "partitions led 2 s after the kill: n1 $(led n1), n3 $(led n3)"
grep -h "took over\|every txn found in doubt" "$DEMO"/run/logs/n[13].log | sed 's/^.*\] /  /'
wait "$LOAD"
cat "$DEMO/load.txt"

echo
echo "== 4. Check every invariant across all RMs while n2 is still down (and what each client was told)"
dtc check --history "$DEMO/history.jsonl"

echo
echo "== 5. n2 rejoins as a follower (partitions do not move back)"
cluster restart n2
sleep 1
dtc order --user user-3 --sku sku-3 --qty 1 --amount 700 --txn demo-order-3
dtc status

echo
echo "== 6. Stop the cluster"
