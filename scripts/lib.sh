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
# participant (Examples/tickets) and the PostgreSQL participant (dtc-pg) that an rm's "program" in a
# cluster config may name.
DTC_PRODUCTS=(dtc-node dtc-rm dtc dtc-example-tickets dtc-pg)

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

# The PostgreSQL databases of the cluster config $1: an rm with a "postgres" object
# ({"host", "port", "database", "user", "password"}) is a branch in that database (dtc-pg).
# Checks those objects: a local host (127.0.0.1 or localhost), a port no dtc process uses, no
# whitespace in the names or the password, one owner per database and one password per user on
# a server. $2 picks what to print: "servers" prints "port host" once per distinct port,
# "targets" prints "rmname host port database user password" per rm.
postgres_config() {
  python3 - "$1" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
used = {p["port"] for p in c["nodes"] + c["rms"]}
servers, targets, owners, passwords = {}, [], {}, {}
for r in c["rms"]:
    if "postgres" not in r:
        continue
    pg, where = r["postgres"], f"rm {r['name']}: \"postgres\""
    if not isinstance(pg, dict):
        sys.exit(f"{where} must be an object with host, port, database, user and password")
    host, port = pg.get("host"), pg.get("port")
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"{where}: host must be 127.0.0.1 or localhost (scripts/postgres.sh runs only local servers), got {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        sys.exit(f"{where}: port must be a number from 1 to 65535, got {port!r}")
    if port in used:
        sys.exit(f"{where}: port {port} is also a dtc process's port")
    for key in ("database", "user", "password"):
        value = pg.get(key)
        if not isinstance(value, str) or not value or any(ch.isspace() or ord(ch) < 32 for ch in value):
            sys.exit(f"{where}: {key} must be a non-empty string without whitespace, got {value!r}")
    db, user, password = pg["database"], pg["user"], pg["password"]
    if owners.setdefault((port, db), user) != user:
        sys.exit(f"{where}: database {db} on port {port} is owned by user {owners[(port, db)]} in another rm, not {user}")
    if passwords.setdefault((port, user), password) != password:
        sys.exit(f"{where}: user {user} on port {port} has another password in another rm")
    servers.setdefault(port, host)
    targets.append((r["name"], host, port, db, user, password))
if sys.argv[2] == "servers":
    for port, host in servers.items():
        print(port, host)
else:
    for t in targets:
        print(*t)
PY
}
# Prints "port host" for every PostgreSQL server the cluster config $1 needs (one per port).
postgres_servers() { postgres_config "$1" servers; }
# Prints "rmname host port database user password" for every rm of $1 with a "postgres" object.
postgres_targets() { postgres_config "$1" targets; }
