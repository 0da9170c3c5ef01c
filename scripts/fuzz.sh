#!/usr/bin/env bash
# Fuzzes the decoder of client frames with libFuzzer for a set time (default 300 s):
#   bash scripts/fuzz.sh [seconds]
# Not part of CI (it runs until the time is up). Findings land in fuzz/artifacts/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PARLEY_ROOT"
SECONDS_TO_RUN="${1:-300}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them. Without a sanitizer, no nightly standard library is needed.
RUSTC_BOOTSTRAP=1 cargo fuzz run decode_client_frame --sanitizer none -- -max_total_time="$SECONDS_TO_RUN"
