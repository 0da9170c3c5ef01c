#!/usr/bin/env bash
# Builds Parley in release mode and serves it on http://127.0.0.1:3000 with the
# embedded SQLite database under ./data (settings: Leptos.toml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PARLEY_ROOT"
bash scripts/bootstrap.sh
cargo leptos build --release --precompress
exec "${CARGO_TARGET_DIR:-target}/release/server"
