# Shared by bench/compare.sh and bench/scaling.sh (sourced, not run).
# Needs $bin (the release binaries) and $tools (the tools directory). Sourcing
# it installs the AWS CLI into the tools directory if it is missing, and makes
# $work (a scratch directory) and the array pids (started processes), both
# cleaned up on exit.

if ! "$tools/venv/bin/aws" --version >/dev/null 2>&1; then
  [ -x "$tools/venv/bin/pip" ] || python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "awscli>=1.36,<2"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_moat NAME PLAIN(yes|no): a release Moat on a fresh data directory
# under $work, with an IAM user whose policy allows the item actions on the
# bench table only. Sets MOAT_ENDPOINT, MOAT_PID, MOAT_CA_ARGS (for
# moat-bench) and exports the user's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
start_moat() {
  local name=$1 plain=$2
  local data="$work/$name"
  local args=(serve --data-dir "$data" --listen 127.0.0.1:0 --log-level warn)
  [ "$plain" = yes ] && args+=(--plain-http)
  "$bin/moat" "${args[@]}" > "$work/$name.out" 2>&1 &
  MOAT_PID=$!
  pids+=("$MOAT_PID")
  for _ in $(seq 100); do grep -q "^moat: serving" "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  local account
  MOAT_ENDPOINT=$(sed -n 's/^moat: serving \([^ ]*\).*/\1/p' "$work/$name.out")
  account=$(sed -n 's/.*(account \([0-9]*\),.*/\1/p' "$work/$name.out")
  local aws=("$tools/venv/bin/aws" --endpoint-url "$MOAT_ENDPOINT" --region us-east-1)
  # The root profile, not a previous Moat's bench user.
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  export AWS_SHARED_CREDENTIALS_FILE="$data/aws/credentials" AWS_CONFIG_FILE="$data/aws/config" AWS_PROFILE=moat
  [ "$plain" = yes ] || export AWS_CA_BUNDLE="$data/tls/ca.pem"
  "${aws[@]}" iam create-user --user-name bench >/dev/null
  "${aws[@]}" iam put-user-policy --user-name bench --policy-name bench-table --policy-document "{
    \"Version\": \"2012-10-17\",
    \"Statement\": [
      {\"Sid\": \"Items\", \"Effect\": \"Allow\",
       \"Action\": [\"dynamodb:GetItem\", \"dynamodb:PutItem\", \"dynamodb:Query\", \"dynamodb:BatchWriteItem\", \"dynamodb:BatchGetItem\",
                    \"dynamodb:UpdateItem\", \"dynamodb:DeleteItem\", \"dynamodb:CreateTable\", \"dynamodb:DescribeTable\"],
       \"Resource\": [\"arn:aws:dynamodb:us-east-1:$account:table/bench\", \"arn:aws:dynamodb:us-east-1:$account:table/bench/index/*\"]},
      {\"Sid\": \"NoDrops\", \"Effect\": \"Deny\", \"Action\": \"dynamodb:DeleteTable\", \"Resource\": \"*\"}
    ]}" >/dev/null
  local key
  key=$("${aws[@]}" iam create-access-key --user-name bench --query 'AccessKey.[AccessKeyId,SecretAccessKey]' --output text)
  unset AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_PROFILE AWS_CA_BUNDLE
  MOAT_CA_ARGS=()
  [ "$plain" = yes ] || MOAT_CA_ARGS=(--ca "$data/tls/ca.pem")
  export AWS_ACCESS_KEY_ID=${key%%$'\t'*} AWS_SECRET_ACCESS_KEY=${key##*$'\t'}
}
