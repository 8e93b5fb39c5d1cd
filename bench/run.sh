#!/usr/bin/env bash
# Load benchmark: a release build of dzdesk-auth on PostgreSQL (a fresh
# database), driven by oha with 32 connections for 10 s per scenario.
# Prints one line per scenario: scenario, req/s, p50, p99, non-2xx; then
# the server's peak RSS in it, and the ratios and checks below.
#
#   bench/run.sh                      # needs oha (cargo install oha --locked), pgbench and PostgreSQL
#   BENCH_PG=postgres://... CONNS=64 DURATION=20s SCENARIOS="refresh" bench/run.sh
#   BENCH_BIN=/path/to/dzdesk-auth SCENARIOS="introspect me_api_key" bench/run.sh
#                                     # another build (bench/ab.sh compares two)
#   DURATION=3s RUNS=2 TIMELINE_SECS=5 SCENARIOS="pgbench healthz introspect refresh timeline logins" bench/run.sh
#                                     # a quick check that every line prints
#
# The service's own settings pass through: DZDESK_RATE_LIMITS=off, or
# DZDESK_REDIS_URL=redis://127.0.0.1:6379 for the shared limiter.
#
# Variables: CONNS (32), DURATION (10s; whole seconds), SCENARIOS (below),
# RUNS (consecutive runs of introspect and me_api_key: 5 with the default
# SCENARIOS, else 1), PGBENCH_SECS (DURATION's seconds), PGBENCH_SCALE (10),
# TIMELINE_SECS (60), TIMELINE_TARGETS ("introspect me_api_key"), ROUNDS
# (of limits, usage_log and metrics), PORT (18181).
#
# Scenarios: pgbench (runs first, after the build and before the server
# starts, so that nothing else loads the machine: `pgbench -i -q -s 10` on a
# throwaway database of its own, then `pgbench -N -c CONNS -j 2 -T 10`, the
# cost of one small commit per transaction; prints scenario=pgbench_N tps=...;
# the database is dropped at once, and by the exit trap); healthz (the HTTP
# stack's baseline), introspect (RFC 7662 of one access token by an internal
# service), me_api_key (GET /v1/me with an API key: bearer extraction, key
# lookup, allowlist check; introspect and me_api_key run RUNS times in a row,
# each line with run=i, then <name>_p99_ms_runs=a,b,... max=... p99_le_5ms=yes|no),
# client_credentials (the
# token endpoint: client lookup, secret check, ES256 signature), timeline
# (oha on each of TIMELINE_TARGETS for TIMELINE_SECS with --db-url, every
# request recorded, and meanwhile a light /healthz probe, oha -c 1 -q 50;
# bench/timeline.py prints one line per second, t=... <target>_p50_ms/p99_ms/
# max_ms and healthz_p99_ms/max_ms, then the worst seconds: a /healthz slow in
# the same seconds says the process or the machine stalled, not the
# endpoint), refresh (the
# refresh_token grant with rotation: every request presents a token never used
# before, so it is driven by examples/refresh_load.rs, which first runs the
# real sign-in + consent + code exchange once per connection; with pgbench,
# refresh_vs_pgbench is its rps over pgbench's tps); flow and
# flow_openid (whole authorization-code round trips: GET /oauth/authorize,
# answered at once as the consent is remembered, then the code exchange with
# PKCE, for scope requests:read and for "openid requests:read", which adds a
# nonce and an ID token; the same driver with FLOW_SCOPE set, each connection
# a browser that signs in once; rps counts round trips, and when both run,
# flow_openid_vs_flow is the ratio of their rps; with refresh, flow_vs_refresh
# is flow's round trips/s over refresh/s); logins (the
# time of one argon2 verification with the service's own parameters and code,
# examples/hash_time.rs, hash_ms=...; then the same driver with LOGINS=1:
# every connection signs in again and again as a fresh browser, GET /login
# then POST /login answered by 303, each connection from an address of its
# own on loopback so that the sign-in throttle's per-address reservations do
# not lock; logins_vs_argon2_limit is logins/s over workers / hash time, the
# workers being one per core); limits
# (bench/limits.sh: /v1/me with an enterprise key whose limit never triggers,
# with limits off, counted in process and counted in Redis, ROUNDS times,
# with the ratios against "off"); usage_log (bench/usage_log.sh: the same
# /v1/me with DZDESK_USAGE_LOG=off and on, ROUNDS times, and the ratio on/off);
# flood (bench/flood.sh: RSS under a
# 150-connection sign-in flood, and client_credentials while 64 connections
# hammer POST /login against its rate without them); metrics (bench/metrics.sh:
# introspect and me_api_key with DZDESK_METRICS_LISTEN unset and set, /metrics
# scraped once a second meanwhile, with the ratios). The last four start
# servers of their own, after this one has stopped.
#
# The server's scenarios run in this order whatever SCENARIOS says: pgbench,
# introspect, healthz, me_api_key, client_credentials, timeline, refresh,
# flow and flow_openid (in SCENARIOS' order), logins; so every scenario
# before refresh runs before any sign-in has made the argon2 workers take
# their memory (19 MiB each, kept for the next one).
#
# Peak RSS: before each scenario on this server its peak is reset
# (`echo 5 > /proc/PID/clear_refs`), and after it VmHWM is read: printed as
# scenario=<name> peak_rss_mb=... start_rss_mb=... (MiB), and at the end
# peak_rss_mb: <name>=... max_non_signin=... le_40mb=yes|no max_signin=...
# le_80mb=yes|no, where the sign-in scenarios are those that sign a browser
# in (refresh, flow and flow_openid once per connection before they measure,
# logins all the time): the argon2 workers' memory is in use there.
#
# A scenario whose tool is missing (oha, python3's sqlite3) is skipped with a
# line saying why; pgbench, when asked for, is required.
#
# With DZDESK_METRICS_LISTEN set, /metrics is scraped once a second while
# the scenarios run (the scrape count is printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
conns=${CONNS:-32}
duration=${DURATION:-10s}
secs=${duration%s}
if [ -n "${SCENARIOS:-}" ]; then
  scenarios=$SCENARIOS
  runs=${RUNS:-1}
