#!/usr/bin/env bash
# The PostgreSQL demo, from a fresh machine: installs what is missing (PostgreSQL included),
# builds release, and runs orders whose accounts branch is a PostgreSQL database (balances and
# debits tables, served by dtc-pg) while their inventory and orders branches are the shop's
# own RMs. Mid-load it kills dtc-pg with kill -9 and stops PostgreSQL with an immediate
# shutdown (a crash: prepared transactions survive it), restarts both, then checks that money
# is conserved across PostgreSQL and the shop's RMs, that every txn has one outcome everywhere
# and what every client was told holds, and that PostgreSQL holds no prepared transaction.
#
#   scripts/demo-postgres.sh [--txns N] [--concurrency C]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TXNS=5000
CONCURRENCY=64
while [ $# -gt 0 ]; do
  case "$1" in
    --txns) TXNS="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    *) die "usage: demo-postgres.sh [--txns N] [--concurrency C]" ;;
  esac
done

DEMO="$ROOT/run-demo-postgres"
CONFIG="$DEMO/cluster.json"
export DTC_BUILD=release
cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
pg() { "$ROOT/scripts/postgres.sh" --config "$CONFIG" "$@"; }
trap 'cluster down >/dev/null 2>&1 || true' EXIT

ensure_prerequisites
build_binaries
dtc() { "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }
sql() { pg psql accounts -At -c "$1"; }

[ -d "$DEMO/run/pids" ] && cluster down >/dev/null 2>&1 || true
rm -rf "$DEMO"
mkdir -p "$DEMO"
cp "$ROOT/Examples/postgres/cluster.json" "$CONFIG"

echo
echo "== 1. Start PostgreSQL, 3 coordinator nodes, inventory and orders (LMDB) and accounts (dtc-pg)"
cluster up
dtc status

echo
echo "== 2. One order by hand: its debit is a row in PostgreSQL, written by the branch's prepared transaction"
dtc order --user user-1 --sku sku-1 --qty 2 --amount 1500 --txn pg-order-1
dtc order --user user-2 --sku sku-2 --qty 1 --amount 999999999999 --txn pg-order-2 || true
sql "SELECT order_id, user_id, cents FROM shop_debits"
sql "SELECT txn_id, CASE outcome WHEN 1 THEN 'commit' ELSE 'abort' END, applications, participants FROM dtc_ledger ORDER BY txn_id"

echo
echo "== 3. $TXNS random orders at concurrency $CONCURRENCY; dtc-pg is killed (kill -9) and PostgreSQL crashes mid-load"
dtc load --txns "$TXNS" --concurrency "$CONCURRENCY" --retry-for 120 --history "$DEMO/history.jsonl" > "$DEMO/load.txt" &
LOAD=$!
sleep 3
echo "PostgreSQL holds $(sql "SELECT count(*) FROM pg_prepared_xacts") prepared transactions of dtc's"
cluster kill accounts
pg stop-immediate
echo "killed dtc-pg and stopped PostgreSQL (immediate); orders meanwhile get NO from accounts (unreachable)"
sleep 2
pg up
cluster restart accounts
echo "restarted both; PostgreSQL recovered $(sql "SELECT count(*) FROM pg_prepared_xacts") prepared transactions, which dtc-pg finishes as the coordinator decided"
grep -h "prepared transactions as in doubt\|resolved" "$DEMO/run/logs/accounts.log" | sed -n "1,5p" | sed 's/^.*\] /  /'
wait "$LOAD"
cat "$DEMO/load.txt"

echo
echo "== 4. Check every invariant across PostgreSQL and the shop's RMs (and what each client was told)"
dtc check --history "$DEMO/history.jsonl"
echo "pg_prepared_xacts: $(sql "SELECT count(*) FROM pg_prepared_xacts") rows; balances + debits in PostgreSQL: $(sql "SELECT (SELECT sum(cents) FROM shop_balances) + (SELECT coalesce(sum(cents), 0) FROM shop_debits)")"

echo
echo "== 5. Stop the cluster (and PostgreSQL)"
