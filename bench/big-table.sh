#!/usr/bin/env bash
# Reads whose cost should not grow with the data, on one large partition:
# Query's newest items (backward), a sort key condition near the
# partition's end, the first items, and DescribeTable of the table (which
# has a global index). Against a release Moat as users run it (TLS, the
# bench IAM user of bench/common.sh). Prints milliseconds per call, client
# time included (botocore, one connection).
# Knobs: ITEMS (20000), SECONDS_PER_RUN (5).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/moat-target}"
tools="${MOAT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moat-tools}"
cargo build --release --locked -p moat
bin="$CARGO_TARGET_DIR/release"
source bench/common.sh
start_moat big no
ENDPOINT=$MOAT_ENDPOINT CA_FILE="$work/big/tls/ca.pem" ITEMS="${ITEMS:-20000}" \
  SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}" "$tools/venv/bin/python" - <<'PY'
import os, time
import botocore.session
from botocore.config import Config

client = botocore.session.get_session().create_client(
    "dynamodb", region_name="us-east-1", endpoint_url=os.environ["ENDPOINT"],
    verify=os.environ["CA_FILE"], config=Config(retries={"max_attempts": 0}))
items, seconds = int(os.environ["ITEMS"]), float(os.environ["SECONDS_PER_RUN"])
client.create_table(
    TableName="bench", BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                          {"AttributeName": "sk", "AttributeType": "N"},
                          {"AttributeName": "g", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
               {"AttributeName": "sk", "KeyType": "RANGE"}],
    GlobalSecondaryIndexes=[{"IndexName": "ByG", "Projection": {"ProjectionType": "ALL"},
                             "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}]}])
pad = "x" * 200
for first in range(0, items, 25):
    client.batch_write_item(RequestItems={"bench": [
        {"PutRequest": {"Item": {"pk": {"S": "big"}, "sk": {"N": str(i)}, "g": {"S": str(i % 100)},
                                 "d": {"S": pad}}}}
        for i in range(first, min(first + 25, items))]})

def timed(call):
    n, started = 0, time.time()
    while time.time() - started < seconds:
        answer = call()
        n += 1
    return (time.time() - started) / n * 1000, answer

def run(label, **query):
    ms, answer = timed(lambda: client.query(TableName="bench", Limit=10, **query))
    print(f"{label}: {ms:.2f} ms per query, {len(answer['Items'])} items")

partition = {":p": {"S": "big"}}
run("newest 10 (ScanIndexForward false, Limit 10)", KeyConditionExpression="pk = :p",
    ExpressionAttributeValues=partition, ScanIndexForward=False)
run("sk > :v (the last 10), Limit 10", KeyConditionExpression="pk = :p AND sk > :v",
    ExpressionAttributeValues={**partition, ":v": {"N": str(items - 11)}})
run("first 10 (forward, Limit 10)", KeyConditionExpression="pk = :p",
    ExpressionAttributeValues=partition)
ms, answer = timed(lambda: client.describe_table(TableName="bench"))
index = answer["Table"]["GlobalSecondaryIndexes"][0]
print(f"DescribeTable: {ms:.2f} ms per call, index ItemCount {index['ItemCount']}")
PY
