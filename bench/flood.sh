#!/usr/bin/env bash
# The sign-in flood (issue: "argon2 and the sign-in flood"), against a
# release build on a fresh PostgreSQL database:
#   1. RSS of the server before, during (sampled every 0.5 s) and after 150
#      connections replaying one pre-session cookie and CSRF token at
#      POST /login with a wrong password for FLOOD_SECS; every status counted
#      (no other endpoint may answer 500, which /healthz and /oauth/token
#      probes check meanwhile);
#   2. client_credentials req/s with no flood, then while 64 connections
#      hammer POST /login, in one run; prints the ratio.
#
#   bench/flood.sh            # BENCH_BIN=..., FLOOD_SECS=10, DURATION=10s
set -euo pipefail
cd "$(dirname "$0")/.."

pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
duration=${DURATION:-10s}
flood_secs=${FLOOD_SECS:-10}
port=${PORT:-18183}
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$oha" ] || { echo "needs oha (cargo install oha --locked)" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then bin=$BENCH_BIN; else
  cargo build --release --quiet --bin dzdesk-auth
  bin=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi

db="dzdesk_flood_$(date +%s)"
psql "$pg" -qc "CREATE DATABASE $db"
url=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/'+sys.argv[2])))" "$pg" "$db")
jar=$(mktemp)
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -f "$jar"
  psql "$pg" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT
export DATABASE_URL=$url DZDESK_LISTEN=127.0.0.1:$port RUST_LOG=error
printf 'bench-password-%s' "$RANDOM$RANDOM" | "$bin" user create --email flood@example.com --role agent --password-stdin >/dev/null
creds=$("$bin" client create --name bench --scope "requests:read" --grant-type client_credentials)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$creds")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$creds")
basic=$(printf '%s:%s' "$id" "$secret" | base64 -w0)

"$bin" serve & server=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

# One pre-session cookie and CSRF token, replayed by every request.
html=$(curl -s -c "$jar" "http://127.0.0.1:$port/login")
token=$(sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' <<<"$html" | head -1)
cookie=$(awk '$6 ~ /dzdesk/ {print $6"="$7}' "$jar" | paste -sd';' -)
form="email=flood%40example.com&password=wrong-password-guess&next=%2F&csrf_token=$token"

report() {
  python3 -c '
import json, sys
name, data = sys.argv[1], json.load(sys.stdin)
s, lat = data["summary"], data["latencyPercentiles"]
codes = data.get("statusCodeDistribution", {})
print("scenario=%s rps=%.0f p50_ms=%.2f p99_ms=%.2f codes=%s" % (name, s["requestsPerSec"], lat["p50"]*1000, lat["p99"]*1000, codes))
' "$1"
}
cc() {
  "$oha" -c 32 -z "$duration" --no-tui --output-format json -m POST \
    -H "authorization: Basic $basic" -H "content-type: application/x-www-form-urlencoded" \
    -d "grant_type=client_credentials" "http://127.0.0.1:$port/oauth/token" | report "$1"
}
flood() { # connections seconds
  "$oha" -c "$1" -z "${2}s" --no-tui --output-format json -m POST \
    -H "cookie: $cookie" -H "content-type: application/x-www-form-urlencoded" \
    -d "$form" "http://127.0.0.1:$port/login" | report "login_flood_c$1"
}

echo "rss_before_kb=$(rss)"
peak=0
flood 150 "$flood_secs" > /tmp/flood.$$ &
fpid=$!
probes_500=0
while kill -0 "$fpid" 2>/dev/null; do
  r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
  for path in /healthz /readyz; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$path" || echo 000)
    [ "$code" = 500 ] && probes_500=$((probes_500 + 1))
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth/token" || echo 000)
  [ "$code" = 500 ] && probes_500=$((probes_500 + 1))
  sleep 0.5
done
cat /tmp/flood.$$; rm -f /tmp/flood.$$
echo "rss_peak_during_kb=$peak probes_answering_500=$probes_500"
sleep 2
echo "rss_after_kb=$(rss)"

cc client_credentials_no_flood
flood 64 "$(( ${duration%s} + 4 ))" > /tmp/flood64.$$ &
f64=$!
sleep 2
cc client_credentials_under_login_flood_c64
# This flood only: a bare `wait` would wait for the server too, forever.
wait "$f64"
cat /tmp/flood64.$$; rm -f /tmp/flood64.$$
