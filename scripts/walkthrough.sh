#!/usr/bin/env bash
# Runs README.md's "Walkthrough: from zero to a token" as written, against a
# fresh server, so that the walkthrough cannot rot.
#
#     scripts/walkthrough.sh
#     WALKTHROUGH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/walkthrough.sh
#
# It takes the ```sh blocks between <!-- walkthrough:begin --> and
# <!-- walkthrough:end --> in README.md and runs them in order, verbatim, in
# one bash with `set -euo pipefail`, from the repository's root, printing each
# before it runs. Two markers, each on the line before a block (blank lines
# between are allowed), change that:
#   <!-- walkthrough:server -->  the block starts the server (in the reader's
#       second terminal): instead of it, this script starts `dzdesk-auth` (the
#       one on PATH by then, as the README put it there) on a free port with a
#       fresh database, and waits until /readyz answers.
#   <!-- walkthrough:skip -->    the block is not run (the browser's part).
# Other fenced blocks (```text, ...) are prose and never run.
#
# The blocks get nothing but environment: DATABASE_URL (a fresh SQLite file,
# or with WALKTHROUGH_DATABASE_URL, a PostgreSQL server's URL with CREATEDB
# rights, a fresh database created there and dropped at the end),
# DZDESK_LISTEN (127.0.0.1 and the free port), AUTH (http://localhost:PORT),
# and TMPDIR (a directory of this script's, so that their mktemp files go
# with it). Other DZDESK_* variables are unset: a server with the defaults.
# On failure it prints the block that failed and the server's log, and exits
# non-zero; on any exit it stops the server and removes what it made.
#
# Needs bash, curl, jq, openssl (what the README's reader needs), python3
# (a free port) and, for PostgreSQL, psql. WALKTHROUGH_ROOT: the directory
# the blocks run in (default: the repository's root; it must hold the build,
# target/debug/dzdesk-auth, after the first block's `cargo build`).
# WALKTHROUGH_README: another README to take the blocks from.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
readme=${WALKTHROUGH_README:-$repo/README.md}
root=${WALKTHROUGH_ROOT:-$repo}
pg_server=${WALKTHROUGH_DATABASE_URL:-}
started=$(date +%s)

fail() { echo "walkthrough: $*" >&2; exit 1; }

