#!/usr/bin/env bash
# Moat side by side with the DynamoDB servers a user would otherwise pick,
# and with a bare server that does no work, all driven by moat-bench in one
# run. Puts one table (with the date and commit) at the top of BENCHMARKS.md.
#
# Servers:
#   moat        as users run it: TLS, SigV4 verified, a non-root IAM user
#               with a realistic policy, durable writes
#   moat-plain  the same on plain HTTP on loopback
#   moto        moto_server (PyPI moto[server])
#   dynalite    dynalite --path DIR (npm), so that it writes to disk
#   fakecloud   fakecloud --iam strict --verify-sigv4, persistent (crates.io),
#               as a non-root user of its IAM (its test/test root skips checks)
#   bare-tls, bare-plain  moat-bench's baseline: a fixed answer, no work
#
# Knobs (environment): SECONDS_PER_RUN (10), WARMUP (2), CONNECTIONS (16),
# PEAK_CONNECTIONS (64: get is run again on that many, and the get targets
# are judged a second time on each server's better figure, its peak; empty
# for none),
# ITEMS (100000), FAKECLOUD_ITEMS (2000: fakecloud's persistent mode
# rewrites its whole state on every write, 17 puts/s at 2,000 items, so
# 100,000 take hours to load; its rows are then marked), WORKLOADS ("get put query mixed batch"),
# SERVERS ("moat moat-plain moto dynalite fakecloud bare-tls bare-plain"),
# BENCH_OUT (a file to also write the table to), BENCH_APPEND (yes: append
# the table to BENCHMARKS.md, newest first), ROUNDS (1: every server and
# workload again, in the same order, that many times; the table shows each
# figure's median run, so that a slow spell of a shared machine during one
# server's turn does not decide a ratio).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/moat-target}"
tools="${MOAT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moat-tools}"
seconds="${SECONDS_PER_RUN:-10}"
warmup="${WARMUP:-2}"
connections="${CONNECTIONS:-16}"
peak="${PEAK_CONNECTIONS-64}"
[ "$peak" != "$connections" ] || peak=""
items="${ITEMS:-100000}"
fakecloud_items="${FAKECLOUD_ITEMS:-2000}"
workloads="${WORKLOADS:-get put query mixed batch}"
rounds="${ROUNDS:-1}"
servers="${SERVERS:-moat moat-plain moto dynalite fakecloud bare-tls bare-plain}"
want() { [[ " $servers " == *" $1 "* ]]; }

cargo build --release --locked -p moat -p moat-bench
bin="$CARGO_TARGET_DIR/release"

