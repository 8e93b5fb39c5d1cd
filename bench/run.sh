#!/usr/bin/env bash
# Load benchmark: a release build of dzdesk-auth on PostgreSQL (a fresh
# database), driven by oha with 32 connections for 10 s per scenario.
# Prints one line per scenario: scenario, req/s, p50, p99, non-2xx.
#
#   bench/run.sh                      # needs oha (cargo install oha --locked) and PostgreSQL
#   BENCH_PG=postgres://... CONNS=64 DURATION=20s SCENARIOS="refresh" bench/run.sh
#   BENCH_BIN=/path/to/dzdesk-auth SCENARIOS="introspect me_api_key" bench/run.sh
#                                     # another build (bench/ab.sh compares two)
#
# The service's own settings pass through: DZDESK_RATE_LIMITS=off, or
# DZDESK_REDIS_URL=redis://127.0.0.1:6379 for the shared limiter.
#
# Scenarios: healthz (the HTTP stack's baseline), introspect (RFC 7662 of one
# access token by an internal service), me_api_key (GET /v1/me with
# an API key: bearer extraction, key lookup, allowlist check), client_credentials (the
# token endpoint: client lookup, secret check, ES256 signature), refresh (the
# refresh_token grant with rotation: every request presents a token never used
# before, so it is driven by examples/refresh_load.rs, which first runs the
# real sign-in + consent + code exchange once per connection); flow and
# flow_openid (whole authorization-code round trips: GET /oauth/authorize,
# answered at once as the consent is remembered, then the code exchange with
# PKCE, for scope requests:read and for "openid requests:read", which adds a
# nonce and an ID token; the same driver with FLOW_SCOPE set, each connection
# a browser that signs in once; rps counts round trips, and when both run,
# flow_openid_vs_flow is the ratio of their rps); limits
# (bench/limits.sh: /v1/me with an enterprise key whose limit never triggers,
# with limits off, counted in process and counted in Redis, ROUNDS times,
# with the ratios against "off"); usage_log (bench/usage_log.sh: the same
# /v1/me with DZDESK_USAGE_LOG=off and on, ROUNDS times, and the ratio on/off);
# flood (bench/flood.sh: RSS under a
# 150-connection sign-in flood, and client_credentials while 64 connections
# hammer POST /login against its rate without them); metrics (bench/metrics.sh:
# introspect and me_api_key with DZDESK_METRICS_LISTEN unset and set, /metrics
# scraped once a second meanwhile, with the ratios). The last three start
# servers of their own, after this one has stopped.
#
# With DZDESK_METRICS_LISTEN set, /metrics is scraped once a second while
# the scenarios run (the scrape count is printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
conns=${CONNS:-32}
duration=${DURATION:-10s}
scenarios=${SCENARIOS:-healthz introspect me_api_key client_credentials refresh flow flow_openid limits usage_log flood metrics}
port=${PORT:-18181}
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [ ! -x "$oha" ]; then
  echo "oha not found: installing it (cargo install oha --locked, ~10 min on 2 cores)" >&2
  cargo install oha --locked --quiet
  oha="$HOME/.cargo/bin/oha"
fi

driver=${CARGO_TARGET_DIR:-target}/release/examples/refresh_load
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
  [[ " $scenarios " =~ " "(refresh|flow|flow_openid)" " ]] && cargo build --release --quiet --example refresh_load
else
  cargo build --release --quiet --bin dzdesk-auth --example refresh_load
  bin=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi

db="dzdesk_bench_$(date +%s)"
psql "$pg" -qc "CREATE DATABASE $db"
url=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/'+sys.argv[2])))" "$pg" "$db")
cleanup() {
  [ -n "${scraper:-}" ] && kill "$scraper" 2>/dev/null && wait "$scraper" 2>/dev/null
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  psql "$pg" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT

export DATABASE_URL=$url DZDESK_LISTEN=127.0.0.1:$port RUST_LOG=warn
creds=$("$bin" client create --name bench --scope "requests:read" --grant-type client_credentials)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$creds")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$creds")
basic=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
# The introspect scenario: an internal service that may introspect every token.
icreds=$("$bin" client create --name bench-introspector --scope "requests:read" --grant-type client_credentials --introspect)
iid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$icreds")
isecret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$icreds")
ibasic=$(printf '%s:%s' "$iid" "$isecret" | base64 -w0)
# The refresh scenario: a user, and a client for the code and refresh grants.
export BENCH_PASSWORD="bench-password-$(date +%s%N)"
printf '%s' "$BENCH_PASSWORD" | "$bin" user create --email bench@example.com --role agent --password-stdin >/dev/null
# An enterprise plan far above what the machine can serve, so the limit never
# triggers and the scenario measures what checking it costs (builds without
# plans skip this).
if "$bin" user set-plan --help >/dev/null 2>&1; then
  "$bin" user set-plan --email bench@example.com --plan enterprise --rate-limit 60000000 >/dev/null
  "$bin" client set-plan --id "$id" --plan enterprise --rate-limit 60000000 >/dev/null
