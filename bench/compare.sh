#!/usr/bin/env bash
# Side-by-side benchmark with the shared tool (../shared/bench/bench.sh): the
# peer oidc-provider first, then a release build of dzdesk-auth on a fresh
# PostgreSQL database, same concurrency and duration, in one run. Scenarios:
# discovery (metadata), token (client_credentials), introspect (RFC 7662).
#
#   bench/compare.sh                     # BENCH_DIR=../shared/bench CONNS=32 DURATION=10
#
# Prints bench.sh's lines for both servers (srv_hwm_kb is the peak RSS of the
# server process), then the peer's own peak RSS from its stop script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bench_dir=$(cd "${BENCH_DIR:-../shared/bench}" && pwd)
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-18182}
export CONNS=${CONNS:-32} DURATION=${DURATION:-10}
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [ ! -x "$oha" ]; then
  echo "oha not found: installing it (cargo install oha --locked)" >&2
  cargo install oha --locked --quiet
  oha="$HOME/.cargo/bin/oha"
fi
export OHA=$oha

cargo build --release --quiet --bin dzdesk-auth
bin=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac

# The peer, from a writable copy of its folder.
peer=$(mktemp -d)
cp -r "$bench_dir/oidc-provider/." "$peer/"
db="dzdesk_compare_$(date +%s)"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  "$peer/stop.sh" >/dev/null 2>&1 || true
  rm -rf "$peer"
  psql "$pg" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "# peer: oidc-provider (../shared/bench/oidc-provider)"
"$peer/start.sh" >/dev/null
peer_pid=$(cat "$peer/run/server.pid")
SERVER_PID=$peer_pid "$bench_dir/bench.sh" http://127.0.0.1:3900 /token /token/introspection \
  bench-client bench-secret-0123456789abcdef
echo "# peer stop: $("$peer/stop.sh" | head -1)"

echo "# dzdesk-auth (release, PostgreSQL)"
psql "$pg" -qc "CREATE DATABASE $db"
url=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/'+sys.argv[2])))" "$pg" "$db")
export DATABASE_URL=$url DZDESK_LISTEN=127.0.0.1:$port DZDESK_ISSUER=http://127.0.0.1:$port RUST_LOG=warn
creds=$("$bin" client create --name bench-service --scope "requests:read" --grant-type client_credentials --introspect)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$creds")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$creds")
"$bin" serve & server=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
SERVER_PID=$server "$bench_dir/bench.sh" "http://127.0.0.1:$port" /oauth/token /oauth/introspect \
  "$id" "$secret" /.well-known/oauth-authorization-server