else
  scenarios="pgbench healthz introspect me_api_key client_credentials timeline refresh flow flow_openid logins limits usage_log flood metrics"
  runs=${RUNS:-5}
fi
timeline_secs=${TIMELINE_SECS:-60}
timeline_targets=${TIMELINE_TARGETS:-introspect me_api_key}
port=${PORT:-18181}
want() { [[ " $scenarios " == *" $1 "* ]]; }
skip() { echo "scenario=$1 skipped=\"$2\""; }

if want pgbench && ! command -v pgbench >/dev/null; then
  echo "pgbench not found (apt-get install postgresql-client); it is needed for refresh_vs_pgbench," \
    "or leave pgbench out of SCENARIOS" >&2
  exit 1
fi
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
oha_scenarios="healthz introspect me_api_key client_credentials timeline limits usage_log flood metrics"
needs_oha=
for s in $oha_scenarios; do want "$s" && needs_oha=yes; done
if [ ! -x "$oha" ] && [ -z "$needs_oha" ]; then
  oha=
elif [ ! -x "$oha" ]; then
  echo "oha not found: installing it (cargo install oha --locked, ~10 min on 2 cores)" >&2
  cargo install oha --locked --quiet || echo "installing oha failed: the scenarios that need it are skipped" >&2
  oha="$HOME/.cargo/bin/oha"
  [ -x "$oha" ] || oha=
fi
# What a scenario needs: says why it is skipped when something is missing.
need_oha() { [ -n "$oha" ] || { skip "$1" "needs oha (cargo install oha --locked)"; return 1; }; }

