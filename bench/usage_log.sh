#!/usr/bin/env bash
# What the API usage log costs, in one run: GET /v1/me with an API key of an
# enterprise account whose limit never triggers, (a) with DZDESK_USAGE_LOG=off,
# (b) with it on (every request queued, written in batches every second);
# ROUNDS times each, alternating. Prints bench/run.sh's lines and the ratio
# of (b) to (a) (issue 13 aims at 0.85 or more).
#
#   bench/usage_log.sh         # BENCH_BIN=..., ROUNDS=2, CONNS, DURATION
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --quiet --bin dzdesk-auth
  export BENCH_BIN=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi
rounds=${ROUNDS:-2}
out=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  DZDESK_USAGE_LOG=off SCENARIOS=me_api_key bench/run.sh | sed 's/^/usage_log=off /' | tee -a "$out"
  DZDESK_USAGE_LOG=on SCENARIOS=me_api_key bench/run.sh | sed 's/^/usage_log=on /' | tee -a "$out"
  # The requests of the "on" run and the rows it kept.
done
python3 - "$out" <<'PY'
import re, sys, collections
rps, p99 = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"usage_log=(\S+) scenario=\S+ rps=(\d+) p50_ms=\S+ p99_ms=(\S+)", line)
    if m:
        rps[m[1]].append(float(m[2])); p99[m[1]].append(float(m[3]))
kept = []
lines = open(sys.argv[1]).read().splitlines()
for i, line in enumerate(lines):
    m = re.search(r"usage_log=on usage_log_rows=(\d+) usage_log_requests=(\d+)", line)
    if m and i > 0:
        codes = re.search(r"codes=(\{.*\})", lines[i - 1])
        if codes:
            total = sum(eval(codes[1]).values())
            kept.append("%d/%d=%.2f (in %d rows)" % (int(m[2]), total, int(m[2]) / total, int(m[1])))
if kept:
    print("usage_log counted requests/requests sent:", " ".join(kept))
if rps["off"] and rps["on"]:
    off = sum(rps["off"]) / len(rps["off"])
    on = sum(rps["on"]) / len(rps["on"])
    print("ratio usage_log=on rps=%.0f off_rps=%.0f on_vs_off=%.3f p99_ms_on=%s p99_ms_off=%s"
          % (on, off, on / off, p99["on"], p99["off"]))
PY
rm -f "$out"
