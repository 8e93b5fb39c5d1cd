#!/usr/bin/env bash
# The whole test suite, on SQLite and then on PostgreSQL.
#
# First `scripts/setup.sh test` installs what the tests need when it can (as
# root or with password-less sudo; otherwise it prints the apt-get line to run
# and the tests skip loudly) and starts PostgreSQL and Redis if they are down.
# DZDESK_NO_SETUP=1 leaves that out. Under CI=true (.ci/run) cargo fmt --check,
# clippy -D warnings and scripts/fuzz.sh 20 run too, and any missing piece
# fails the run instead of being skipped.
#
# PostgreSQL comes from, in order: $TEST_DATABASE_URL; a server answering on
# 127.0.0.1:5432 (user postgres); the local cluster, started with pg_ctlcluster
# if PostgreSQL is installed. Without any of them only SQLite runs, and this
# script says so loudly (under CI=true it fails instead). Each test creates and
# drops a database of its own, so the URL needs CREATEDB rights.
set -euo pipefail
cd "$(dirname "$0")/.."

ci=${CI:-false}
pg_candidates=(
  "postgres://postgres@127.0.0.1:5432/postgres"
  "postgres://postgres:postgres@127.0.0.1:5432/postgres"
)

pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql -w "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

find_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    echo "$TEST_DATABASE_URL"
    return
  fi
  for url in "${pg_candidates[@]}"; do
    if pg_answers "$url"; then echo "$url"; return; fi
  done
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is not answering; starting the local cluster" >&2
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    done
    for _ in $(seq 1 30); do
      for url in "${pg_candidates[@]}"; do
        if pg_answers "$url"; then echo "$url"; return; fi
      done
      sleep 1
    done
  fi
}

if [ "${DZDESK_NO_SETUP:-}" != 1 ]; then
  scripts/setup.sh test
fi

if [ "$ci" = "true" ]; then
  echo "==> cargo fmt --check"
  cargo fmt --all -- --check
  echo "==> cargo clippy"
  cargo clippy --all-targets -- -D warnings

  # The parsers of untrusted input, 20 s per cargo-fuzz target (fuzz/, outside
  # the main build; 20 rather than 30 to keep CI near 30 minutes). A crash
  # fails CI; its input is in fuzz/artifacts/.
  echo "==> scripts/fuzz.sh 20"
  cargo +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  cargo fmt --manifest-path fuzz/Cargo.toml -- --check
  scripts/fuzz.sh 20
fi

# Redis (the rate-limit tests): $TEST_REDIS_URL, else 127.0.0.1:6379, started
# here if redis-server is installed. Without it those tests say so and skip
# (under CI=true they fail).
if [ -z "${TEST_REDIS_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not answering on 127.0.0.1:6379; starting redis-server" >&2
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >&2
    for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.5; done
  else
    echo "!! No Redis found: the Redis rate-limit tests will skip (apt-get install redis-server)" >&2
  fi
fi

echo "==> module layers"
python3 scripts/layers.py

# Runs a test command; on failure, repeats each panic's message last, where
# a CI log cut to its tail still shows it (a backtrace pushed them out once).
tests_log=$(mktemp)
run_tests() {
  local status=0
  RUST_BACKTRACE=0 "$@" 2>&1 | tee "$tests_log" || status=$?
  if [ "$status" != 0 ]; then
    echo "==> the panics above, again:"
    grep -A4 "panicked at" "$tests_log" | cut -c1-400 | head -80
    exit "$status"
  fi
}

echo "==> tests on SQLite"
start=$(date +%s)
run_tests env -u TEST_DATABASE_URL cargo test --all-targets
echo "==> SQLite: $(( $(date +%s) - start )) s"

# The README's walkthrough, verbatim, against a fresh server (SQLite here,
# PostgreSQL below).
echo "==> README walkthrough on SQLite"
scripts/walkthrough.sh

# schemathesis against the running binary (scripts/schemathesis.sh). Needs
# python3 with venv and pip to install it; without them it skips loudly, and
# under CI=true it fails.
echo "==> schemathesis"
st_status=0
if python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || [ -x target/schemathesis-venv/bin/schemathesis ]; then
  # 180 s under CI (the script's default is 240): CI's whole run is kept
  # near 30 minutes.
  MAX_TIME=${MAX_TIME:-$([ "$ci" = "true" ] && echo 180 || echo 240)} scripts/schemathesis.sh || st_status=$?
else
  st_status=3
fi
if [ "$st_status" = 3 ]; then
  echo
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!  schemathesis could not be installed (python3-venv, pip, PyPI):   !!"
  echo "!!  the OpenAPI sweep was SKIPPED.                                    !!"
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  [ "$ci" = "true" ] && { echo "CI=true: schemathesis is mandatory" >&2; exit 1; }
elif [ "$st_status" != 0 ]; then
  exit "$st_status"
fi

pg_url=$(find_postgres)
if [ -z "$pg_url" ]; then
  echo
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!  No PostgreSQL found: ONLY SQLITE RAN. Set TEST_DATABASE_URL or   !!"
  echo "!!  install PostgreSQL (apt-get install postgresql) to test both.     !!"
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  [ "$ci" = "true" ] && { echo "CI=true: PostgreSQL is mandatory" >&2; exit 1; }
  exit 0
fi

echo "==> tests on PostgreSQL"
start=$(date +%s)
run_tests env TEST_DATABASE_URL="$pg_url" cargo test --test api
echo "==> PostgreSQL: $(( $(date +%s) - start )) s"

echo "==> README walkthrough on PostgreSQL"
WALKTHROUGH_DATABASE_URL="$pg_url" scripts/walkthrough.sh
