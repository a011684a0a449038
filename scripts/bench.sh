#!/usr/bin/env bash
# dtc's benchmark: builds release, measures the machine's own limits (durable LMDB commits/s,
# gRPC stream messages/s) and then, on a fresh cluster of cluster.json on its own ports, runs
# `dtc load` for a fixed time at each concurrency, recording committed txn/s, p50/p90/p99, CPU
# µs per committed txn for every process (from /proc; the client's from its rusage), fsyncs and
# gRPC messages per txn (from `dtc status`; the client's from its own count) and `dtc check`;
# then a run that kills the leader of most partitions with kill -9 a third of the way in and
# restarts it two thirds of the way in, under load. Writes bench/REPORT.json and a self-contained bench/report.html (SVG
# charts). Figures from a busy machine mean little: run it on a quiet one.
#
#   scripts/bench.sh [--quick] [--concurrency 1,16,64,256] [--seconds 60] [--failover-seconds 45 (0: none)] [--unary]
#
# --unary makes `dtc load` send a unary Submit per order instead of using one SubmitStream per node.
#
# --quick runs one 10 s point at concurrency 64 and no failover (a smoke check). The full run
# takes about 7 minutes after the build (concurrency 1 measures latency when nothing batches).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_prerequisites
export DTC_BUILD=release
build_binaries
exec python3 "$ROOT/scripts/bench.py" --root "$ROOT" --bin "$BIN" --out "$ROOT/bench" "$@"
