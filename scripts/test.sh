#!/usr/bin/env bash
# dtc's test command: installs what is missing, runs the unit tests (swift test), then the
# tests with real processes: scripts/cluster-test.sh, scripts/failover-test.sh,
# scripts/fault-test.sh, scripts/example-test.sh, scripts/pg-test.sh (a real PostgreSQL server)
# and chaos runs (scripts/chaos.sh) with fixed seeds: 60 s of orders, 30 s of transfers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# A crash of the test process prints every thread's backtrace, and CI keeps only the end of
# the output: repeat what says which test failed and where the process crashed, last.
summarize_unit_failure() {
    local log="$1"
    say "failed tests:"
    grep -E '^✘ Test .*(failed|recorded an issue)' "$log" | head -20 >&2 || true
    grep -E 'Fatal error|Program crashed|Precondition failed|Assertion failed' "$log" | head -5 >&2 || true
    say "the crashed thread, if any:"
    awk '/^Thread [0-9]+ .*crashed:/ {show = 1; n = 0} show && n < 30 {print; n++}' "$log" >&2 || true
}

ensure_prerequisites
say "swift build (debug)"
swift build --build-tests >&2
say "swift test"
mkdir -p "$ROOT/run"
unit_log="$ROOT/run/swift-test.log"
if ! swift test --skip-build 2>&1 | tee "$unit_log"; then
    summarize_unit_failure "$unit_log"
    die "swift test failed (whole output: $unit_log)"
fi
say "cluster test"
DTC_BUILD=debug "$ROOT/scripts/cluster-test.sh"
say "failover tests"
DTC_BUILD=debug "$ROOT/scripts/failover-test.sh"
say "fault injection test"
DTC_BUILD=debug "$ROOT/scripts/fault-test.sh"
say "example participant test (tickets)"
DTC_BUILD=debug "$ROOT/scripts/example-test.sh"
say "PostgreSQL participant test (dtc-pg)"
DTC_BUILD=debug "$ROOT/scripts/pg-test.sh"
say "chaos run (60 s)"
DTC_BUILD=debug "$ROOT/scripts/chaos.sh" --duration 60 --seed 1
say "chaos run, transfer workload (30 s)"
DTC_BUILD=debug "$ROOT/scripts/chaos.sh" --duration 30 --seed 2 --workload transfer
say "all tests passed"