examples=()
[[ " $scenarios " =~ " "(refresh|flow|flow_openid|logins)" " ]] && examples+=(--example refresh_load)
want logins && examples+=(--example hash_time)
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
  [ ${#examples[@]} -gt 0 ] && cargo build --release --quiet "${examples[@]}"
else
  cargo build --release --quiet --bin dzdesk-auth "${examples[@]}"
  bin=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi
driver=${CARGO_TARGET_DIR:-target}/release/examples/refresh_load
hash_time=${CARGO_TARGET_DIR:-target}/release/examples/hash_time

dburl() { python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path='/'+sys.argv[2])))" "$pg" "$1"; }
tmp=$(mktemp -d)
db= pgb_db=
cleanup() {
  for p in ${timeline_pids:-} ${scraper:-} ${server:-}; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  [ -n "$pgb_db" ] && { psql "$pg" -qc "DROP DATABASE IF EXISTS $pgb_db WITH (FORCE)" || true; }
  [ -n "$db" ] && { psql "$pg" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT

# First, on a machine nothing else loads: what one small commit costs.
pgbench_tps=
if want pgbench; then
  pgb_db="dzdesk_pgbench_$(date +%s)"
  psql "$pg" -qc "CREATE DATABASE $pgb_db"
  pgb_url=$(dburl "$pgb_db")
  if ! pgbench -i -q -s "${PGBENCH_SCALE:-10}" "$pgb_url" >"$tmp/pgbench_init" 2>&1; then
    cat "$tmp/pgbench_init" >&2
    exit 1
  fi
  pgbench -N -c "$conns" -j 2 -T "${PGBENCH_SECS:-$secs}" "$pgb_url" >"$tmp/pgbench" 2>&1 \
    || { cat "$tmp/pgbench" >&2; exit 1; }
  psql "$pg" -qc "DROP DATABASE IF EXISTS $pgb_db WITH (FORCE)"
  pgb_db=
  # "tps = 816.801213 (without initial connection time)" (PostgreSQL 14+).
  pgbench_line=$(python3 - "$tmp/pgbench" "$conns" "${PGBENCH_SECS:-$secs}" "${PGBENCH_SCALE:-10}" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", out, re.M)
if not tps:
    sys.exit("no 'tps = N (without initial connection time)' in pgbench's output:\n" + out)
lat = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
failed = re.search(r"^number of failed transactions: (\d+)", out, re.M)
print("scenario=pgbench_N tps=%.1f latency_avg_ms=%s clients=%s threads=2 seconds=%s scale=%s failed=%s"
      % (float(tps[1]), lat[1] if lat else "?", sys.argv[2], sys.argv[3], sys.argv[4],
         failed[1] if failed else "?"))
PY
)
  echo "$pgbench_line"
  pgbench_tps=$(sed -n 's/.* tps=\([0-9.]*\).*/\1/p' <<<"$pgbench_line")
fi

db="dzdesk_bench_$(date +%s)"
psql "$pg" -qc "CREATE DATABASE $db"
url=$(dburl "$db")

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

# The server's peak RSS over one scenario: reset before (VmHWM := VmRSS),
# read after. Kept for the summary at the end.
peaks=() rss_reset=yes
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$server/status"; }
rss_begin() {
  if ! echo 5 2>/dev/null >"/proc/$server/clear_refs"; then
    rss_reset=no # the peak since the server started
  fi
  rss_start=$(kib VmRSS)
}
# Sets rss_line (not in a subshell: the peak is kept for the summary).
rss_end() {
  local peak
  peak=$(kib VmHWM)
  peaks+=("$1=$(awk -v k="$peak" 'BEGIN {printf "%.1f", k / 1024}')")
  rss_line=$(awk -v n="$1" -v p="$peak" -v s="$rss_start" -v r="$rss_reset" \
    'BEGIN {printf "scenario=%s peak_rss_mb=%.1f start_rss_mb=%.1f%s", n, p / 1024, s / 1024, r == "yes" ? "" : " peak_reset=no"}')
}
rss_done() { rss_end "$1" && echo "$rss_line"; }

report() {
  python3 -c '
import json, sys
name, extra, data = sys.argv[1], sys.argv[2], json.load(sys.stdin)
s, lat = data["summary"], data["latencyPercentiles"]
codes = data.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
rps, p50, p99 = s["requestsPerSec"], (lat["p50"] or 0) * 1000, (lat["p99"] or 0) * 1000
print("scenario=%s rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d codes=%s%s" % (name, rps, p50, p99, bad, codes, extra))
' "$1" "${2:-}"
}
# RUNS consecutive oha runs of one scenario (same settings each time), then
# their p99s against the 5 ms aim when there are several.
oha_runs() { # name, oha arguments...
  local name=$1 p99s=() line i extra
  shift
  for i in $(seq 1 "$runs"); do
    extra=
    [ "$runs" -gt 1 ] && extra=" run=$i"
    line=$("$oha" -c "$conns" -z "$duration" --no-tui --output-format json "$@" | report "$name" "$extra")
    echo "$line"
    p99s+=("$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$line")")
  done
  if [ "$runs" -gt 1 ]; then
    python3 - "$name" "${p99s[@]}" <<'PY'
import sys
name, p99s = sys.argv[1], [float(x) for x in sys.argv[2:]]
print("%s_p99_ms_runs=%s max=%.2f p99_le_5ms=%s"
      % (name, ",".join("%.2f" % x for x in p99s), max(p99s), "yes" if max(p99s) <= 5.0 else "no"))
PY
  fi
}
access_token() {
  curl -sf -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
introspect_args() {
  args=(-m POST -H "authorization: Basic $ibasic" -H "content-type: application/x-www-form-urlencoded"
    -d "token=$(access_token)" "http://127.0.0.1:$port/oauth/introspect")
}
me_args() { args=(-H "authorization: Bearer $apikey" "http://127.0.0.1:$port/v1/me"); }

if want introspect && need_oha introspect; then
  introspect_args
  rss_begin
  oha_runs introspect "${args[@]}"
  rss_done introspect
fi
if want healthz && need_oha healthz; then
  rss_begin
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json "http://127.0.0.1:$port/healthz" | report healthz
  rss_done healthz
fi
if want me_api_key && need_oha me_api_key; then
  me_args
  rss_begin
  oha_runs me_api_key "${args[@]}"
  rss_end me_api_key
  if [ "${DZDESK_USAGE_LOG:-on}" != off ]; then
    # How many of those requests the usage log counted (past its bounded
    # queue, new entries are dropped and counted, never waited for), and in
    # how many rows (identical requests in one second share one); right
    # after the (last) run's line, which bench/usage_log.sh reads.
    sleep 2
    echo "usage_log_rows=$(psql "$url" -Atc 'SELECT count(*) FROM api_key_usage')" \
      "usage_log_requests=$(psql "$url" -Atc 'SELECT coalesce(sum(requests), 0) FROM api_key_usage')"
  fi
  echo "$rss_line"
fi
if want client_credentials && need_oha client_credentials; then
  rss_begin
  "$oha" -c "$conns" -z "$duration" --no-tui --output-format json -m POST \
    -H "authorization: Basic $basic" -H "content-type: application/x-www-form-urlencoded" \
    -d "grant_type=client_credentials" "http://127.0.0.1:$port/oauth/token" | report client_credentials
  rss_done client_credentials
fi
if want timeline && need_oha timeline; then
  if ! python3 -c 'import sqlite3' 2>/dev/null; then
    skip timeline "needs python3 with sqlite3"
  elif ! "$oha" --help | grep -q -- --db-url; then
    skip timeline "needs an oha with --db-url"
  else
    rss_begin
    for target in $timeline_targets; do
      case $target in
        introspect) introspect_args ;;
        me_api_key) me_args ;;
        *) skip "timeline_$target" "TIMELINE_TARGETS: introspect or me_api_key"; continue ;;
      esac
      load_db=$tmp/timeline_$target.sqlite probe_db=$tmp/timeline_${target}_healthz.sqlite
      rm -f "$load_db" "$probe_db"
      t0=$(date +%s.%N)
      "$oha" -c "$conns" -z "${timeline_secs}s" --no-tui --output-format json --db-url "$load_db" \
        "${args[@]}" >"$tmp/timeline_load.json" 2>"$tmp/timeline_load.err" &
      load_pid=$!
      t1=$(date +%s.%N)
      "$oha" -c 1 -q 50 -z "${timeline_secs}s" --no-tui --output-format json --db-url "$probe_db" \
        "http://127.0.0.1:$port/healthz" >"$tmp/timeline_probe.json" 2>"$tmp/timeline_probe.err" &
      probe_pid=$!
      timeline_pids="$load_pid $probe_pid"
      # oha says "Storing results to ..." on stderr: shown only on failure.
      wait "$load_pid" || { cat "$tmp/timeline_load.err" >&2; exit 1; }
      wait "$probe_pid" || { cat "$tmp/timeline_probe.err" >&2; exit 1; }
      timeline_pids=
      report "timeline_$target" <"$tmp/timeline_load.json"
      report "timeline_${target}_healthz" <"$tmp/timeline_probe.json"
      python3 bench/timeline.py "$target" "$load_db" "$probe_db" \
        "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1")" "$timeline_secs"
    done
    rss_done timeline
  fi
