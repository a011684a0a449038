#!/usr/bin/env bash
# The PostgreSQL participant test, with a real PostgreSQL server and real processes: the
# cluster of Examples/postgres/cluster.json (3 nodes, the shop's inventory and orders as dtc-rm,
# and its accounts as a PostgreSQL database served by dtc-pg) on this test's own ports and data
# folder, PostgreSQL included (scripts/postgres.sh, via cluster.sh).
#   0. swift test's PostgresParticipantTests against this server: duplicate COMMIT after a
#      restart, a late PREPARE after a ROLLBACK of an unknown txn, restart recovery, stale
#      epochs, SQL errors and row counts, a lock wait;
#   a. an order commits: its debit is a row of shop_debits, and dtc-pg's ledger says commit;
#   b. NO votes: a constraint violation (a second debit for one order) and a wrong row count
#      (insufficient funds) abort with PostgreSQL's reason, and apply nothing;
#   c. a lock held in PostgreSQL past the lock wait bound: NO, cause contention;
#   d. kill -9 of dtc-pg between PREPARE TRANSACTION and its vote (a crash point): the txn
#      aborts, and after the restart dtc-pg finds the prepared transaction and rolls it back;
#   e. PostgreSQL stopped (immediate shutdown) while it holds a prepared branch: an order in
#      the meantime gets NO "postgres unavailable"; once PostgreSQL is back, the held branch
#      commits as decided;
#   f. dtc-pg dies after COMMIT PREPARED, before its ack: restarted, it acknowledges the resent
#      COMMIT from its ledger without applying it again;
#   g. `dtc check` (money across PostgreSQL and the shop's RMs, one outcome per txn everywhere,
#      nothing prepared, pg_prepared_xacts included) passes.
# Prints PASS or FAIL per step; exit 1 on the first failure. Every wait is bounded.
#
#   DTC_BUILD=debug scripts/pg-test.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WORK="$(mktemp -d /tmp/dtc-pg-test.XXXXXX)"
CONFIG="$WORK/cluster.json"
export DTC_BUILD="${DTC_BUILD:-debug}"
BASE=32100
PG_PORT=$(( BASE + 50 ))
SUBMIT_PID=""
HOLDER_PID=""

# A longer prepare timeout keeps a txn in flight while a step pauses a process.
write_test_config "$ROOT/Examples/postgres/cluster.json" "$CONFIG" "$BASE" '{"timing": {"prepareTimeoutMs": 10000}}'
python3 - "$CONFIG" "$PG_PORT" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for rm in c["rms"]:
    if "postgres" in rm:
        rm["postgres"]["port"] = int(sys.argv[2])
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY

cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
pg() { "$ROOT/scripts/postgres.sh" --config "$CONFIG" "$@"; }
cleanup() {
  local code=$?
  [ -n "$SUBMIT_PID" ] && kill "$SUBMIT_PID" 2>/dev/null || true
  [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  if [ "$code" -ne 0 ]; then
    [ -n "${FAILED:-}" ] || echo "FAIL: unexpected error (exit $code)"
    say "FAILED; last log lines of each process:"
    for f in "$WORK"/run/logs/*.log; do echo "--- $f"; tail -n 15 "$f"; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ensure_prerequisites
find_binaries
dtc() { timeout 120 "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }
# One value from the accounts database (empty while PostgreSQL is down).
sql() { pg psql accounts -At -c "$1" 2>/dev/null || true; }

pass() { echo "PASS: $*"; }
fail() { FAILED=1; echo "FAIL: $*"; exit 1; }

# Polls "$@" every 100 ms until it succeeds, for at most $WAIT seconds (default 30).
wait_until() {
  local deadline=$(( $(date +%s) + ${WAIT:-30} ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for: $*"
    sleep 0.1
  done
}

# Places order $1 (user $2, amount $3 cents, 1 unit of sku-1); leaves the answer in OUT.
order() {
  OUT="$(dtc order --txn "$1" --user "$2" --sku sku-1 --qty 1 --amount "$3" --retry-for 60 2>&1)" || true
  echo "    $OUT"
}
in_background() {
  ( order "$@" > "$WORK/$1.out" 2>&1 ) &
  SUBMIT_PID=$!
}
background_answer() {
  wait "$SUBMIT_PID" || true
  SUBMIT_PID=""
  OUT="$(sed 's/^ *//' "$WORK/$1.out")"
  echo "    $OUT"
}
committed() { [[ "$OUT" == "txn $1: COMMITTED"* ]]; }
aborted_because() { [[ "$OUT" == "txn $1: ABORTED"* ]] && [[ "$OUT" == *"$2"* ]]; }

debits_of() { sql "SELECT count(*) || ' ' || coalesce(sum(cents), 0) FROM shop_debits WHERE order_id = '$1'"; }
ledger_of() { sql "SELECT outcome || ' ' || applications FROM dtc_ledger WHERE participant = 'accounts' AND txn_id = '$1'"; }
held() { sql "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'dtc:accounts:%:$1'"; }
is_held() { [ "$(held "$1")" = 1 ]; }
not_held() { [ "$(held "$1")" = 0 ]; }
balance_of() { sql "SELECT cents FROM shop_balances WHERE user_id = '$1'"; }
field() { { dtc status 2>/dev/null || true; } | awk -v n="$1" -v c="$2" '$1 == n && $3 == "up" { print $c }'; }
nodes_sum() { { dtc status 2>/dev/null || true; } | awk -v c="$1" '$1 ~ /^n[0-9]+$/ && $3 == "up" { s += $c } END { print s + 0 }'; }
all_led() { [ "$(nodes_sum 4)" -eq "$(python3 -c "import json; print(json.load(open('$CONFIG'))['partitions'])")" ]; }
nothing_in_flight() { [ "$(nodes_sum 5)" -eq 0 ]; }
accounts_up() { [ "$(field accounts 3)" = up ]; }
pg_up() { [ "$(sql 'SELECT 1')" = 1 ]; }

cluster up
WAIT=30 wait_until all_led
grep -q "serving participant" "$WORK/run/logs/accounts.log" || fail "dtc-pg did not log that it serves"
pass "cluster up: 3 nodes, inventory and orders (dtc-rm), accounts (dtc-pg on PostgreSQL 127.0.0.1:$PG_PORT)"

say "0. the participant against this server (swift test --filter PostgresParticipantTests)"
( cd "$ROOT" && DTC_TEST_POSTGRES="127.0.0.1:$PG_PORT:shop_accounts:dtc:dtc-local-only" \
    swift test --filter PostgresParticipantTests 2>&1 | tail -n 12 ) > "$WORK/unit.out" || true
sed 's/^/    /' "$WORK/unit.out"
grep -q "Suite PostgresParticipantTests passed" "$WORK/unit.out" || fail "0: PostgresParticipantTests did not pass"
pass "0: PostgresParticipantTests passed against a real PostgreSQL"

say "a. an order commits across the shop's RMs and PostgreSQL"
before="$(balance_of user-1)"
order a1 user-1 500
committed a1 || fail "a: order a1 did not commit: $OUT"
[ "$(debits_of a1)" = "1 500" ] || fail "a: shop_debits for a1: $(debits_of a1)"
[ "$(ledger_of a1)" = "1 1" ] || fail "a: dtc_ledger for a1: $(ledger_of a1) (want commit, applied once)"
[ "$(balance_of user-1)" -eq $(( before - 500 )) ] || fail "a: user-1 has $(balance_of user-1), want $(( before - 500 ))"
pass "a: a1 committed; its debit is in shop_debits, user-1's balance fell by 500, the ledger says commit (applied once)"

say "b. constraint violations and wrong row counts vote NO"
OUT="$(dtc submit --txn b1 --retry-for 30 --branch 'accounts:sql={"statements":[{"sql":"INSERT INTO shop_debits (order_id, user_id, cents) VALUES ($1, $2, $3)","params":["a1","user-1",7]}]}' 2>&1)" || true
echo "    $OUT"
aborted_because b1 "duplicate key value violates unique constraint" || fail "b: a second debit row for a1 was not refused by PostgreSQL: $OUT"
order b2 user-1 999999999999
aborted_because b2 "insufficient funds" || fail "b: an order beyond user-1's balance was not refused: $OUT"
[ "$(debits_of a1)" = "1 500" ] && [ "$(debits_of b2)" = "0 0" ] || fail "b: a refused branch left rows: a1 $(debits_of a1), b2 $(debits_of b2)"
[ "$(balance_of user-1)" -eq $(( before - 500 )) ] || fail "b: user-1's balance changed: $(balance_of user-1)"
pass "b: a duplicate key and a failed balance check each aborted with PostgreSQL's or the statement's reason; nothing applied"

say "c. a lock held in PostgreSQL past the lock wait bound"
pg psql accounts -At -c "BEGIN; SELECT cents FROM shop_balances WHERE user_id = 'user-2' FOR UPDATE; SELECT pg_sleep(8); COMMIT;" > /dev/null 2>&1 &
HOLDER_PID=$!
lock_held() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(8)%' AND state = 'active' AND pid <> pg_backend_pid()")" = 1 ]; }
WAIT=10 wait_until lock_held
order c1 user-2 300
aborted_because c1 "lock timeout (SQLSTATE 55P03)" || fail "c: an order waiting on user-2's locked row did not abort for PostgreSQL's lock timeout: $OUT"
wait "$HOLDER_PID" || true
HOLDER_PID=""
[ "$(debits_of c1)" = "0 0" ] || fail "c: c1 left a debit"
pass "c: the order aborted with PostgreSQL's lock timeout while another session held the row (cause contention: PostgresParticipantTests)"

say "d. kill -9 of dtc-pg between PREPARE TRANSACTION and its vote"
DTC_CRASH_AT_accounts=pg-after-prepare cluster restart accounts > /dev/null
order d1 user-3 400
aborted_because d1 "" || fail "d: d1 did not abort: $OUT"
grep -q "crash point pg-after-prepare reached" "$WORK/run/logs/accounts.log" || fail "d: dtc-pg did not die at its crash point"
is_held d1 || fail "d: PostgreSQL does not hold d1's prepared transaction after the crash"
cluster restart accounts > /dev/null
WAIT=30 wait_until not_held d1
[ "$(debits_of d1)" = "0 0" ] || fail "d: d1 left a debit: $(debits_of d1)"
[ "$(ledger_of d1)" = "2 1" ] || fail "d: dtc_ledger for d1: $(ledger_of d1) (want abort)"
pass "d: d1 aborted; restarted, dtc-pg found its prepared transaction and rolled it back (ledger: abort)"

say "e. PostgreSQL stopped (immediate shutdown) while it holds a prepared branch"
cluster pause orders > /dev/null
in_background e1 user-4 600
WAIT=20 wait_until is_held e1
pg stop-immediate > /dev/null
cluster resume orders > /dev/null
background_answer e1
committed e1 || fail "e: e1 did not commit once orders voted: $OUT"
order e2 user-5 100
aborted_because e2 "postgres unavailable" || fail "e: an order while PostgreSQL is down did not get NO 'postgres unavailable': $OUT"
pg up > /dev/null
WAIT=30 wait_until pg_up
WAIT=30 wait_until not_held e1
[ "$(debits_of e1)" = "1 600" ] || fail "e: e1's debit after PostgreSQL came back: $(debits_of e1)"
[ "$(ledger_of e1)" = "1 1" ] || fail "e: dtc_ledger for e1: $(ledger_of e1)"
order e3 user-5 100
committed e3 || fail "e: an order after PostgreSQL came back did not commit: $OUT"
pass "e: e1, held prepared across PostgreSQL's crash, committed once it was back; e2 got NO 'postgres unavailable' meanwhile; e3 committed"

say "f. dtc-pg dies after COMMIT PREPARED, before its ack"
DTC_CRASH_AT_accounts=pg-after-commit cluster restart accounts > /dev/null
before="$(balance_of user-6)"
order f1 user-6 700
committed f1 || fail "f: f1 did not commit: $OUT"
WAIT=20 wait_until grep -q "crash point pg-after-commit reached" "$WORK/run/logs/accounts.log"
cluster restart accounts > /dev/null
WAIT=30 wait_until nothing_in_flight
[ "$(debits_of f1)" = "1 700" ] || fail "f: f1's debits: $(debits_of f1)"
[ "$(ledger_of f1)" = "1 1" ] || fail "f: dtc_ledger for f1: $(ledger_of f1) (want commit, applied once)"
[ "$(balance_of user-6)" -eq $(( before - 700 )) ] || fail "f: user-6 has $(balance_of user-6), want $(( before - 700 ))"
pass "f: the COMMIT resent after the restart was acknowledged from the ledger; f1 debited once"

say "g. dtc check across PostgreSQL and the shop's RMs"
dtc check --wait-quiet 30 > "$WORK/check.out" 2>&1 || { sed 's/^/    /' "$WORK/check.out"; fail "g: dtc check failed"; }
sed 's/^/    /' "$WORK/check.out"
[ "$(sql "SELECT count(*) FROM pg_prepared_xacts")" = 0 ] || fail "g: pg_prepared_xacts is not empty once quiet"
pass "g: dtc check passed; pg_prepared_xacts is empty"
say "all PostgreSQL participant checks passed"
