//! `Principal` and `NotPrincipal` in trust and resource-based policies.
//!
//! AWS does not allow wildcards inside a principal ("You cannot use a
//! wildcard to match part of a principal name or ARN"): only a whole `*`.
//! Everything else is compared exactly, so it is checked and normalised at
//! parse time.

use serde_json::Value;

use crate::arn;
use crate::context::{PrincipalInfo, PrincipalKind};
use crate::PolicyError;

/// A compiled `Principal` (or, with `negated`, `NotPrincipal`) element.
#[derive(Debug, Clone)]
pub(crate) struct PrincipalClause {
    negated: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// `"Principal": "*"`: everyone, anonymous callers included.
    Everyone,
    /// `{"AWS": "*"}`: equivalent to `"*"` for AWS and anonymous callers (AWS
    /// documents the two as equivalent for anonymous users); it does not
    /// name web identities or services, which have their own keys.
    AnyAws,
    /// An account id, or its root ARN: the whole account (AWS: "Using the
    /// account ARN in the Principal element does not limit permissions to
    /// only the root user of the account").
    Account(Box<str>),
    /// A user, federated user or assumed-role session ARN.
    Arn(Box<str>),
    /// A role ARN: the role's sessions (`arn:aws:sts::A:assumed-role/NAME/s`)
    /// match, whatever the role's path.
    Role {
        arn: Box<str>,
        partition: Box<str>,
        account: Box<str>,
        name: Box<str>,
    },
    /// A web identity or SAML provider: its host name or its IAM ARN.
    Federated(Box<str>),
    /// A service principal such as `ec2.amazonaws.com`.
    Service(Box<str>),
    /// S3's canonical user ids; accepted in documents, never matched (Moat
    /// has no canonical users).
    CanonicalUser,
}

fn invalid() -> PolicyError {
    PolicyError::new("Invalid principal in policy")
}

impl PrincipalClause {
    pub(crate) fn parse(value: &Value, negated: bool) -> Result<PrincipalClause, PolicyError> {
        let mut entries = Vec::new();
        match value {
            Value::String(s) if s == "*" => entries.push(Entry::Everyone),
            Value::Object(map) if !map.is_empty() => {
                for (kind, names) in map {
                    for name in names_of(names)? {
                        entries.push(match kind.as_str() {
                            "AWS" => aws_entry(name)?,
                            "Federated" => Entry::Federated(name.into()),
                            "Service" => Entry::Service(name.into()),
                            "CanonicalUser" => Entry::CanonicalUser,
                            _ => return Err(invalid()),
                        });
                    }
                }
            }
            _ => return Err(invalid()),
        }
        Ok(PrincipalClause { negated, entries })
    }

    /// Whether the statement applies to this caller.
    pub(crate) fn matches(&self, who: &PrincipalInfo) -> bool {
        self.entries.iter().any(|e| e.matches(who)) != self.negated
    }
}

fn names_of(value: &Value) -> Result<Vec<&str>, PolicyError> {
    let names: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(invalid))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid()),
    };
    if names.is_empty() || names.iter().any(|n| n.is_empty()) {
        return Err(invalid());
    }
    Ok(names)
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn aws_entry(name: &str) -> Result<Entry, PolicyError> {
    if name == "*" {
        return Ok(Entry::AnyAws);
    }
    if is_account_id(name) {
        return Ok(Entry::Account(name.into()));
    }
    if name.contains(['*', '?']) {
        return Err(invalid());
    }
    let [prefix, partition, service, region, account, resource] =
        arn::split(name).ok_or_else(invalid)?;
    if prefix != "arn"
        || partition.is_empty()
        || !matches!(service, "iam" | "sts")
        || !region.is_empty()
        || !is_account_id(account)
        || resource.is_empty()
    {
        return Err(invalid());
    }
    if service == "iam" && resource == "root" {
        return Ok(Entry::Account(account.into()));
    }
    if let Some(path_and_name) = resource.strip_prefix("role/").filter(|_| service == "iam") {
        let role_name = path_and_name.rsplit('/').next().unwrap_or(path_and_name);
        return Ok(Entry::Role {
            arn: name.into(),
            partition: partition.into(),
            account: account.into(),
            name: role_name.into(),
        });
    }
    Ok(Entry::Arn(name.into()))
}

impl Entry {
    fn matches(&self, who: &PrincipalInfo) -> bool {
        let aws = who.kind == PrincipalKind::Aws;
        match self {
            Entry::Everyone => true,
            Entry::AnyAws => matches!(who.kind, PrincipalKind::Aws | PrincipalKind::Anonymous),
            Entry::Account(a) => aws && *who.account == **a,
            Entry::Arn(a) => aws && *who.arn == **a,
            Entry::Role {
                arn,
                partition,
                account,
                name,
            } => aws && (*who.arn == **arn || is_session_of(&who.arn, partition, account, name)),
            Entry::Federated(f) => match &who.kind {
                PrincipalKind::Federated {
                    provider,
                    provider_arn,
                } => provider.eq_ignore_ascii_case(f) || provider_arn.as_deref() == Some(&**f),
                _ => false,
            },
            Entry::Service(s) => match &who.kind {
                PrincipalKind::Service(service) => service.eq_ignore_ascii_case(s),
                _ => false,
            },
            Entry::CanonicalUser => false,
        }
    }
}

/// Whether `caller` is `arn:PARTITION:sts::ACCOUNT:assumed-role/NAME/SESSION`.
fn is_session_of(caller: &str, partition: &str, account: &str, name: &str) -> bool {
    let Some([prefix, p, service, region, a, resource]) = arn::split(caller) else {
        return false;
    };
    let Some(rest) = resource.strip_prefix("assumed-role/") else {
        return false;
    };
    let Some((role, session)) = rest.split_once('/') else {
        return false;
    };
    prefix == "arn"
        && p == partition
        && service == "sts"
        && region.is_empty()
        && a == account
        && role == name
        && !session.is_empty()
}
