#!/usr/bin/env bash
# A Jepsen-style run with real processes: a 3-node cluster and its three RMs on their own ports,
# load from clients that stream a history (and retry with the same txn IDs), and a nemesis that
# on a seeded schedule kills (-9) and restarts, pauses (SIGSTOP past the suspicion timeout) and
# resumes, and, when `dtc fault` exists, partitions, drops, delays and duplicates messages: at
# most one node and one RM at a time. Then it heals everything, waits (bounded) until no txn is
# in doubt, and runs the independent checker, `dtc verify`, over the history and every RM's
# ledger and state. It prints a summary table and exits 1 on any violation.
#
#   scripts/chaos.sh [--duration SECONDS] [--seed S] [--concurrency C] [--workload order|transfer] [--unary] [--keep]
#
# --workload transfer runs the bank of Examples/bank/cluster.json instead of the shop: two
# accounts participants and transfers between 100 accounts of each, in random directions (every
# txn locks two accounts at two participants: deadlock-prone by construction).
# --duration is the fault phase (default 120 s); --seed fixes the nemesis schedule and the
# orders (default: from the clock, printed); --keep leaves the run folder (history, logs) in
# place. --unary makes the clients send unary Submits (`dtc load --unary`) instead of SubmitStream.
# DTC_BUILD=debug|release picks the build (release by default).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=120
SEED=""
CONCURRENCY=16
KEEP=0
WORKLOAD=order
LOAD_MODE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --unary) LOAD_MODE+=(--unary); shift ;;
    --workload) WORKLOAD="$2"; shift 2 ;;
    *) die "usage: chaos.sh [--duration SECONDS] [--seed S] [--concurrency C] [--workload order|transfer] [--unary] [--keep]" ;;
  esac
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 10 ] || die "--duration must be a whole number of seconds, at least 10"
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] || die "--concurrency must be a number"
[[ "$WORKLOAD" = order || "$WORKLOAD" = transfer ]] || die "--workload must be order or transfer"
SEED="${SEED:-$(date +%s)}"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a number"

export DTC_BUILD="${DTC_BUILD:-release}"
ensure_prerequisites
find_binaries

WORK="$(mktemp -d /tmp/dtc-chaos.XXXXXX)"
CONFIG="$WORK/cluster.json"
HISTORY="$WORK/history.jsonl"
LOAD_PID=""
NEMESIS_PID=""
# Client attempts: give up after RETRY_FOR seconds (the outcome is then unknown), and send the
# same txn ID again, up to ATTEMPTS times.
RETRY_FOR=3
ATTEMPTS=3

cluster() { "$ROOT/scripts/cluster.sh" --config "$CONFIG" "$@"; }
dtc() { "$BIN/dtc" "$1" --config "$CONFIG" "${@:2}"; }

