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

# The executables the scripts run: the node, the shop's participant, the CLI, and the example
# participant (Examples/tickets) that an rm's "program" in a cluster config may name.
DTC_PRODUCTS=(dtc-node dtc-rm dtc dtc-example-tickets)

# Builds the binaries in $DTC_BUILD mode (release by default) and sets BIN.
build_binaries() {
  local mode="${DTC_BUILD:-release}" product
  say "building ($mode)"
  for product in "${DTC_PRODUCTS[@]}"; do
    (cd "$ROOT" && swift build -c "$mode" --product "$product" >&2) || die "build failed ($product)"
  done
  BIN="$(cd "$ROOT" && swift build -c "$mode" --show-bin-path)"
}

# Sets BIN without building when the binaries already exist.
find_binaries() {
  local mode="${DTC_BUILD:-release}" product
  # .build/<mode> is SwiftPM's link to the bin path; asking swift for it costs a second.
  BIN="$ROOT/.build/$mode"
  for product in "${DTC_PRODUCTS[@]}"; do
    if [ ! -x "$BIN/$product" ]; then build_binaries; return; fi
  done
}

# Prints "kind name host port program" for every process in the cluster config $1. program is
# the executable in the build's bin folder that serves the process: dtc-node for a node, and
# for an rm its optional "program" (default dtc-rm, the shop's participant).
cluster_processes() {
  python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for n in c["nodes"]:
    print("node", n["name"], n["host"], n["port"], "dtc-node")
for r in c["rms"]:
    program = r.get("program") or "dtc-rm"
    if not isinstance(program, str) or "/" in program or program != program.strip() or " " in program:
        sys.exit(f"rm {r['name']}: \"program\" must name an executable in the build's bin folder, got {program!r}")
    print("rm", r["name"], r["host"], r["port"], program)
PY
}

# Writes a test's own copy of the cluster config $1 to $2: ports from $3 up (nodes, then rms),
# data under run/data/NAME beside it, and the JSON object $4 (optional) merged in, one level
# deep (e.g. '{"timing": {"prepareTimeoutMs": 10000}}' changes that one timing value).
write_test_config() {
  python3 - "$1" "$2" "$3" "${4:-{\}}" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for key, value in json.loads(sys.argv[4]).items():
    if isinstance(value, dict) and isinstance(c.get(key), dict):
        c[key].update(value)
    else:
        c[key] = value
for i, p in enumerate(c["nodes"] + c["rms"]):
    p["port"] = int(sys.argv[3]) + i
    p["dataDir"] = "run/data/" + p["name"]
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
}