missing=()
for tool in curl jq openssl python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ -n "$pg_server" ]; then command -v psql >/dev/null 2>&1 || missing+=(postgresql-client); fi
[ ${#missing[@]} -eq 0 ] || fail "needs ${missing[*]} (Debian: apt-get install ${missing[*]})"
[ -f "$readme" ] || fail "no $readme"
[ -d "$root" ] || fail "WALKTHROUGH_ROOT $root is not a directory"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/walkthrough.XXXXXX")
db_name=""
server_pid_file="$tmp/server.pid"
server_log="$tmp/server.log"

stop_server() {
  [ -s "$server_pid_file" ] || return 0
  local pid
  pid=$(cat "$server_pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # DZDESK_SHUTDOWN_SECS=0 below: it exits at once; a hung one is killed.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$server_pid_file"
}

driver_pid=""
cleanup() {
  local status=$?
  if [ -n "$driver_pid" ]; then
    kill -TERM -- "-$driver_pid" 2>/dev/null || kill -TERM "$driver_pid" 2>/dev/null || true
  fi
  stop_server
  if [ -n "$db_name" ]; then
    psql -w -q "$pg_server" -c "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)" >/dev/null 2>&1 ||
      echo "walkthrough: could not drop the database $db_name" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'echo "walkthrough: interrupted" >&2; exit 130' INT
trap 'echo "walkthrough: terminated" >&2; exit 143' TERM

# --- the blocks -------------------------------------------------------------
# blocks/N.sh holds block N; kinds: "N KIND LINE" (KIND run, server or skip;
# LINE the README line of its opening fence).
mkdir -p "$tmp/blocks" "$tmp/tmp"
awk -v dir="$tmp/blocks" -v kinds="$tmp/kinds" '
  function die(msg) { print "walkthrough: README line " NR ": " msg > "/dev/stderr"; bad = 1; exit 1 }
  /^<!-- walkthrough:begin -->[ \t]*$/ {
    if (inside) die("a second walkthrough:begin")
    inside = 1; seen = 1; next
  }
  /^<!-- walkthrough:end -->[ \t]*$/ {
    if (!inside || fence != "") die("walkthrough:end outside the walkthrough or inside a block")
    inside = 0; ended = 1; next
  }
  !inside { next }
  fence != "" {
    if ($0 ~ /^```[ \t]*$/) { fence = ""; if (out != "") close(out); out = ""; next }
    if (out != "") print > out
    next
  }
  /^```/ {
    fence = $0
    if ($0 ~ /^```sh[ \t]*$/) {
      n++
      kind = (pending != "") ? pending : "run"
      out = sprintf("%s/%d.sh", dir, n)
      printf "" > out
      print n, kind, NR > kinds
    } else {
      if (pending != "") die("walkthrough:" pending " is not followed by a ```sh block")
      out = ""
    }
    pending = ""
    next
  }
  /^<!-- walkthrough:(server|skip) -->[ \t]*$/ {
    if (pending != "") die("two markers in a row")
    pending = $0; sub(/^<!-- walkthrough:/, "", pending); sub(/ -->.*$/, "", pending)
    next
  }
  /^[ \t]*$/ { next }
  { if (pending != "") die("walkthrough:" pending " is not followed by a ```sh block") }
  END {
    if (bad) exit 1
    if (!seen) { print "walkthrough: no <!-- walkthrough:begin --> in the README" > "/dev/stderr"; exit 1 }
    if (!ended) { print "walkthrough: no <!-- walkthrough:end --> after walkthrough:begin" > "/dev/stderr"; exit 1 }
    if (fence != "") { print "walkthrough: a block is not closed" > "/dev/stderr"; exit 1 }
  }
' "$readme" || exit 1
[ -s "$tmp/kinds" ] || fail "no \`\`\`sh blocks between the walkthrough markers"
[ "$(awk '$2 == "server"' "$tmp/kinds" | wc -l)" -eq 1 ] ||
  fail "exactly one block must be marked <!-- walkthrough:server -->"
blocks_run=$(awk '$2 != "skip"' "$tmp/kinds" | wc -l)
blocks_skipped=$(awk '$2 == "skip"' "$tmp/kinds" | wc -l)

# --- the database and the port ------------------------------------------------
if [ -n "$pg_server" ]; then
  [[ "$pg_server" =~ ^(postgres(ql)?://[^/?]+)(/[^?]*)?(\?.*)?$ ]] ||
    fail "WALKTHROUGH_DATABASE_URL is not a postgres:// URL"
  db_name="walkthrough_$(date +%s)_$$"
  psql -w -q "$pg_server" -c "CREATE DATABASE \"$db_name\"" >/dev/null ||
    { db_name=""; fail "could not create a database on WALKTHROUGH_DATABASE_URL"; }
  database_url="${BASH_REMATCH[1]}/$db_name${BASH_REMATCH[4]}"
  backend=postgresql
else
  database_url="sqlite://$tmp/walkthrough.db"
  backend=sqlite
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# --- the driver: one bash that runs every block -------------------------------
driver="$tmp/driver.sh"
readme_name=$(basename "$readme")
{
  cat <<'PRELUDE'
set -euo pipefail
__walkthrough_block() {
  echo "$1" >"$WALKTHROUGH_TMP/current"
  printf '\n==> block %s (%s line %s)%s\n' "$1" "$WALKTHROUGH_README_NAME" "$2" "$3"
  sed 's/^/    /' "$WALKTHROUGH_TMP/blocks/$1.sh"
  echo
}
__walkthrough_skipped() {
  printf '\n==> block %s (%s line %s): not run (walkthrough:skip)\n' "$1" "$WALKTHROUGH_README_NAME" "$2"
}
__walkthrough_start_server() {
  local bin
  bin=$(command -v dzdesk-auth) || {
    echo "walkthrough: dzdesk-auth is not on PATH after the blocks before the server's" >&2
    return 1
  }
  echo "walkthrough: starting $bin on $DZDESK_LISTEN ($DATABASE_URL)"
  "$bin" serve >"$WALKTHROUGH_TMP/server.log" 2>&1 </dev/null &
  echo $! >"$WALKTHROUGH_TMP/server.pid"
  local i
  for i in $(seq 1 300); do
    if curl -fsS --max-time 2 -o /dev/null "$AUTH/readyz" 2>/dev/null; then
      echo "walkthrough: the server is ready at $AUTH"
      return 0
    fi
    kill -0 "$(cat "$WALKTHROUGH_TMP/server.pid")" 2>/dev/null || {
      echo "walkthrough: the server exited" >&2
      return 1
    }
    sleep 0.1
  done
  echo "walkthrough: the server did not answer /readyz within 30 s" >&2
  return 1
}
PRELUDE
  while read -r n kind line; do
    case "$kind" in
      run)
        printf '__walkthrough_block %s %s ""\n' "$n" "$line"
        cat "$tmp/blocks/$n.sh"
        echo
        ;;
      server)
        printf '__walkthrough_block %s %s " (the server: started by the script instead)"\n' "$n" "$line"
        echo "__walkthrough_start_server"
        ;;
      skip)
        printf '__walkthrough_skipped %s %s\n' "$n" "$line"
        ;;
    esac
  done <"$tmp/kinds"
  # shellcheck disable=SC2016 # written for the driver to expand
  echo 'echo done >"$WALKTHROUGH_TMP/current"'
} >"$driver"

echo "==> walkthrough: $blocks_run blocks of $readme_name ($blocks_skipped not run) on $backend, port $port"
# A fresh environment for a server with the defaults.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^DZDESK_' || true)
# The driver runs in a session of its own (setsid), and is waited for in the
# background, so that an interrupt here ends it, the commands it runs and
# the server at once (cleanup kills its process group).
(
  cd "$root"
  export DATABASE_URL="$database_url"
  export DZDESK_LISTEN="127.0.0.1:$port"
  export DZDESK_SHUTDOWN_SECS=0
  export AUTH="http://localhost:$port"
  export TMPDIR="$tmp/tmp"
  export WALKTHROUGH_TMP="$tmp"
  export WALKTHROUGH_README_NAME="$readme_name"
  # A hung server or command fails the run after 5 minutes (it takes
  # seconds) rather than hanging the suite.
  exec setsid --wait timeout 300 bash "$driver" </dev/null
) &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=""

current=$(cat "$tmp/current" 2>/dev/null || echo "")
if [ "$status" != 0 ] || [ "$current" != "done" ]; then
  echo >&2
  echo "!! walkthrough FAILED (exit $status) on $backend" >&2
  if [ -n "$current" ] && [ "$current" != "done" ]; then
    line=$(awk -v n="$current" '$1 == n { print $3 }' "$tmp/kinds")
    echo "!! in block $current, $readme_name line $line:" >&2
    sed 's/^/    /' "$tmp/blocks/$current.sh" >&2
  fi
  echo "!! the server's log:" >&2
  if [ -s "$server_log" ]; then sed 's/^/    /' "$server_log" >&2; else echo "    (empty)" >&2; fi
  exit 1
fi
echo
echo "==> walkthrough: $blocks_run blocks passed on $backend in $(($(date +%s) - started)) s ($blocks_skipped not run)"
