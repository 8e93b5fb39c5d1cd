#!/usr/bin/env bash
# What metrics cost on the hot paths, in one run: introspection and GET
# /v1/me with an API key, (a) with DZDESK_METRICS_LISTEN unset (nothing is
# counted), (b) set, with /metrics scraped once a second during the load;
# ROUNDS times each, alternating. Prints bench/run.sh's lines and the ratios
# of (b) against (a) per scenario.
#
#   bench/metrics.sh           # BENCH_BIN=..., ROUNDS=2, PORT=18181 (metrics on PORT+1)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin dzdesk-auth
  export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi
rounds=${ROUNDS:-2}
port=${PORT:-18181}
export PORT=$port
out=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  env -u DZDESK_METRICS_LISTEN SCENARIOS="introspect me_api_key" bench/run.sh \
    | sed 's/^/metrics=off /' | tee -a "$out"
  DZDESK_METRICS_LISTEN=127.0.0.1:$((port + 1)) SCENARIOS="introspect me_api_key" bench/run.sh \
    | sed 's/^/metrics=on /' | tee -a "$out"
done
python3 - "$out" <<'PY'
import re, sys, collections
rps, p99 = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"metrics=(\S+) scenario=(\S+) rps=(\d+) p50_ms=\S+ p99_ms=(\S+)", line)
    if m:
        rps[m[2], m[1]].append(float(m[3])); p99[m[2], m[1]].append(float(m[4]))
for scenario in ("introspect", "me_api_key"):
    off, on = rps[scenario, "off"], rps[scenario, "on"]
    if off and on:
        a, b = sum(off) / len(off), sum(on) / len(on)
        print("ratio metrics scenario=%s rps_off=%.0f rps_on=%.0f on_vs_off=%.3f p99_ms_off=%s p99_ms_on=%s"
              % (scenario, a, b, b / a, p99[scenario, "off"], p99[scenario, "on"]))
PY
rm -f "$out"
