#!/usr/bin/env bash
# Installs and starts what the README's two commands need, when it can:
#
#     scripts/setup.sh build   # what `cargo build` needs (scripts/run.sh)
#     scripts/setup.sh test    # that, plus what scripts/test.sh needs, and
#                              # starts PostgreSQL and Redis (scripts/test.sh)
#
# build: gcc and libc6-dev (the C compiler and linker, for the bundled SQLite
#        and libpq), libssl-dev, pkg-config.
# test:  build, plus g++ (libFuzzer, scripts/fuzz.sh), chromium and
#        chromium-driver (the browser test), postgresql and postgresql-client,
#        redis-server and redis-tools, python3, python3-venv and python3-pip
#        (scripts/layers.py, schemathesis), curl (scripts/schemathesis.sh),
#        jq and openssl (scripts/walkthrough.sh: the README's walkthrough).
#        Then PostgreSQL on 127.0.0.1:5432 (pg_ctlcluster; the postgres role
#        gets the password 'postgres' if TCP logins need one, under CI=true only) unless
#        TEST_DATABASE_URL is set, and Redis on 127.0.0.1:6379 unless
#        TEST_REDIS_URL is set, each started only if it is down.
#
# Missing Debian packages are installed with apt-get as root, or under
# password-less sudo. Otherwise it prints the one `apt-get install` line to
# run, says what will be skipped, and goes on (exit 0); under CI=true it fails
# (exit 1) instead. Nothing is installed or started twice.
set -euo pipefail

level=${1:-}
case "$level" in
  build | test) ;;
  *) echo "usage: scripts/setup.sh build|test" >&2; exit 2 ;;
esac
ci=${CI:-false}

warn() { echo "!! setup: $*" >&2; }
ci_fails() { [ "$ci" = "true" ] && { echo "CI=true: $*" >&2; exit 1; }; return 0; }

# How this script can run a command as root: it is root, or sudo works
# without a password, or not at all.
if [ "$(id -u)" = 0 ]; then
  how=root
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  how=sudo
else
  how=none
fi
as_root() { if [ "$how" = root ]; then "$@"; else sudo -n "$@"; fi; }
# The prefix of a command shown to the user to paste.
if [ "$how" = root ]; then su_do=""; else su_do="sudo "; fi

echo "==> setup: $level prerequisites"
command -v cargo >/dev/null 2>&1 || {
  warn "cargo is not on PATH: install Rust (https://rustup.rs); both commands need it"
  ci_fails "a Rust toolchain (cargo) is mandatory"
}

# --- Debian packages ------------------------------------------------------
missing=()
effects=()
deb() { dpkg -s "$1" >/dev/null 2>&1; }
# need PACKAGE WHAT-GOES-WRONG-WITHOUT-IT: the package's check failed.
need() {
  missing+=("$1")
  if [ -n "$2" ]; then
    local e
    for e in "${effects[@]+"${effects[@]}"}"; do [ "$e" = "$2" ] && return; done
    effects+=("$2")
  fi
}

no_build="cargo build fails"
command -v cc >/dev/null 2>&1 || need gcc "$no_build"
[ -e /usr/include/stdio.h ] || deb libc6-dev || need libc6-dev "$no_build"
deb libssl-dev || pkg-config --exists openssl 2>/dev/null || need libssl-dev "$no_build"
command -v pkg-config >/dev/null 2>&1 || need pkg-config "$no_build"

if [ "$level" = test ]; then
  command -v c++ >/dev/null 2>&1 || need g++ "scripts/fuzz.sh (run under CI=true) cannot build libFuzzer"
  [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ] ||
    need chromium "the browser test skips"
  [ -x /usr/bin/chromedriver ] || [ -x /usr/lib/chromium/chromedriver ] ||
    need chromium-driver "the browser test skips"
  command -v pg_ctlcluster >/dev/null 2>&1 ||
    need postgresql "the fault tests' own PostgreSQL clusters skip, and without TEST_DATABASE_URL so does the PostgreSQL pass"
  command -v psql >/dev/null 2>&1 || need postgresql-client ""
  command -v redis-server >/dev/null 2>&1 ||
    need redis-server "the Redis rate-limit and fault tests skip (unless TEST_REDIS_URL is set)"
  command -v redis-cli >/dev/null 2>&1 || need redis-tools ""
  command -v python3 >/dev/null 2>&1 ||
    need python3 "scripts/test.sh stops at its module-layers check (python3 scripts/layers.py)"
  # scripts/schemathesis.sh makes a venv and pip-installs schemathesis into it.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || {
    need python3-venv "the schemathesis sweep skips"
    need python3-pip "the schemathesis sweep skips"
  }
  command -v curl >/dev/null 2>&1 || need curl "the schemathesis sweep and the README walkthrough fail"
  # scripts/walkthrough.sh runs the README's walkthrough, which uses them.
  command -v jq >/dev/null 2>&1 || need jq "the README walkthrough fails"
  command -v openssl >/dev/null 2>&1 || need openssl "the README walkthrough fails"