# Peers, installed once into the tools directory.
if want moto && ! "$tools/venv/bin/moto_server" --help >/dev/null 2>&1; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6"
fi
if want dynalite && [ ! -x "$tools/node/node_modules/.bin/dynalite" ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
  npm install --silent --prefix "$tools/node" dynalite@4
fi
if want fakecloud && [ ! -x "$tools/fakecloud/bin/fakecloud" ]; then
  cargo install --locked fakecloud --root "$tools/fakecloud"
fi
source bench/common.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

results="$work/results.jsonl"
: > "$results"

# bench NAME ENDPOINT PID [moat-bench options...]: every workload, setup
# first, with $items preloaded (BENCH_ITEMS overrides it for one server).
bench() {
  local name=$1 endpoint=$2 pid=$3 preload=${BENCH_ITEMS:-$items}
  shift 3
  local setup=(--setup)
  [ "${SETUP:-yes}" = yes ] || setup=()
  for w in $workloads; do
    one "$w" "$connections" "${setup[@]}" "$@"
    setup=()
  done
  # A server's peak may need more requests in flight than the table's runs
  # keep: get again, on PEAK_CONNECTIONS.
  if [ -n "$peak" ] && [[ " $workloads " == *" get "* ]]; then
    one get "$peak" "$@"
  fi
}

# one WORKLOAD CONNECTIONS [moat-bench options...]: one run for bench (its
# locals name the server), its JSON line (or its failure) into $results.
one() {
  local w=$1 n=$2 line
  shift 2
  echo "bench: $name $w x$n" >&2
  if line=$("$bin/moat-bench" run --endpoint "$endpoint" --workload "$w" \
      --connections "$n" --seconds "$seconds" --warmup "$warmup" \
      --items "$preload" --server-pid "$pid" --json "$@"); then
    echo "{\"server\":\"$name\",\"items\":$preload,${line#\{}" >> "$results"
  else
    echo "{\"server\":\"$name\",\"workload\":\"$w\",\"connections\":$n,\"failed\":true}" >> "$results"
  fi
}

# run_moat LABEL PLAIN: a fresh Moat, TLS (as users run it) or plain HTTP,
# with a data directory of the round's; a non-root user whose policy allows
# the item actions on the bench table only.
run_moat() {
  start_moat "$1-r$round" "$2"
  bench "$1" "$MOAT_ENDPOINT" "$MOAT_PID" "${MOAT_CA_ARGS[@]}"
  kill "$MOAT_PID"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
}

for round in $(seq "$rounds"); do
  want moat && run_moat moat no
  want moat-plain && run_moat moat-plain yes

  export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
  if want moto; then
    port=$(free_port)
    "$tools/venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$work/moto.out" 2>&1 &
    pid=$!; pids+=("$pid"); wait_port "$port"
    bench moto "http://127.0.0.1:$port" "$pid"
    kill "$pid"
  fi
  if want dynalite; then
    port=$(free_port)
    node "$tools/node/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$port" --path "$work/dynalite-r$round" \
      --createTableMs 0 > "$work/dynalite.out" 2>&1 &
    pid=$!; pids+=("$pid"); wait_port "$port"
    bench dynalite "http://127.0.0.1:$port" "$pid"
    kill "$pid"
  fi
  if want fakecloud; then
    port=$(free_port)
    "$tools/fakecloud/bin/fakecloud" --addr "127.0.0.1:$port" --iam strict --verify-sigv4 \
      --storage-mode persistent --data-path "$work/fakecloud-r$round" --log-level warn > "$work/fakecloud.out" 2>&1 &
    pid=$!; pids+=("$pid"); wait_port "$port"
    # fakecloud's test/test root skips both checks: a user of its IAM with the
    # same policy as Moat's bench user does not.
    fc=("$tools/venv/bin/aws" --endpoint-url "http://127.0.0.1:$port" --region us-east-1)
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "${fc[@]}" iam create-user --user-name bench >/dev/null
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "${fc[@]}" iam put-user-policy --user-name bench \
      --policy-name bench-table --policy-document '{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem",
          "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:CreateTable", "dynamodb:DescribeTable"],
         "Resource": ["arn:aws:dynamodb:us-east-1:123456789012:table/bench", "arn:aws:dynamodb:us-east-1:123456789012:table/bench/index/*"]},
        {"Effect": "Deny", "Action": "dynamodb:DeleteTable", "Resource": "*"}]}' >/dev/null
    key=$(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "${fc[@]}" iam create-access-key --user-name bench \
      --query 'AccessKey.[AccessKeyId,SecretAccessKey]' --output text)
    BENCH_ITEMS=$fakecloud_items AWS_ACCESS_KEY_ID=${key%%$'\t'*} AWS_SECRET_ACCESS_KEY=${key##*$'\t'} bench fakecloud "http://127.0.0.1:$port" "$pid"
    kill "$pid"
  fi
  for mode in tls plain; do
    want "bare-$mode" || continue
    extra=()
    [ "$mode" = tls ] && extra=(--tls-cert-out "$work/bare.pem")
    "$bin/moat-bench" baseline "${extra[@]}" > "$work/bare-$mode.out" 2>&1 &
    pid=$!; pids+=("$pid")
    for _ in $(seq 100); do grep -q "^baseline: serving" "$work/bare-$mode.out" 2>/dev/null && break; sleep 0.1; done
    endpoint=$(sed -n 's/^baseline: serving //p' "$work/bare-$mode.out")
    ca=()
    [ "$mode" = tls ] && ca=(--ca "$work/bare.pem")
    # The bare server does the same nothing for every operation; get and
    # put differ in what the client sends and gets back, so each has its
    # own limit (the put targets are judged against bare's put).
    bare_workloads=""
    for w in get put; do
      if [[ " $workloads " == *" $w "* ]]; then bare_workloads+=" $w"; fi
    done
    SETUP=no workloads=$bare_workloads bench "bare-$mode" "$endpoint" "$pid" "${ca[@]}"
    kill "$pid"
  done
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
done

table=$(python3 - "$results" "$connections" "$seconds" "$items" "$rounds" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
conns, secs, items, rounds = sys.argv[2:6]
# A run on other than the table's connections is its own workload: "get x64".
for r in runs:
    if str(r.get("connections", conns)) != conns:
        r["workload"] = f"{r['workload']} x{r['connections']}"
# One row per server and workload, in the order first run: the run with the
# median throughput (the lower middle of an even count); failed if any failed.
groups = {}
for r in runs:
    groups.setdefault((r["server"], r["workload"]), []).append(r)
rows = []
for group in groups.values():
    failed = [r for r in group if r.get("failed")]
    ranked = sorted(group, key=lambda r: r["throughput"]) if not failed else failed
    rows.append(ranked[(len(ranked) - 1) // 2])
moat = {r["workload"]: r for r in rows if r["server"] == "moat" and not r.get("failed")}
peak = [w for w in sorted({r["workload"] for r in rows}) if w.startswith("get x")]
median = f" Each figure is from the median of {rounds} rounds." if rounds != "1" else ""
also = f" (get also on {peak[0][5:]}: rows \"{peak[0]}\")" if peak else ""
out = [f"{conns} connections{also}, {secs} s per run after warm-up, {items} items preloaded.{median}", "",
       "| server | workload | req/s | x Moat | p50 ms | p99 ms | p99.9 ms | errors | server CPU s | peak RSS MiB |",
       "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in rows:
    if r.get("failed"):
        out.append(f"| {r['server']} | {r['workload']} | failed | | | | | | | |")
        continue
    server = r["server"]
    if str(r.get("items", items)) != items:
        server += f" ({r['items']} items)"
    base = moat.get(r["workload"])
    ratio = f"{r['throughput'] / base['throughput']:.2f}" if base and base["throughput"] else ""
    cpu = r.get("server_cpu_seconds")
    rss = r.get("server_peak_rss_mb")
    out.append(f"| {server} | {r['workload']} | {r['throughput']:.0f} | {ratio} | "
               f"{r['p50_us']/1000:.2f} | {r['p99_us']/1000:.2f} | {r['p999_us']/1000:.2f} | {r['errors']} | "
               f"{'' if cpu is None else f'{cpu:.1f}'} | {'' if rss is None else f'{rss:.0f}'} |")

# The issue's throughput targets, each a ratio of two rows of this run.
def throughput(server, workload):
    for r in rows:
        if r["server"] == server and r["workload"] == workload and not r.get("failed"):
            return r["throughput"] or None
    return None
targets = [
    # (what, server, workload, against, its workload, at least, as a percentage)
    ("get, 20 times moto_server's", "moat", "get", "moto", "get", 20, False),
    ("get, 5 times dynalite's", "moat", "get", "dynalite", "get", 5, False),
    ("get, ahead of fakecloud's", "moat", "get", "fakecloud", "get", 1, False),
    ("get, 50% of the bare baseline's (TLS)", "moat", "get", "bare-tls", "get", 0.5, True),
    ("get, 50% of the bare baseline's (plain HTTP)", "moat-plain", "get", "bare-plain", "get", 0.5, True),
    ("put, 40% of the bare baseline's (TLS, durable)", "moat", "put", "bare-tls", "put", 0.4, True),
    ("put, 40% of the bare baseline's (plain HTTP, durable)", "moat-plain", "put", "bare-plain", "put", 0.4, True),
]
# The same get targets on each server's peak: the better of its runs on
# the table's connections and on the peak's.
def best(server, workload):
    figures = [throughput(server, w) for w in [workload] + (peak if workload == "get" else [])]
    figures = [f for f in figures if f]
    return max(figures) if figures else None
judged = [(what, server, workload, against, their, goal, percent, throughput)
          for what, server, workload, against, their, goal, percent in targets]
if peak:
    judged += [(f"{what}, at each server's peak ({conns} or {peak[0][5:]} connections)",
                server, workload, against, their, goal, percent, best)
               for what, server, workload, against, their, goal, percent in targets
               if workload == "get"]
out += ["", "| target | measured | met |", "| --- | ---: | --- |"]
for what, server, workload, against, their_workload, goal, percent, figure in judged:
    ours, theirs = figure(server, workload), figure(against, their_workload)
    if ours is None or theirs is None:
        out.append(f"| {what} | not measured | |")
        continue
    ratio = ours / theirs
    shown = f"{100 * ratio:.1f}%" if percent else f"{ratio:.2f}x"
    met = ratio > goal if goal == 1 else ratio >= goal
    out.append(f"| {what} | {shown} | {'yes' if met else 'no'} |")
print("\n".join(out))
EOF
)
{
  echo
  echo "## Side by side, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
  echo
  echo "$table"
} > "$work/table.md"
cat "$work/table.md"
[ "${BENCH_APPEND:-yes}" = yes ] && python3 bench/prepend.py "$work/table.md"
[ -n "${BENCH_OUT:-}" ] && cp "$work/table.md" "$BENCH_OUT"
exit 0
