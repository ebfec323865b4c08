#!/usr/bin/env bash
# Fine-grained access control with web identities, end to end: builds Moat
# and the demo, then runs it (it starts its own Moat and OpenID Connect issuer
# on loopback and cleans up after itself).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p moat --bin moat --example fgac_demo
"$CARGO_TARGET_DIR/release/examples/fgac_demo" "$CARGO_TARGET_DIR/release/moat"