fi

if [ ${#missing[@]} -gt 0 ]; then
  installed=false
  if ! command -v apt-get >/dev/null 2>&1; then
    warn "missing ${missing[*]}, and there is no apt-get here (not Debian or Ubuntu):"
    warn "install these Debian packages, or their equivalents, yourself: ${missing[*]}"
  elif [ "$how" = none ]; then
    warn "missing ${missing[*]}; not root and no password-less sudo, so run:"
    echo "    ${su_do}apt-get install -y ${missing[*]}" >&2
  else
    echo "==> setup: installing ${missing[*]}"
    if as_root apt-get update -q &&
      as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      installed=true
    else
      warn "apt-get failed; to try again, run:"
      echo "    ${su_do}apt-get install -y ${missing[*]}" >&2
    fi
  fi
  if [ "$installed" = false ]; then
    for e in "${effects[@]+"${effects[@]}"}"; do warn "until then, $e"; done
    ci_fails "these packages are mandatory: ${missing[*]}"
  fi
fi

[ "$level" = test ] || exit 0

# --- PostgreSQL on 127.0.0.1:5432 (unless TEST_DATABASE_URL is set) -------
pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -h 127.0.0.1 -p 5432 -q
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}
# -w: never prompt for a password.
pg_login() { psql -w "postgres://$1@127.0.0.1:5432/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1; }

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    versions=()
    for dir in /etc/postgresql/*/; do
      if [ -d "$dir" ]; then versions+=("$(basename "$dir")"); fi
    done
    if [ "$how" = none ]; then
      warn "PostgreSQL is not running and this user cannot start it; run:"
      for version in "${versions[@]+"${versions[@]}"}"; do
        echo "    sudo pg_ctlcluster --skip-systemctl-redirect $version main start" >&2
      done
    else
      echo "==> setup: starting PostgreSQL"
      for version in "${versions[@]+"${versions[@]}"}"; do
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
      done
      for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    fi
  fi
  if ! pg_up; then
    warn "no PostgreSQL on 127.0.0.1:5432: without TEST_DATABASE_URL the PostgreSQL pass skips"
    ci_fails "PostgreSQL did not start"
  elif command -v psql >/dev/null 2>&1 && ! pg_login postgres && ! pg_login postgres:postgres; then
    # A fresh Debian cluster wants a password over TCP: under CI (a machine
    # of its own) give postgres one; scripts/test.sh tries
    # postgres:postgres@127.0.0.1:5432 after postgres@. Never on a
    # developer's machine: a known superuser password there is a way in for
    # every local user (COPY ... TO PROGRAM), so it is only printed.
    set_password="psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
    if [ "$ci" = "true" ] && [ "$how" != none ] && as_root su postgres -c "$set_password"; then
      echo "==> setup: gave the PostgreSQL role postgres the password 'postgres' (TCP logins from the tests)"
    else
      warn "PostgreSQL asks user postgres for a password: the PostgreSQL pass skips. Set"
      warn "TEST_DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:5432/postgres (a role with CREATEDB),"
      warn "or, on a machine where a known password is acceptable, run:"
      echo "    sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
      ci_fails "PostgreSQL is mandatory"
    fi
  fi
fi

# --- Redis on 127.0.0.1:6379 (unless TEST_REDIS_URL is set) ---------------
# Any user can start a redis-server of their own: no root needed.
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if [ -z "${TEST_REDIS_URL:-}" ] && ! redis_up && command -v redis-server >/dev/null 2>&1; then
  echo "==> setup: starting redis-server on 127.0.0.1:6379"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
fi
if [ -z "${TEST_REDIS_URL:-}" ] && ! redis_up; then
  warn "no Redis on 127.0.0.1:6379: the Redis rate-limit tests skip"
  ci_fails "Redis did not start"
fi
exit 0
