#!/usr/bin/env bash
# The README's run command: installs what `cargo build` needs when it can
# (`scripts/setup.sh build`: gcc, libc6-dev, libssl-dev, pkg-config; as root
# or with password-less sudo, else it prints the apt-get line to run), then
# `cargo run`, passing on its arguments. With no arguments it serves on SQLite
# (dzdesk-auth.db in the working directory, as with `cargo run`).
# DZDESK_NO_SETUP=1 leaves the set-up out.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${DZDESK_NO_SETUP:-}" != 1 ]; then
  "$root/scripts/setup.sh" build
fi
exec cargo run --manifest-path "$root/Cargo.toml" -- "$@"
