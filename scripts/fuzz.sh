#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS seconds each (default 30),
# one after the other, and prints per target the executions and crashes:
#
#     scripts/fuzz.sh [SECONDS]          # FUZZ_TARGETS="jwt form" to pick some
#
# Exits non-zero if any target crashed (a panic, a failed property, a timeout
# or running out of memory); the input is kept in fuzz/artifacts/<target>/.
# Each run starts from the committed seeds (fuzz/seeds/<target>/), copied into
# fuzz/corpus/<target>/, where libFuzzer keeps what it finds between runs.
# Corpora and artifacts are scratch: .gitignore'd, never committed. A crash
# worth keeping goes into the seeds, with its fix and a unit test in src/.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds="${1:-30}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; }
all_targets=(redirect_uri scope basic_auth form jwt allowlist forwarded_for registration)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

cargo +nightly --version >/dev/null 2>&1 || { echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz: cargo-fuzz is needed (cargo install cargo-fuzz --locked)" >&2; exit 1; }

# Release with debug assertions and overflow checks; the same flags for the
# build and every run, so that the runs rebuild nothing.
flags=(-O --debug-assertions --sanitizer none)
echo "==> cargo +nightly fuzz build (${#targets[@]} targets)"
build_start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: built in $(( $(date +%s) - build_start )) s"

failed=()
total_execs=0
for t in "${targets[@]}"; do
  [ -d "fuzz/seeds/$t" ] || { echo "fuzz: no seeds for target '$t' (fuzz/seeds/$t)" >&2; exit 2; }
  corpus="$root/fuzz/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -f "fuzz/seeds/$t"/* "$corpus"/
  before=$(find "$artifacts" -type f | wc -l)
  log=$(mktemp)
  # A dictionary of the input's own words (JSON names, URI pieces, escapes)
  # lets mutations reach the structure sooner.
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=(-dict="$root/fuzz/dicts/$t.dict")
  echo "==> $t for $seconds s"
  rc=0
  # -timeout: an input slower than 10 s is a finding too. -max_len keeps
  # inputs to what the endpoints accept in practice (a 100-entry allowlist).
  cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=4096 "${dict[@]}" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -n 1)
  crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # died without writing an input (e.g. at start-up)
  fi
  echo "target=$t seconds=$seconds executions=${execs:-0} crashes=$crashes corpus=$(find "$corpus" -type f | wc -l)"
  total_execs=$(( total_execs + ${execs:-0} ))
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed+=("$t")
    # The failed property and the input that broke it.
    grep -E -A 3 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
  fi
  rm -f "$log"
done

echo "fuzz: ${#targets[@]} targets, $seconds s each, $total_execs executions, ${#failed[@]} crashed${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
