#!/usr/bin/env bash
# Quick DynamoDB GetItem/PutItem figures: starts a release Moat on a temporary
# data directory, runs the SDK-driven example against it, stops Moat.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p moat --bin moat --example ddb_quick_bench
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data" "$data.out"' EXIT
"$CARGO_TARGET_DIR/release/moat" serve --data-dir "$data" --listen 127.0.0.1:0 --log-level warn > "$data.out" &
pid=$!
for _ in $(seq 100); do grep -q "^moat: serving" "$data.out" 2>/dev/null && break; sleep 0.1; done
endpoint=$(sed -n 's/^moat: serving \([^ ]*\).*/\1/p' "$data.out")
"$CARGO_TARGET_DIR/release/examples/ddb_quick_bench" "$data" "$endpoint" "${SECONDS_PER_WORKLOAD:-10}" "${CONCURRENCY:-16}"