cleanup() {
  local code=$?
  [ -n "$NEMESIS_PID" ] && kill "$NEMESIS_PID" 2>/dev/null || true
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
  # Paused processes must be resumed to stop; cluster.sh down sends SIGCONT first.
  cluster down >/dev/null 2>&1 || true
  if [ "$code" -ne 0 ] || [ "$KEEP" = 1 ]; then
    say "run folder kept: $WORK (history.jsonl, nemesis.log, verify.txt, run/logs/)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# Own ports (30100+, or DTC_CHAOS_PORT_BASE+ to run two at once) and data, a small key space
# so that txns contend for the same keys.
if [ "$WORKLOAD" = transfer ]; then
  write_test_config "$ROOT/Examples/bank/cluster.json" "$CONFIG" "${DTC_CHAOS_PORT_BASE:-30100}" \
    '{"replicationFactor": 3, "seed": {"skus": 0, "unitsPerSku": 0, "users": 1000, "centsPerUser": 100000000}}'
  LOAD_MODE+=(--workload transfer --accounts 100)
else
  write_test_config "$ROOT/cluster.json" "$CONFIG" "${DTC_CHAOS_PORT_BASE:-30100}" \
    '{"replicationFactor": 3, "seed": {"skus": 100, "unitsPerSku": 100000, "users": 1000, "centsPerUser": 100000000}}'
fi

# Network faults need the `dtc fault` command and processes started to allow them.
NETWORK=0
if "$BIN/dtc" --help 2>/dev/null | grep -qE '^  fault '; then
  NETWORK=1
  export DTC_FAULT_INJECTION=1
  say "network faults on (dtc fault found)"
else
  say "network faults off: this build has no 'dtc fault' command; faults are kill -9 and SIGSTOP only"
fi

field() { { dtc status 2>/dev/null || true; } | awk -v n="$1" -v c="$2" '$1 == n && ($3 == "up" || $3 == "joining") { print $c }'; }
led() { local v; v="$(field "$1" 4)"; echo "${v:-0}"; }
PARTITIONS="$(python3 -c "import json; print(json.load(open('$CONFIG'))['partitions'])")"
NODES="$(python3 -c "import json; print(' '.join(n['name'] for n in json.load(open('$CONFIG'))['nodes']))")"
total_led() {
  local total=0 node
  for node in $NODES; do total=$(( total + $(led "$node") )); done
  echo "$total"
}
all_led() { [ "$(total_led)" -eq "$PARTITIONS" ]; }
wait_until() {
  local deadline=$(( $(date +%s) + ${WAIT:-30} ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for: $*"
    sleep 0.1
  done
}

say "chaos: seed $SEED, $DURATION s of faults, $WORKLOAD workload, concurrency $CONCURRENCY, build $DTC_BUILD, folder $WORK"
cluster up >/dev/null
wait_until all_led

START="$(date +%s.%N)"
dtc load --duration "$DURATION" --concurrency "$CONCURRENCY" --seed "$SEED" --retry-for "$RETRY_FOR" \
  --attempts "$ATTEMPTS" --resubmit 0.1 --history "$HISTORY" --json ${LOAD_MODE[@]+"${LOAD_MODE[@]}"} > "$WORK/load.json" 2> "$WORK/load.err" &
LOAD_PID=$!
NETWORK_FLAG=()
[ "$NETWORK" = 1 ] && NETWORK_FLAG=(--network)
python3 "$ROOT/scripts/chaos-nemesis.py" --config "$CONFIG" --cluster-sh "$ROOT/scripts/cluster.sh" --dtc "$BIN/dtc" \
  --seed "$SEED" --duration "$DURATION" --counts "$WORK/faults.json" "${NETWORK_FLAG[@]}" > "$WORK/nemesis.log" 2>&1 &
NEMESIS_PID=$!

# The nemesis stops on its own after the fault phase and heals; bound it anyway.
deadline=$(( $(date +%s) + DURATION + 120 ))
while kill -0 "$NEMESIS_PID" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the nemesis did not finish within $DURATION + 120 s"
  sleep 1
done
wait "$NEMESIS_PID" || die "the nemesis failed: $(tail -n 5 "$WORK/nemesis.log")"
NEMESIS_PID=""
FAULTS_END="$(date +%s.%N)"
say "fault phase over after $(python3 -c "print(f'{$FAULTS_END - $START:.1f}')") s; healed; $(grep -c '^\[nemesis' "$WORK/nemesis.log") nemesis events logged"

# The clients stop sending new orders at --duration; the last ones finish within their retries.
deadline=$(( $(date +%s) + RETRY_FOR * ATTEMPTS + 60 ))
while kill -0 "$LOAD_PID" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "dtc load did not finish in time"
  sleep 1
done
wait "$LOAD_PID" || die "dtc load failed: $(tail -n 3 "$WORK/load.err")"
LOAD_PID=""

# Every process back and serving (a partition left without a leader after the heal is a
# liveness violation: its txns could never finish), then the checker: it waits (bounded)
# until no RM holds a prepared txn and no node has one in flight, and reads every RM's ledger
# and state.
cluster up >/dev/null
UNLED=0
deadline=$(( $(date +%s) + 60 ))
until all_led; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    UNLED=$(( PARTITIONS - $(total_led) ))
    dtc status > "$WORK/status-unled.txt" 2>&1 || true
    say "LIVENESS: $UNLED of $PARTITIONS partitions without a leader 60 s after the heal (status in status-unled.txt)"
    break
  fi
  sleep 0.2
done
QUIET_START="$(date +%s.%N)"
code=0
dtc verify "$HISTORY" --wait-quiet 120 --json "$WORK/verify.json" > "$WORK/verify.txt" 2>&1 || code=$?
QUIET_END="$(date +%s.%N)"
sed 's/^/    /' "$WORK/verify.txt"
[ -f "$WORK/verify.json" ] || die "dtc verify failed to run (exit $code): $(tail -n 3 "$WORK/verify.txt")"
dtc status > "$WORK/status.txt" 2>&1 || true

summary=0
python3 - "$WORK" "$SEED" "$DURATION" "$NETWORK" "$START" "$FAULTS_END" "$QUIET_START" "$QUIET_END" "$UNLED" <<'PY' || summary=$?
import json, sys
work, seed, duration, network = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
start, faults_end, quiet_start, quiet_end = map(float, sys.argv[5:9])
unled = int(sys.argv[9])
load = json.load(open(f"{work}/load.json"))
v = json.load(open(f"{work}/verify.json"))
f = json.load(open(f"{work}/faults.json"))
stale = conflicting = 0
section = None
for line in open(f"{work}/status.txt"):
    if line.startswith("rm "):
        section = "rm"
        continue
    cols = line.split()
    if section == "rm" and len(cols) >= 10 and cols[2] == "up":
        stale += int(cols[7]); conflicting += int(cols[8])
rows = [
    ("seed", seed),
    ("fault phase", f"{faults_end - start:.1f} s (--duration {duration}); network faults {'on' if network else 'off (no dtc fault)'}"),
    ("heal to verified", f"{quiet_end - faults_end:.1f} s (clients' last attempts, then dtc verify waiting for quiet: {quiet_end - quiet_start:.1f} s)"),
    ("txns (distinct IDs)", f"{v['txns']} ({v['attempts']} attempts, {v['retriedTxns']} IDs sent more than once)"),
    ("  told committed", v["toldCommitted"]),
    ("  told aborted", v["toldAborted"]),
    ("  never told, committed", v["neverToldCommitted"]),
    ("  never told, aborted", v["neverToldAborted"]),
    ("attempts ok/fail/unknown/open", f"{v['ok']}/{v['fail']}/{v['unknown']}/{v['open']}"),
    ("committed txn/s", f"{load['throughput']:.1f}"),
]
for kind in sorted(f["faults"]):
    rows.append((f"faults: {kind}", f["faults"][kind]))
rows.append(("faults: total", sum(f["faults"].values())))
rows += [
    ("nemesis commands failed", len(f["failures"])),
    ("max in doubt (history)", f"{v['maxInDoubtToldS']:.3f} s, invoke to first definite answer ({v['maxInDoubtToldTxn'] or '-'})"),
    ("max in doubt (never told)", f"{v['maxInDoubtNeverToldS']:.3f} s, invoke to resolved at every RM when verified ({v['maxInDoubtNeverToldTxn'] or '-'})"),
    ("stale-epoch refusals at RMs", f"{stale} (decisions refused as designed; since each RM's last start)"),
    ("conflicting decisions at RMs", conflicting),
    ("partitions unled after heal", unled),
    ("violations", v["violations"] + conflicting + unled),
]
width = max(len(r[0]) for r in rows)
print("chaos summary")
for name, value in rows:
    print(f"  {name:<{width}}  {value}")
for kind, n in v["byInvariant"].items():
    if n:
        print(f"  VIOLATED: {kind}: {n}")
if conflicting:
    print(f"  VIOLATED: an RM was sent a decision contradicting the one it applied: {conflicting}")
if unled:
    print(f"  VIOLATED: partitions without a leader 60 s after the heal: {unled}")
sys.exit(1 if v["violations"] + conflicting + unled else 0)
PY
[ "$code" -eq 0 ] && [ "$summary" -eq 0 ] || die "violations found (seed $SEED); replay the schedule with: scripts/chaos.sh --duration $DURATION --seed $SEED"
say "chaos run passed (seed $SEED)"
