#!/usr/bin/env bash
# dtc's test command: installs what is missing, runs the unit tests (swift test), then the
# tests with real processes: scripts/cluster-test.sh, scripts/failover-test.sh,
# scripts/fault-test.sh, scripts/example-test.sh, scripts/pg-test.sh (a real PostgreSQL server)
# and a 60-second chaos run (scripts/chaos.sh) with a fixed seed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_prerequisites
say "swift build (debug)"
swift build --build-tests >&2
say "swift test"
swift test --skip-build || die "swift test failed"
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
say "all tests passed"
