#!/usr/bin/env bash
# How Moat's figures move with load and data, as users run it (TLS, a
# non-root IAM user, durable writes):
#   - throughput of each workload with 1, 4, 16 and 64 connections;
#   - get latency with 10^4, 10^5 and 10^6 items stored (and the resident
#     memory with them);
#   - PutItem throughput as the item grows from 100 B to 400 KB.
# Puts the tables (with the date and commit) at the top of BENCHMARKS.md.
# Knobs: SECONDS_PER_RUN (5), WARMUP (1), SIZES ("10000 100000 1000000"),
# SIZE_WARMUP (10: the warm-up after loading each size), BENCH_APPEND (yes).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/moat-target}"
tools="${MOAT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moat-tools}"
seconds="${SECONDS_PER_RUN:-5}"
warmup="${WARMUP:-1}"
sizes="${SIZES:-10000 100000 1000000}"
size_warmup="${SIZE_WARMUP:-10}"
cargo build --release --locked -p moat -p moat-bench
bin="$CARGO_TARGET_DIR/release"
source bench/common.sh

# run [moat-bench options...]: one JSON line.
run() {
  "$bin/moat-bench" run --endpoint "$MOAT_ENDPOINT" "${MOAT_CA_ARGS[@]}" --server-pid "$MOAT_PID" \
    --seconds "$seconds" --warmup "${run_warmup:-$warmup}" --json "$@"
}
row() { python3 bench/row.py "$1" "$2"; }
header="| run | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |"

out="$work/scaling.md"
{
  echo "## Scaling, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
  echo
  echo "\`bench/scaling.sh\`: Moat over TLS, a non-root IAM user, ${seconds} s per run after ${warmup} s of warm-up."
  echo
  echo "Connections (10,000 items of 1 KB preloaded):"
  echo
  echo "$header"
} > "$out"

start_moat connections no
setup=(--setup)
for w in get put query mixed batch; do
  for c in 1 4 16 64; do
    echo "scaling: $w x$c" >&2
    row "$w x$c" "$(run --workload "$w" --connections "$c" --items 10000 --partitions 1000 "${setup[@]}")" >> "$out"
    setup=()
  done
done
peak=$(run --workload get --connections 16 --items 10000 | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput"])')
half=$(python3 -c "print(round($peak / 2))")
echo "scaling: get at half of the peak ($half req/s)" >&2
row "get at $half req/s (half of $(printf %.0f "$peak"))" "$(run --workload get --connections 16 --items 10000 --rate "$half")" >> "$out"
kill "$MOAT_PID"

{
  echo
  echo "Items stored (get of 1 KB items, 16 connections, ${size_warmup} s of warm-up after each load):"
  echo
  echo "$header"
} >> "$out"
start_moat items no
for n in $sizes; do
  echo "scaling: get with $n items" >&2
  # --setup loads items 0..n-1: the ones already there are written again.
  # Right after a load the machine is still writing it back and the item
  # cache is empty: the first seconds measure the load, not the table.
  row "get, $n items" "$(run_warmup=$size_warmup run --workload get --connections 16 --items "$n" --partitions 0 --setup)" >> "$out"
done
kill "$MOAT_PID"

{
  echo
  echo "Item size (PutItem, 16 connections):"
  echo
  echo "$header"
} >> "$out"
start_moat sizes no
setup=(--setup)
for b in 100 1000 10000 100000 400000; do
  echo "scaling: put of $b B" >&2
  row "put, $b B" "$(run --workload put --connections 16 --items 0 --partitions 0 --item-bytes "$b" "${setup[@]}")" >> "$out"
  setup=()
done
kill "$MOAT_PID"

cat "$out"
[ "${BENCH_APPEND:-yes}" = yes ] && python3 bench/prepend.py "$out"
exit 0
