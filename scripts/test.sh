#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (SQLite and the local PostgreSQL),
# then the Playwright end-to-end tests in headless Chromium against a release build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PARLEY_ROOT"
bash scripts/bootstrap.sh

# Storage tests create a fresh schema per test in this database.
export PARLEY_TEST_POSTGRES_URL="${PARLEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

echo "== Rust tests"
# Not --workspace: that would build `app` with the browser-only `hydrate` feature
# (wanted by `frontend`) switched on inside the server as well.
cargo test --locked -p app -p server -p parley-bench
# The benchmarks run by hand (docs/benchmarks.md); building them here keeps them compiling.
cargo test --locked -p server --benches --no-run

echo "== Release build of the site"
cargo leptos build --release --precompress
TARGET_DIR="$PARLEY_ROOT/${CARGO_TARGET_DIR:-target}"
case "${CARGO_TARGET_DIR:-}" in /*) TARGET_DIR="$CARGO_TARGET_DIR" ;; esac
export PARLEY_SERVER_BIN="$TARGET_DIR/release/server"

echo "== Load generator smoke run: Parley, Socket.IO and the bare broadcast lose nothing"
# Seconds long, small, and checks only that every message arrived once and in order;
# the timed runs are in docs/benchmarks.md.
cargo build --locked -p parley-bench
"$TARGET_DIR/debug/parley-bench" smoke --parley-bin "$PARLEY_SERVER_BIN"
# The same for sockets held over two nodes sharing PostgreSQL and Redis: every node
# counts everyone online, and one message reaches every socket once.
"$TARGET_DIR/debug/parley-bench" held --sockets 600 --nodes 2 --parley-bin "$PARLEY_SERVER_BIN"

echo "== Playwright end-to-end tests"
cd end2end
npx playwright test
