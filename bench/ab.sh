#!/usr/bin/env bash
# Before/after in one run: bench/run.sh against two builds, alternating
# (A B A B), so both see the same machine state. Prints run.sh's lines
# prefixed with the build's label, then the mean req/s ratio per scenario.
#
#   bench/ab.sh /tmp/dzdesk-auth-base            # B = this checkout's release build
#   SCENARIOS="introspect me_api_key" ROUNDS=2 bench/ab.sh OLD_BIN [NEW_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/ab.sh OLD_BIN [NEW_BIN]}
if [ -n "${2:-}" ]; then
  new=$2
else
  cargo build --release --quiet --bin dzdesk-auth
  new=${CARGO_TARGET_DIR:-target}/release/dzdesk-auth
fi
export SCENARIOS=${SCENARIOS:-introspect me_api_key}
rounds=${ROUNDS:-2}
out=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  for label in before after; do
    bin=$old; [ "$label" = after ] && bin=$new
    BENCH_BIN=$bin bench/run.sh | sed "s/^/build=$label /" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import re, sys, collections
rps = collections.defaultdict(list)
p99 = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"build=(\S+) scenario=(\S+) rps=(\d+) p50_ms=\S+ p99_ms=(\S+)", line)
    if m:
        rps[(m[1], m[2])].append(float(m[3]))
        p99[(m[1], m[2])].append(float(m[4]))
for s in sorted({k[1] for k in rps}):
    b, a = rps[("before", s)], rps[("after", s)]
    if b and a:
        mb, ma = sum(b) / len(b), sum(a) / len(a)
        print("ratio scenario=%s before_rps=%.0f after_rps=%.0f after/before=%.3f before_p99_ms=%s after_p99_ms=%s"
              % (s, mb, ma, ma / mb, p99[("before", s)], p99[("after", s)]))
PY
rm -f "$out"
