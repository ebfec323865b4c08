#!/usr/bin/env bash
# README's DynamoDB walk-through with the real aws CLI: create a table, put,
# get, query, scan, delete. Argument: Moat's data directory.
set -euo pipefail
data="$1"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
  AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_CA_BUNDLE
export AWS_SHARED_CREDENTIALS_FILE="$data/aws/credentials" AWS_CONFIG_FILE="$data/aws/config"
fail() { echo "FAIL: $*" >&2; exit 1; }
ddb() { aws --profile moat dynamodb "$@"; }

ddb create-table --table-name music \
  --attribute-definitions AttributeName=artist,AttributeType=S AttributeName=song,AttributeType=S \
  --key-schema AttributeName=artist,KeyType=HASH AttributeName=song,KeyType=RANGE \
  --billing-mode PAY_PER_REQUEST >/dev/null
ddb wait table-exists --table-name music
ddb put-item --table-name music --item '{"artist":{"S":"Nina"},"song":{"S":"Sinnerman"},"year":{"N":"1965"}}'
ddb put-item --table-name music --item '{"artist":{"S":"Nina"},"song":{"S":"Feeling Good"},"year":{"N":"1965"}}'
ddb put-item --table-name music --item '{"artist":{"S":"Miles"},"song":{"S":"So What"},"year":{"N":"1959"}}'
year=$(ddb get-item --table-name music --key '{"artist":{"S":"Nina"},"song":{"S":"Sinnerman"}}' \
  --query Item.year.N --output text)
[ "$year" = "1965" ] || fail "get-item: $year"
count=$(ddb query --table-name music --key-condition-expression 'artist = :a' \
  --expression-attribute-values '{":a":{"S":"Nina"}}' --query Count --output text)
[ "$count" = "2" ] || fail "query: $count"
count=$(ddb scan --table-name music --query Count --output text)
[ "$count" = "3" ] || fail "scan: $count"
ddb delete-item --table-name music --key '{"artist":{"S":"Miles"},"song":{"S":"So What"}}'
count=$(ddb scan --table-name music --query Count --output text)
[ "$count" = "2" ] || fail "scan after delete: $count"
ddb delete-table --table-name music >/dev/null
echo "aws CLI DynamoDB walk-through: all checks passed"
