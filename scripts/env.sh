# Sourced by the other scripts: puts the project's build tools on PATH.
# cargo-leptos looks for wasm-bindgen, tailwindcss and wasm-opt on PATH before it
# tries to download them, and downloads cannot work on machines without internet.
PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PARLEY_ROOT
export PATH="$PARLEY_ROOT/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
