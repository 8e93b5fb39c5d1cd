#!/usr/bin/env bash
# What the /v1 rate limits cost, in one run: GET /v1/me with an API key of an
# enterprise account whose limit never triggers, (a) with limits off, (b)
# counted in process, (c) counted in Redis; ROUNDS times each, alternating.
# Prints bench/run.sh's lines and the ratios against (a).
#
#   bench/limits.sh            # BENCH_BIN=..., BENCH_REDIS=redis://127.0.0.1:6379, ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin dzdesk-auth
  export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi
redis=${BENCH_REDIS:-redis://127.0.0.1:6379}
rounds=${ROUNDS:-2}
out=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  DZDESK_RATE_LIMITS=off SCENARIOS=me_api_key bench/run.sh | sed 's/^/limits=off /' | tee -a "$out"
  SCENARIOS=me_api_key bench/run.sh | sed 's/^/limits=process /' | tee -a "$out"
  DZDESK_REDIS_URL=$redis DZDESK_REDIS_PREFIX="bench$(date +%s%N):" SCENARIOS=me_api_key bench/run.sh \
    | sed 's/^/limits=redis /' | tee -a "$out"
done
python3 - "$out" <<'PY'
import re, sys, collections
rps, p99 = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"limits=(\S+) scenario=\S+ rps=(\d+) p50_ms=\S+ p99_ms=(\S+)", line)
    if m:
        rps[m[1]].append(float(m[2])); p99[m[1]].append(float(m[3]))
base = sum(rps["off"]) / len(rps["off"])
for k in ("off", "process", "redis"):
    if rps[k]:
        mean = sum(rps[k]) / len(rps[k])
        print("ratio limits=%s rps=%.0f vs_off=%.3f p99_ms=%s" % (k, mean, mean / base, p99[k]))
PY
rm -f "$out"