fi
# The rate of a scenario's line ("rps=123").
rps_of() { sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$1"; }
refresh_line=
if want refresh; then
  rss_begin
  refresh_line=$("$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" bench@example.com env:BENCH_PASSWORD "$conns" "$secs")
  echo "$refresh_line"
  rss_done refresh
  if [ -n "$pgbench_tps" ]; then
    # Refresh at the cost of one commit: the aim is 1.0 or more.
    python3 - "$(rps_of "$refresh_line")" "$pgbench_tps" <<'PY'
import sys
refresh, tps = map(float, sys.argv[1:])
ratio = refresh / tps if tps else 0.0
print("refresh_vs_pgbench=%.3f refresh_rps=%.0f pgbench_tps=%.0f ge_1=%s"
      % (ratio, refresh, tps, "yes" if ratio >= 1.0 else "no"))
PY
  fi
fi
flow_line= flow_openid_line=
# In the order SCENARIOS names them: each run leaves codes and grants
# behind, so "flow_openid flow" measures the other order.
for s in $scenarios; do
  case $s in
    flow)
      rss_begin
      flow_line=$(FLOW_SCOPE="requests:read" "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" \
        bench@example.com env:BENCH_PASSWORD "$conns" "$secs")
      echo "$flow_line"
      rss_done flow ;;
    flow_openid)
      rss_begin
      flow_openid_line=$(FLOW_SCOPE="openid requests:read" "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" \
        bench@example.com env:BENCH_PASSWORD "$conns" "$secs")
      echo "$flow_openid_line"
      rss_done flow_openid ;;
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
if [ -n "$flow_line" ] && [ -n "$refresh_line" ]; then
  # A whole round trip (authorize + code exchange) against one refresh.
  python3 - "$(rps_of "$flow_line")" "$(rps_of "$refresh_line")" <<'PY'
