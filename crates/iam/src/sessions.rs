//! Temporary credentials: what STS issues and SigV4 later accepts with a session token.

use std::collections::BTreeMap;
use std::fmt;

use moat_policy::PolicyKind;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::credentials::random_text;
use crate::error::{IamError, IamErrorKind};
use crate::state::{Document, IamState, Tag};

/// The largest session policy AssumeRole accepts (packed size, as AWS counts it).
pub const MAX_SESSION_POLICY_CHARS: usize = 2048;

/// Whose temporary credentials these are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    /// `GetSessionToken` by the root user.
    Root,
    /// `GetSessionToken` by an IAM user.
    User { name: String },
    /// `AssumeRole` or `AssumeRoleWithWebIdentity`.
    Role {
        role_name: String,
        session_name: String,
    },
}

/// Claims of the web identity token a session was issued for; they become the
/// provider's condition keys (`HOST:sub`, `HOST:aud`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebIdentity {
    pub provider_arn: String,
    /// `host/path` of the provider, the prefix of its condition keys.
    pub key_prefix: String,
    pub subject: String,
    pub audience: String,
    /// Condition keys and their values, e.g. `accounts.google.com:sub`.
    pub keys: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_key_id: String,
    pub secret: String,
    pub token: String,
    pub issued: i64,
    pub expiration: i64,
    pub kind: SessionKind,
    pub policy: Option<Document>,
    pub policy_arns: Vec<String>,
    pub tags: Vec<Tag>,
    pub web_identity: Option<WebIdentity>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn rehydrate(&mut self) {
        if let Some(p) = &mut self.policy {
            if let Ok(d) = Document::parse_for_session(&p.text) {
                *p = d;
            }
        }
    }
}

impl Document {
    pub(crate) fn parse_for_session(text: &str) -> Result<Document, IamError> {
        Document::parse(text, PolicyKind::Identity, MAX_SESSION_POLICY_CHARS).map_err(|e| {
            if e.kind == IamErrorKind::LimitExceeded {
                IamError::new(
                    IamErrorKind::PackedPolicyTooLarge,
                    "Packed policy consumes more than 100 percent of the allotted space.",
                )
            } else {
                e
            }
        })
    }
}

/// What a new session carries besides its owner.
#[derive(Debug, Default)]
pub struct SessionOptions {
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub tags: Vec<Tag>,
    pub web_identity: Option<WebIdentity>,
}

impl IamState {
    /// Issues temporary credentials valid for `duration` seconds from `now`.
    pub fn issue_session(
        &mut self,
        kind: SessionKind,
        duration: i64,
        options: SessionOptions,
        now: i64,
        rng: &dyn SecureRandom,
    ) -> Result<Session, IamError> {
        let policy = match &options.policy {
            Some(text) => Some(Document::parse_for_session(text)?),
            None => None,
        };
        if options.policy_arns.len() > 10 {
            return Err(IamError::validation(
                "1 validation error detected: Value at 'policyArns' failed to satisfy constraint: Member must have length less than or equal to 10",
            ));
        }
        for arn in &options.policy_arns {
            self.managed(arn)?;
        }
        if options.tags.len() > 50 {
            return Err(IamError::validation("A session can carry at most 50 tags."));
        }
        let failed = |_| IamError::validation("the random source failed");
        let base64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        // 80 random bits; drawn again rather than replace a live session
        // (authorisation keeps what it prepared for a session by its id).
        let access_key_id = loop {
            let id = format!(
                "ASIA{}",
                random_text(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16).map_err(failed)?
            );
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let session = Session {
            access_key_id,
            secret: random_text(rng, base64, 40).map_err(failed)?,
            token: format!(
                "IQoJb3JpZ2luX2Vj{}",
                random_text(rng, base64, 256).map_err(failed)?
            ),
            issued: now,
            expiration: now + duration,
            kind,
            policy,
            policy_arns: options.policy_arns,
            tags: options.tags,
            web_identity: options.web_identity,
        };
        // Forget sessions that expired long ago, so state does not grow without bound.
        self.sessions.retain(|_, s| s.expiration > now - 24 * 3600);
        self.sessions
            .insert(session.access_key_id.clone(), session.clone());
        Ok(session)
    }
}
