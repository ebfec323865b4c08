#!/usr/bin/env bash
# The README walk-through, with the real aws CLI and nothing but the files Moat
# wrote. Arguments: Moat's data directory, the account id Moat printed.
set -euo pipefail
data="$1"
account="$2"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
  AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_CA_BUNDLE
export AWS_SHARED_CREDENTIALS_FILE="$data/aws/credentials" AWS_CONFIG_FILE="$data/aws/config"
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. The profile Moat wrote works as it is.
arn=$(aws --profile moat sts get-caller-identity --query Arn --output text)
[ "$arn" = "arn:aws:iam::$account:root" ] || fail "profile moat: ARN '$arn'"

# 2. The same through the variables README tells a user to export.
endpoint=$(sed -n 's/^endpoint_url = //p' "$AWS_CONFIG_FILE")
json=$(AWS_ENDPOINT_URL="$endpoint" AWS_CA_BUNDLE="$data/tls/ca.pem" aws --profile moat sts get-caller-identity --output json)
echo "$json" | grep -q "\"Account\": \"$account\"" || fail "exported variables: $json"

# 3. Only Moat's CA is trusted for Moat's endpoint: the system's bundle is refused.
if out=$(AWS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt aws --profile moat sts get-caller-identity 2>&1); then
  fail "a client trusting only the system CAs connected: $out"
fi
echo "$out" | grep -qi "ssl" || fail "expected a certificate error, got: $out"

# 4. Unknown keys and wrong secrets get AWS's error codes.
if out=$(AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY \
  aws --region us-east-1 --endpoint-url "$endpoint" --ca-bundle "$data/tls/ca.pem" sts get-caller-identity 2>&1); then
  fail "an unknown access key was accepted"
fi
echo "$out" | grep -q "(InvalidClientTokenId)" || fail "unknown key: $out"

key=$(sed -n 's/^aws_access_key_id = //p' "$AWS_SHARED_CREDENTIALS_FILE")
if out=$(AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY=not-the-secret-at-all-0000000000000000000 \
  aws --region us-east-1 --endpoint-url "$endpoint" --ca-bundle "$data/tls/ca.pem" sts get-caller-identity 2>&1); then
  fail "a wrong secret was accepted"
fi
echo "$out" | grep -q "(SignatureDoesNotMatch)" || fail "wrong secret: $out"
# 5. IAM through the CLI: a user, a policy document round trip, cleanup.
aws --profile moat iam create-user --user-name cli-user --path /cli/ >/dev/null
user_arn=$(aws --profile moat iam get-user --user-name cli-user --query User.Arn --output text)
[ "$user_arn" = "arn:aws:iam::$account:user/cli/cli-user" ] || fail "iam get-user: $user_arn"
doc='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:GetItem","Resource":"*"}]}'
aws --profile moat iam put-user-policy --user-name cli-user --policy-name p --policy-document "$doc"
action=$(aws --profile moat iam get-user-policy --user-name cli-user --policy-name p --query 'PolicyDocument.Statement[0].Action' --output text)
[ "$action" = "dynamodb:GetItem" ] || fail "iam get-user-policy: $action"
if out=$(aws --profile moat iam delete-user --user-name cli-user 2>&1); then fail "deleted a user with policies"; fi
echo "$out" | grep -q "(DeleteConflict)" || fail "delete-user: $out"
aws --profile moat iam delete-user-policy --user-name cli-user --policy-name p
aws --profile moat iam delete-user --user-name cli-user
echo "aws CLI: all checks passed"