import sys
flow, refresh = map(float, sys.argv[1:])
print("flow_vs_refresh=%.3f flow_rps=%.0f refresh_rps=%.0f" % (flow / refresh if refresh else 0.0, flow, refresh))
PY
fi
if want logins; then
  # One hash first, while the server idles: argon2 alone on one core.
  hash_line=$("$hash_time")
  echo "$hash_line"
  rss_begin
  logins_line=$(LOGINS=1 "$driver" "http://127.0.0.1:$port" "$rid" "$rsecret" \
    bench@example.com env:BENCH_PASSWORD "$conns" "$secs")
  echo "$logins_line"
  rss_done logins
  # Sign-in at the argon2 limit of the cores: workers / (time of one hash).
  python3 - "$logins_line" "$hash_line" "$rss_line" <<'PY'
import re, sys
logins, hashes, rss = sys.argv[1:]
field = lambda line, k: float(re.search(r"\b%s=([\d.]+)" % k, line)[1])
rps, hash_ms, workers = field(logins, "rps"), field(hashes, "hash_ms"), field(hashes, "workers")
limit, peak = workers * 1000.0 / hash_ms, field(rss, "peak_rss_mb")
print("logins_vs_argon2_limit=%.3f logins_rps=%.1f argon2_limit_per_s=%.1f hash_ms=%.2f workers=%d "
      "peak_rss_mb=%.1f le_80mb=%s" % (rps / limit, rps, limit, hash_ms, workers, peak,
                                       "yes" if peak <= 80 else "no"))
PY
fi
if [ ${#peaks[@]} -gt 0 ]; then
  python3 - "${peaks[@]}" <<'PY'
import sys
peaks = [(k, float(v)) for k, v in (a.split("=") for a in sys.argv[1:])]
# The scenarios that sign browsers in: the argon2 workers' memory in use.
signin = {"refresh", "flow", "flow_openid", "logins"}
other = [v for k, v in peaks if k not in signin]
signs = [v for k, v in peaks if k in signin]
line = "peak_rss_mb: " + " ".join("%s=%.1f" % p for p in peaks)
if other:
    line += " max_non_signin=%.1f le_40mb=%s" % (max(other), "yes" if max(other) <= 40 else "no")
if signs:
    line += " max_signin=%.1f le_80mb=%s" % (max(signs), "yes" if max(signs) <= 80 else "no")
print(line)
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
# Their own servers, each with its own runs (RUNS=1 inside).
if want limits && need_oha limits; then
  RUNS=1 BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration bench/limits.sh
fi
if want usage_log && need_oha usage_log; then
  RUNS=1 BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration bench/usage_log.sh
fi
if want flood && need_oha flood; then
  BENCH_BIN=$bin DURATION=$duration bench/flood.sh
fi
if want metrics && need_oha metrics; then
  RUNS=1 BENCH_BIN=$bin ROUNDS=${ROUNDS:-1} CONNS=$conns DURATION=$duration PORT=$port bench/metrics.sh
fi
