//! Identities and authorisation: who a caller is, and whether they may act.
//!
//! Holds the account, its principals and their access keys, and the one
//! authorisation decision every service asks for ([`authorize`]). Later work
//! adds users, roles, policies and the full policy evaluator here.
//!
//! Architecture invariant: no I/O, no HTTP, no clock or random source of its
//! own; callers pass randomness and time in. Nothing here may depend on the
//! edge or on a service crate.

mod credentials;

pub use credentials::{generate_access_key_id, generate_secret_access_key, AccessKey, Secret};

use std::collections::HashMap;

/// An AWS account id: exactly twelve decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(text: &str) -> Option<AccountId> {
        (text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| AccountId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made a request, once its signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account's root user, `arn:aws:iam::ACCOUNT:root`.
    Root { account: AccountId },
}

impl Principal {
    pub fn account(&self) -> &AccountId {
        match self {
            Principal::Root { account } => account,
        }
    }

    pub fn arn(&self) -> String {
        match self {
            Principal::Root { account } => format!("arn:aws:iam::{account}:root"),
        }
    }

    /// The unique id `GetCallerIdentity` reports (the account id for root).
    pub fn user_id(&self) -> String {
        match self {
            Principal::Root { account } => account.to_string(),
        }
    }
}

/// Why an access key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the access key id is not known")]
    UnknownAccessKey,
    #[error("the access key is inactive")]
    Inactive,
    #[error("the security token is not valid for this access key")]
    InvalidSecurityToken,
}

/// The account's principals and access keys.
#[derive(Debug, Default)]
pub struct Identities {
    keys: HashMap<String, AccessKey>,
}

impl Identities {
    pub fn new() -> Identities {
        Identities::default()
    }

    pub fn add_access_key(&mut self, key: AccessKey) {
        self.keys.insert(key.id.clone(), key);
    }

    /// The key a request claims to be signed with, if it may be used.
    ///
    /// `security_token` is the request's `X-Amz-Security-Token`: long-term keys
    /// take none; temporary credentials (from STS) will require theirs.
    pub fn signing_key(
        &self,
        access_key_id: &str,
        security_token: Option<&str>,
    ) -> Result<&AccessKey, CredentialError> {
        let key = self
            .keys
            .get(access_key_id)
            .ok_or(CredentialError::UnknownAccessKey)?;
        if !key.active {
            return Err(CredentialError::Inactive);
        }
        if security_token.is_some() {
            return Err(CredentialError::InvalidSecurityToken);
        }
        Ok(key)
    }
}

/// One request as the authoriser sees it.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub principal: &'a Principal,
    /// The IAM action, `service:Operation`.
    pub action: &'a str,
    /// The resource ARN, or `*` where the action has none.
    pub resource: &'a str,
}

/// The outcome of authorisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No policy allowed the action (the default).
    ImplicitDeny,
    /// A policy denied the action explicitly.
    ExplicitDeny,
}

/// The one authorisation path: may this principal perform this action on this resource?
///
/// Today only the account's root user exists, and root may do everything in
/// its own account. Every other principal is denied until policies grant it
/// (default closed).
pub fn authorize(ctx: &RequestContext<'_>) -> Decision {
    match ctx.principal {
        Principal::Root { account } => {
            if resource_in_account(ctx.resource, account) {
                Decision::Allow
            } else {
                Decision::ImplicitDeny
            }
        }
    }
}

/// True if `resource` is `*` or an ARN whose account field is `account` or empty
/// (global resources such as S3 buckets have none).
fn resource_in_account(resource: &str, account: &AccountId) -> bool {
    if resource == "*" {
        return true;
    }
    let mut fields = resource.splitn(6, ':');
    match (fields.next(), fields.nth(3)) {
        (Some("arn"), Some(acct)) => acct.is_empty() || acct == account.as_str(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_may_act_only_in_its_own_account() {
        let root = Principal::Root {
            account: AccountId::parse("123456789012").unwrap(),
        };
        let cases = [
            ("*", Decision::Allow),
            (
                "arn:aws:dynamodb:us-east-1:123456789012:table/t",
                Decision::Allow,
            ),
            ("arn:aws:s3:::bucket", Decision::Allow),
            (
                "arn:aws:dynamodb:us-east-1:210987654321:table/t",
                Decision::ImplicitDeny,
            ),
            ("not-an-arn", Decision::ImplicitDeny),
        ];
        for (resource, want) in cases {
            let ctx = RequestContext {
                principal: &root,
                action: "dynamodb:GetItem",
                resource,
            };
            assert_eq!(authorize(&ctx), want, "{resource}");
        }
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("123456789012").is_some());
        for bad in ["", "12345678901", "1234567890123", "12345678901a"] {
            assert!(AccountId::parse(bad).is_none(), "{bad}");
        }
    }
}
