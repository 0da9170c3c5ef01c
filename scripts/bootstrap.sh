#!/usr/bin/env bash
# Installs everything Parley's build and tests need, from the package registries only
# (crates.io, npm, Debian). Each step checks first, so a second run takes seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PARLEY_ROOT"

CARGO_LEPTOS_VERSION=0.3.7   # newer releases need a newer rustc than 1.95
say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }

# The wasm-bindgen CLI must be exactly the version the lock file builds the app with.
lock_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 15 minutes on 2 cores, once)"
  cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi

WASM_BINDGEN_VERSION="$(lock_version wasm-bindgen)"
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # Not --locked: its lock file names a webpki-roots release the registry no longer has.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# npm ci only when the lock changed since the last install.
npm_ci_if_needed() {
  local dir="$1" stamp="$1/node_modules/.parley-lock-sha256"
  local want; want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "npm ci in ${dir#"$PARLEY_ROOT"/}"
    (cd "$dir" && npm ci --no-audit --no-fund)
    echo "$want" > "$stamp"
  fi
}
npm_ci_if_needed "$PARLEY_ROOT"          # tailwindcss, wasm-opt (binaryen)
npm_ci_if_needed "$PARLEY_ROOT/end2end"  # @playwright/test
npm_ci_if_needed "$PARLEY_ROOT/bench/socketio"  # socket.io, the load generator's baseline

# Debian packages: chromium for the browser tests; prometheus (with promtool) for the
# monitoring tests; nginx and redis-server for the cluster tests. The tests start
# their own instances on free ports (the packages' services are not used).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian's ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

say "ready"