fi
# The flow scenarios use it too (openid for flow_openid; builds without
# OpenID Connect get requests:read alone, for the others).
rcreds=$("$bin" client create --name bench-refresh --scope "requests:read openid" --redirect-uri http://127.0.0.1/cb 2>/dev/null) \
  || rcreds=$("$bin" client create --name bench-refresh --scope "requests:read" --redirect-uri http://127.0.0.1/cb)
rid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$rcreds")
rsecret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$rcreds")
# The me_api_key scenario: an API key of that user (on an argument list only
# inside this throwaway benchmark; never log or pass real keys this way).
kjson=$("$bin" api-key create --email bench@example.com --name bench --scope "requests:read requests:write")
apikey=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$kjson")

"$bin" serve & server=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
scrapes=$(mktemp)
if [ -n "${DZDESK_METRICS_LISTEN:-}" ]; then
  # A Prometheus scraping once a second while the load runs.
  while sleep 1; do
    curl -sf "http://$DZDESK_METRICS_LISTEN/metrics" >/dev/null && echo ok >>"$scrapes"
  done &
  scraper=$!
fi

report() {
  python3 -c '
import json, sys
name, data = sys.argv[1], json.load(sys.stdin)
s, lat = data["summary"], data["latencyPercentiles"]
codes = data.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
rps, p50, p99 = s["requestsPerSec"], lat["p50"] * 1000, lat["p99"] * 1000
print("scenario=%s rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d codes=%s" % (name, rps, p50, p99, bad, codes))
' "$1"
}

want() { [[ " $scenarios " == *" $1 "* ]]; }
if want introspect; then
  token=$(curl -sf -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json -m POST \
    -H "authorization: Basic $ibasic" -H "content-type: application/x-www-form-urlencoded" \
    -d "token=$token" "http://127.0.0.1:$port/oauth/introspect" | report introspect
fi
if want healthz; then
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json "http://127.0.0.1:$port/healthz" | report healthz
fi
if want me_api_key; then
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json \
    -H "authorization: Bearer $apikey" "http://127.0.0.1:$port/v1/me" | report me_api_key
  if [ "${DZDESK_USAGE_LOG:-on}" != off ]; then
    # How many of those requests the usage log kept (past its bounded
    # queue, entries are dropped and counted, never waited for).
    sleep 2
    echo "usage_log_rows=$(psql "$url" -Atc 'SELECT count(*) FROM api_key_usage')"
  fi
fi
if want client_credentials; then
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json -m POST \
    -H "authorization: Basic $basic" -H "content-type: application/x-www-form-urlencoded" \
    -d "grant_type=client_credentials" "http://127.0.0.1:$port/oauth/token" | report client_credentials
fi
if want refresh; then
  "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" bench@example.com env:BENCH_PASSWORD "$conns" "${duration%s}"
fi
flow_line= flow_openid_line=
# In the order SCENARIOS names them: each run leaves codes and grants
# behind, so "flow_openid flow" measures the other order.
for s in $scenarios; do
  case $s in
    flow)
      flow_line=$(FLOW_SCOPE="requests:read" "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" \
        bench@example.com env:BENCH_PASSWORD "$conns" "${duration%s}")
      echo "$flow_line" ;;
    flow_openid)
      flow_openid_line=$(FLOW_SCOPE="openid requests:read" "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" \
        bench@example.com env:BENCH_PASSWORD "$conns" "${duration%s}")
      echo "$flow_openid_line" ;;
  esac
done
if [ -n "$flow_line" ] && [ -n "$flow_openid_line" ]; then
  # What OpenID Connect adds to a round trip (the nonce, the ID token).
  python3 - "$flow_line" "$flow_openid_line" <<'PY'
import re, sys
flow, openid = (float(re.search(r"rps=(\d+)", line)[1]) for line in sys.argv[1:])
print("flow_openid_vs_flow=%.3f" % (openid / flow if flow else 0.0))
PY
fi
if [ -n "${scraper:-}" ]; then
  kill "$scraper" 2>/dev/null && wait "$scraper" 2>/dev/null || true
  scraper=
  echo "metrics_scrapes=$(wc -l <"$scrapes")"
fi
rm -f "$scrapes"
if want limits || want usage_log || want flood || want metrics; then
  kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  server=
fi
if want limits; then
  BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration bench/limits.sh
fi
if want usage_log; then
  BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration bench/usage_log.sh
fi
if want flood; then
  BENCH_BIN=$bin DURATION=$duration bench/flood.sh
fi
if want metrics; then
  BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration PORT=$port bench/metrics.sh
fi
