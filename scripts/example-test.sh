#!/usr/bin/env bash
# The example participant test, with real processes: the cluster of Examples/tickets/cluster.json
# (3 nodes, the shop's three RMs and the ticket-booking participant dtc-example-tickets, which
# is written against the public DTCParticipant product only) on its own ports and data folder.
# With `dtc submit`:
#   a. a purchase spanning tickets:book and accounts:debit commits, and its seats are gone;
#   b. a purchase that tickets refuses (too many seats) aborts, and its debit is not applied;
#   c. the tickets participant is killed (kill -9) while a purchase spanning it is in flight
#      (once before it voted, once while it holds the purchase prepared) and restarted: each
#      purchase gets one outcome that tickets applies, a booking committed before the kills still
#      holds, a new purchase commits, and the committed txn submitted again answers COMMITTED
#      without booking twice;
#   d. `dtc check` passes (atomicity, exactly once, and the shop's business checks).
# Prints PASS or FAIL per step; exit 1 on the first failure. Every wait is bounded.
#
#   DTC_BUILD=debug scripts/example-test.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WORK="$(mktemp -d /tmp/dtc-example-test.XXXXXX)"
CONFIG="$WORK/cluster.json"
export DTC_BUILD="${DTC_BUILD:-debug}"
SUBMIT_PID=""

# The example's config on this test's own ports (31100+) and data folder. A longer prepare
# timeout keeps the txn of step c in flight while `dtc status` (1 s per paused process) sees it.
write_test_config "$ROOT/Examples/tickets/cluster.json" "$CONFIG" 31100 '{"timing": {"prepareTimeoutMs": 10000}}'

cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
cleanup() {
  local code=$?
  [ -n "$SUBMIT_PID" ] && kill "$SUBMIT_PID" 2>/dev/null || true
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
# Every CLI call is bounded: the router retries for --retry-for at most, timeout ends the rest.
dtc() { timeout 120 "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }

pass() { echo "PASS: $*"; }
fail() { FAILED=1; echo "FAIL: $*"; exit 1; }

# Polls "$@" every 50 ms until it succeeds, for at most $WAIT seconds (default 30).
wait_until() {
  local deadline=$(( $(date +%s) + ${WAIT:-30} ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

# Branches: a booking of $3 seats of event $2 under booking ID $1 at tickets; a debit of 500
# cents from user-1 for order $1 at accounts.
book() { echo "tickets:book={\"booking\":\"$1\",\"event\":\"$2\",\"seats\":$3}"; }
debit() { echo "accounts:debit={\"order_id\":\"$1\",\"user_id\":\"user-1\",\"amount\":500}"; }

# Submits txn $1 with the branches in the following arguments; leaves the output in OUT.
submit() {
  local txn="$1" args=() branch
  shift
  for branch in "$@"; do args+=(--branch "$branch"); done
  OUT="$(dtc submit --txn "$txn" --retry-for 30 "${args[@]}" 2>&1)" || true
  echo "    $OUT"
}
# A purchase as txn $1: booking $2 of $4 seats of event $3, paid by a debit of 500.
purchase() { submit "$1" "$(book "$2" "$3" "$4")" "$(debit "$1")"; }
# Purchase $1 (as `purchase` takes it) in the background: its answer goes to a file.
in_background() {
  ( purchase "$@" > "$WORK/$1.out" 2>&1; date +%s.%N > "$WORK/$1.end" ) &
  SUBMIT_PID=$!
}
# Waits (bounded by its --retry-for and dtc's timeout) for the background purchase $1 and
# sets OUTCOME to its one definite answer, COMMITTED or ABORTED.
background_outcome() {
  local out
  wait "$SUBMIT_PID" || true
  SUBMIT_PID=""
  out="$(sed 's/^ *//' "$WORK/$1.out")"
  echo "    $out"
  case "$out" in
    "txn $1: COMMITTED"*) OUTCOME=COMMITTED ;;
    "txn $1: ABORTED"*) OUTCOME=ABORTED ;;
    *) fail "c: purchase $1 got no definite answer: $out" ;;
  esac
}
# Seconds from the last kill to the answer of background purchase $1.
after_kill() { awk -v k="$KILLED_AT" '{ printf "%.2f", $1 - k }' "$WORK/$1.end"; }
committed() { [[ "$OUT" == "txn $1: COMMITTED"* ]]; }
aborted_because() { [[ "$OUT" == "txn $1: ABORTED"* ]] && [[ "$OUT" == *"$2"* ]]; }
# The state `dtc txn` shows for txn $1 (its first line: "txn ID: STATE...").
txn_state() { dtc txn "$1" 2>&1 | head -n 1; }

# The shop's debits and balances, from `dtc check`'s money line; sets DEBITS and BALANCES.
money() {
  local line
  line="$(dtc check --wait-quiet 30 2>&1 | grep 'initial money' || true)"
  DEBITS="$(sed -nE 's/.*debits ([0-9]+).*/\1/p' <<< "$line")"
  BALANCES="$(sed -nE 's/.*balances ([0-9]+).*/\1/p' <<< "$line")"
  [ -n "$DEBITS" ] && [ -n "$BALANCES" ] || fail "cannot read the shop's money from dtc check: $line"
}

field() { { dtc status 2>/dev/null || true; } | awk -v n="$1" -v c="$2" '$1 == n && $3 == "up" { print $c }'; }
# Sums column $1 over the nodes that are up, from one `dtc status` (4 = led, 5 = in flight).
nodes_sum() { { dtc status 2>/dev/null || true; } | awk -v c="$1" '$1 ~ /^n[0-9]+$/ && $3 == "up" { s += $c } END { print s + 0 }'; }
in_flight() { nodes_sum 5; }
busy() { [ "$(in_flight)" -gt 0 ]; }
all_led() { [ "$(nodes_sum 4)" -eq "$(python3 -c "import json; print(json.load(open('$CONFIG'))['partitions'])")" ]; }
tickets_up() { [ "$(field tickets 3)" = up ]; }
tickets_prepared() { local v; v="$(field tickets 4)"; [ -n "$v" ] && [ "$v" -gt 0 ]; }
tickets_quiet() { [ "$(field tickets 4)" = 0 ]; }

# Sets SEATS to the seats left of event $1, as tickets reports them when it refuses a booking
# too large (a txn that aborts and changes nothing).
SEAT_PROBES=0
seats_left() {
  SEAT_PROBES=$(( SEAT_PROBES + 1 ))
  local out
  out="$(dtc submit --txn "seats-$1-$SEAT_PROBES" --retry-for 30 --branch "$(book "probe-$SEAT_PROBES" "$1" 1000000)" 2>&1)" || true
  SEATS="$(sed -nE 's/.*1000000 asked, ([0-9]+) left.*/\1/p' <<< "$out")"
  [ -n "$SEATS" ] || fail "cannot read the seats left of $1: $out"
}

cluster up
WAIT=30 wait_until all_led
grep -q "serving participant" "$WORK/run/logs/tickets.log" || fail "tickets did not log that it serves"
pass "cluster up: 3 nodes, inventory, orders, accounts (dtc-rm) and tickets (dtc-example-tickets)"
money
INITIAL_BALANCES="$BALANCES"
[ "$DEBITS" -eq 0 ] || fail "debits before any txn: $DEBITS"

say "a. a purchase spanning tickets and accounts commits"
purchase a1 bk-a1 play 1
committed a1 || fail "a: purchase a1 (1 seat of play + debit 500) did not commit: $OUT"
state="$(txn_state a1)"
[[ "$state" == "txn a1: COMMITTED"* ]] || fail "a: dtc txn a1 says: $state"
dtc txn a1 | sed 's/^/    /'
submit a1-more "$(book bk-a1-more play 2)"
aborted_because a1-more "2 asked, 1 left" || fail "a: 2 seats of play (1 left after a1) were not refused for lack of seats: $OUT"
money
[ "$DEBITS" -eq 500 ] || fail "a: debits are $DEBITS after a1, expected 500"
pass "a: a1 committed (dtc txn: COMMITTED); play has 1 seat left (2 more refused); accounts debited 500"

say "b. a purchase that tickets refuses aborts everywhere"
purchase b1 bk-b1 concert 1000
aborted_because b1 "not enough seats for 'concert': 1000 asked, 100 left" || fail "b: b1 (1000 seats of concert) was not refused by tickets: $OUT"
aborted_because b1 "tickets" || fail "b: the abort reason does not name tickets: $OUT"
state="$(txn_state b1)"
[[ "$state" == "txn b1: ABORTED"* ]] || fail "b: dtc txn b1 says: $state"
money
[ "$DEBITS" -eq 500 ] || fail "b: debits are $DEBITS after the aborted b1, expected 500 (b1's debit applied?)"
purchase b2 bk-b1 concert 1
committed b2 || fail "b: the same purchase with a seat count that fits (b2) did not commit: $OUT"
money
[ "$DEBITS" -eq 1000 ] || fail "b: debits are $DEBITS after b2, expected 1000"
[ $(( INITIAL_BALANCES - BALANCES )) -eq 1000 ] || fail "b: balances fell by $(( INITIAL_BALANCES - BALANCES )), expected 1000"
pass "b: b1 aborted (reason: tickets refused, not enough seats); no debit applied; the same purchase with 1 seat (b2, same booking ID) committed; balances down 1000 = a1 + b2"

say "c. kill -9 tickets while purchases spanning it are in flight, then restart it"
purchase c0 bk-c0 opera 4
committed c0 || fail "c: c0 (4 seats of opera) did not commit: $OUT"

# c1: tickets is stopped, so c1's PREPARE waits unanswered at the node; then kill -9.
cluster pause tickets >/dev/null
in_background c1 bk-c1 concert 1
WAIT=20 wait_until busy
cluster kill tickets >/dev/null
KILLED_AT="$(date +%s.%N)"
say "killed tickets with $(in_flight) txn(s) in flight at the nodes"
cluster restart tickets >/dev/null
WAIT=30 wait_until tickets_up
background_outcome c1; c1="$OUTCOME"
[ "$(awk -v k="$KILLED_AT" '{ print ($1 >= k) }' "$WORK/c1.end")" = 1 ] || fail "c: c1 was answered before the kill, so it was not in flight then"
state="$(txn_state c1)"
[[ "$state" == "txn c1: $c1"* ]] || fail "c: c1 was answered $c1, but dtc txn says: $state"
pass "c: c1, unanswered at tickets when it was killed, ended $c1 $(after_kill c1) s after the kill (dtc txn agrees)"

# c3: tickets votes YES and holds c3 prepared (durable) while accounts is stopped; tickets is
# killed in doubt, then accounts votes. After its restart, tickets must apply the outcome.
cluster pause accounts >/dev/null
in_background c3 bk-c3 concert 2
WAIT=20 wait_until tickets_prepared
cluster kill tickets >/dev/null
KILLED_AT="$(date +%s.%N)"
cluster resume accounts >/dev/null
say "killed tickets while it held c3 prepared"
background_outcome c3; c3="$OUTCOME"
cluster restart tickets >/dev/null
WAIT=30 wait_until tickets_up
WAIT=30 wait_until tickets_quiet
state="$(dtc txn c3 2>&1)"
echo "$state" | sed 's/^/    /'
[[ "$state" == "txn c3: $c3"* ]] || fail "c: c3 was answered $c3, but dtc txn says: $state"
branch_state=ROLLED_BACK; [ "$c3" = COMMITTED ] && branch_state=COMMITTED
grep -q "tickets: book.*: $branch_state" <<< "$state" || fail "c: tickets did not end c3 $branch_state after its restart"
pass "c: c3, prepared at tickets when it was killed, ended $c3 $(after_kill c3) s after the kill; tickets applied it after its restart"

submit c0-again "$(book bk-c0 concert 1)"
aborted_because c0-again "booking ID 'bk-c0' is already used" || fail "c: c0's booking ID was not refused as used after the restart: $OUT"
pass "c: after the restarts, c0's booking (committed before the kills) still holds: its ID is refused as used"

purchase c2 bk-c2 concert 1
committed c2 || fail "c: a new purchase (c2) after the restart did not commit: $OUT"
pass "c: a new purchase spanning tickets (c2) committed after the restart"

purchase c0 bk-c0 opera 4
committed c0 || fail "c: c0 submitted again with the same branches did not answer COMMITTED: $OUT"
seats_left opera
[ "$SEATS" -eq 6 ] || fail "c: opera has $SEATS seats left, expected 6 (10 - 4, booked once)"
# concert: 100 - b2 (1) - c2 (1), - c1 (1) and - c3 (2) if they committed.
concert=98; purchases=4
[ "$c1" = COMMITTED ] && concert=$(( concert - 1 )) && purchases=$(( purchases + 1 ))
[ "$c3" = COMMITTED ] && concert=$(( concert - 2 )) && purchases=$(( purchases + 1 ))
seats_left concert
[ "$SEATS" -eq "$concert" ] || fail "c: concert has $SEATS seats left, expected $concert"
money
[ "$DEBITS" -eq $(( purchases * 500 )) ] || fail "c: debits are $DEBITS, expected $(( purchases * 500 )) for $purchases committed purchases"
pass "c: c0 submitted again answered COMMITTED; opera has 6 of 10 seats left (booked once), concert $concert; debits $DEBITS for $purchases purchases"

say "d. dtc check"
out="$(dtc check --wait-quiet 30 2>&1)" || { echo "$out" | sed 's/^/    /'; fail "d: dtc check found violations"; }
echo "$out" | sed 's/^/    /'
grep -q "check: all invariants hold" <<< "$out" || fail "d: dtc check did not say all invariants hold"
pass "d: dtc check: all invariants hold"
say "example test passed"
