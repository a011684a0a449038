# Shared helpers for dtc's scripts. Source it; it sets ROOT and defines the functions below.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "[$(basename "$0")] $*" >&2; }
die() { say "error: $*"; exit 1; }

# Installs what a fresh machine lacks: LMDB's library and headers, python3 for JSON.
ensure_prerequisites() {
  local missing=()
  [ -f /usr/include/lmdb.h ] || missing+=(liblmdb-dev)
  command -v python3 >/dev/null || missing+=(python3)
  command -v swift >/dev/null || die "swift is not on PATH (Swift 6.1 or later is needed)"
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      sudo apt-get update -qq >/dev/null && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi || die "could not install ${missing[*]}"
  fi
}

# Builds the three binaries in $DTC_BUILD mode (release by default) and sets BIN.
build_binaries() {
  local mode="${DTC_BUILD:-release}"
  say "building ($mode)"
  (cd "$ROOT" && swift build -c "$mode" --product dtc-node >&2 && swift build -c "$mode" --product dtc-rm >&2 \
    && swift build -c "$mode" --product dtc >&2) || die "build failed"
  BIN="$(cd "$ROOT" && swift build -c "$mode" --show-bin-path)"
}

# Sets BIN without building when the binaries already exist.
find_binaries() {
  local mode="${DTC_BUILD:-release}"
  # .build/<mode> is SwiftPM's link to the bin path; asking swift for it costs a second.
  BIN="$ROOT/.build/$mode"
  if [ ! -x "$BIN/dtc-node" ] || [ ! -x "$BIN/dtc-rm" ] || [ ! -x "$BIN/dtc" ]; then
    build_binaries
  fi
}

# Prints "kind name host port" for every process in the cluster config $1.
cluster_processes() {
  python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for n in c["nodes"]:
    print("node", n["name"], n["host"], n["port"])
for r in c["rms"]:
    print("rm", r["name"], r["host"], r["port"])
PY
}
