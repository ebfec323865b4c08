//! The Security Token Service's operations, as typed inputs and outputs.
//!
//! The edge decodes a request into these types and encodes the answers; this
//! crate knows no HTTP and no wire format. Web identity tokens are verified by
//! [`jwt`] against keys the caller supplies (fetching them is the caller's job).
//!
//! Architecture invariant: depends only on `moat-iam` and `moat-policy`; no I/O.

pub mod jwt;

use moat_iam::{
    Caller, Iam, IamError, IamErrorKind, Principal, Session, SessionKind, SessionOptions, Tag,
};
use moat_policy::{ContextKeys, Decision};
use ring::rand::SecureRandom;

/// The answer to `GetCallerIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// `GetCallerIdentity`: who the verified caller is. AWS needs no permission
/// for it, and neither does Moat.
pub fn get_caller_identity(principal: &Principal) -> CallerIdentity {
    CallerIdentity {
        account: principal.account().to_string(),
        arn: principal.arn(),
        user_id: principal.user_id(),
    }
}

/// Temporary credentials as STS returns them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Unix seconds.
    pub expiration: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl From<Session> for Credentials {
    fn from(s: Session) -> Credentials {
        Credentials {
            access_key_id: s.access_key_id,
            secret_access_key: s.secret,
            session_token: s.token,
            expiration: s.expiration,
        }
    }
}

/// The role session `AssumeRole*` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedRole {
    pub credentials: Credentials,
    pub assumed_role_id: String,
    pub arn: String,
    /// Percentage of the allowed session policy size used.
    pub packed_policy_size: u32,
}

/// `GetSessionToken`: temporary credentials for a user or the root user,
/// from long-term credentials only.
pub fn get_session_token(
    iam: &Iam,
    caller: &Caller,
    duration: Option<i64>,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<Credentials, IamError> {
    if caller.session.is_some() {
        return Err(IamError::new(
            IamErrorKind::AccessDenied,
            "Cannot call GetSessionToken with session credentials",
        ));
    }
    let (kind, max) = match &caller.principal {
        Principal::Root { .. } => (SessionKind::Root, 3600),
        Principal::User { name, .. } => (SessionKind::User { name: name.clone() }, 129_600),
        Principal::AssumedRole { .. } => {
            return Err(IamError::new(
                IamErrorKind::AccessDenied,
                "Cannot call GetSessionToken with session credentials",
            ))
        }
    };
    let duration = duration.unwrap_or(if max == 3600 { 3600 } else { 43_200 });
    if !(900..=max).contains(&duration) {
        return Err(IamError::validation(format!(
            "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and {max}"
        )));
    }
    iam.issue_session(kind, duration, SessionOptions::default(), now, rng)
        .map(Credentials::from)
}

/// What `AssumeRole` was asked.
#[derive(Debug, Default)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub session_name: String,
    pub duration: Option<i64>,
    pub external_id: Option<String>,
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub tags: Vec<Tag>,
}

/// `AssumeRole`: the role's trust policy (and, where it names only the
/// account, the caller's own policies) must allow the caller.
pub fn assume_role(
    iam: &Iam,
    caller: &Caller,
    input: AssumeRoleInput,
    mut keys: ContextKeys,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<AssumedRole, IamError> {
    validate_session_name(&input.session_name)?;
    if let Some(id) = &input.external_id {
        if id.len() < 2 || id.len() > 1224 {
            return Err(IamError::validation(
                "1 validation error detected: Value at 'externalId' failed to satisfy constraint: Member must have length between 2 and 1224",
            ));
        }
        keys.set("sts:ExternalId", id.clone());
    }
    keys.set("sts:RoleSessionName", input.session_name.clone());
    for t in &input.tags {
        keys.set(&format!("aws:RequestTag/{}", t.key), t.value.clone());
    }
    if !input.tags.is_empty() {
        keys.set_multi(
            "aws:TagKeys",
            input.tags.iter().map(|t| t.key.clone()).collect(),
        );
    }
    let denied = || {
        IamError::new(
            IamErrorKind::AccessDenied,
            format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
                caller.principal.arn(),
                input.role_arn
            ),
        )
    };
    let role = {
        let state = iam.read();
        state
            .role_by_arn(&input.role_arn)
            .map_err(|_| denied())?
            .clone()
    };
    let chained = matches!(caller.principal, Principal::AssumedRole { .. });
    let max = if chained {
        3600
    } else {
        role.max_session_duration
    };
    let duration = input.duration.unwrap_or(3600);
    if duration < 900 {
        return Err(IamError::validation(format!(
            "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
        )));
    }
    if duration > max {
        return Err(IamError::validation(format!(
            "The requested DurationSeconds exceeds the {} set for this role.",
            if chained {
                "1 hour session limit for roles assumed by role chaining"
            } else {
                "MaxSessionDuration"
            }
        )));
    }
    let evaluation = iam.authorize_assume_role(caller, &role, "sts:AssumeRole", keys);
    if evaluation.decision != Decision::Allow {
        return Err(denied());
    }
    issue_role_session(iam, &role.name, &role.id, input, duration, None, now, rng)
}

/// Creates the session of an allowed `AssumeRole*`.
#[allow(clippy::too_many_arguments)]
pub fn issue_role_session(
    iam: &Iam,
    role_name: &str,
    role_id: &str,
    input: AssumeRoleInput,
    duration: i64,
    web_identity: Option<moat_iam::WebIdentity>,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<AssumedRole, IamError> {
    let packed = input
        .policy
        .as_deref()
        .map(|p| {
            let chars = p.chars().filter(|c| !c.is_whitespace()).count();
            (chars * 100 / moat_iam_session_limit()) as u32
        })
        .unwrap_or(0);
    let session_name = input.session_name.clone();
    let session = iam.issue_session(
        SessionKind::Role {
            role_name: role_name.to_owned(),
            session_name: session_name.clone(),
        },
        duration,
        SessionOptions {
            policy: input.policy,
            policy_arns: input.policy_arns,
            tags: input.tags,
            web_identity,
        },
        now,
        rng,
    )?;
    Ok(AssumedRole {
        credentials: session.into(),
        assumed_role_id: format!("{role_id}:{session_name}"),
        arn: format!(
            "arn:aws:sts::{}:assumed-role/{role_name}/{session_name}",
            iam.account()
        ),
        packed_policy_size: packed,
    })
}

fn moat_iam_session_limit() -> usize {
    2048
}

pub fn validate_session_name(name: &str) -> Result<(), IamError> {
    let ok = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )))
    }
}
