//! Identities and authorisation: who a caller is, and whether they may act.
//!
//! Holds the account's IAM state (users, groups, roles, managed and inline
//! policies, access keys, OpenID Connect providers, STS sessions), resolves
//! an access key to its principal, and makes the one authorisation decision
//! every service asks for ([`Iam::authorize`]) with the policy evaluator of
//! `moat-policy`.
//!
//! Architecture invariant: no network, no HTTP, no clock or random source of
//! its own; callers pass time and randomness in, and persistence goes through
//! the [`StateStore`] trait. Nothing here may depend on the edge or on a
//! service crate.

mod authz;
mod credentials;
mod error;
mod sessions;
mod state;

pub use authz::{service_prefix, AuthzRequest, Caller, LazyKeys};
pub use credentials::{generate_access_key_id, generate_secret_access_key, AccessKey, Secret};
pub use error::{IamError, IamErrorKind};
pub use sessions::{Session, SessionKind, SessionOptions, WebIdentity};
pub use state::{
    Document, Group, IamState, KeyStatus, ManagedPolicy, OidcProvider, PolicyVersion, Role, Tag,
    Target, User, UserKey,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use subtle::ConstantTimeEq;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The account's root user, `arn:aws:iam::ACCOUNT:root`.
    Root { account: AccountId },
    /// An IAM user.
    User {
        account: AccountId,
        name: String,
        id: String,
        path: String,
    },
    /// A role session, `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    AssumedRole {
        account: AccountId,
        role_name: String,
        role_id: String,
        role_path: String,
        session_name: String,
    },
}

impl Principal {
    pub fn account(&self) -> &AccountId {
        match self {
            Principal::Root { account }
            | Principal::User { account, .. }
            | Principal::AssumedRole { account, .. } => account,
        }
    }

    pub fn arn(&self) -> String {
        // Every request's audit line names its principal: pushed, the parts
        // cost a third of what `format!` did.
        let parts: [&str; 6] = match self {
            Principal::Root { account } => ["arn:aws:iam::", account.as_str(), ":root", "", "", ""],
            Principal::User {
                account,
                name,
                path,
                ..
            } => ["arn:aws:iam::", account.as_str(), ":user", path, name, ""],
            Principal::AssumedRole {
                account,
                role_name,
                session_name,
                ..
            } => [
                "arn:aws:sts::",
                account.as_str(),
                ":assumed-role/",
                role_name,
                "/",
                session_name,
            ],
        };
        let mut arn = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            arn.push_str(part);
        }
        arn
    }

    /// The unique id `GetCallerIdentity` reports.
    pub fn user_id(&self) -> String {
        match self {
            Principal::Root { account } => account.to_string(),
            Principal::User { id, .. } => id.clone(),
            Principal::AssumedRole {
                role_id,
                session_name,
                ..
            } => format!("{role_id}:{session_name}"),
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
    #[error("the security token has expired")]
    Expired,
}

/// Where IAM's state is kept between runs. The encrypted store will fill this.
pub trait StateStore: Send + Sync {
    fn load(&self) -> std::io::Result<Option<Vec<u8>>>;
    /// Replaces the stored state durably (the write is on disk when this returns).
    fn save(&self, bytes: &[u8]) -> std::io::Result<()>;
}

/// IAM and STS for one account: the state, the root key, and persistence.
pub struct Iam {
    account: AccountId,
    root_key: AccessKey,
    state: RwLock<IamState>,
    /// Counts the changes of `state`; bumped under its write lock.
    generation: AtomicU64,
    /// Callers' policies and keys as of a generation (see `authz::Prepared`).
    prepared: Mutex<authz::PreparedCallers>,
    store: Box<dyn StateStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the IAM state: {0}")]
    Io(#[from] std::io::Error),
    #[error("the IAM state is damaged: {0}")]
    Corrupt(String),
    #[error("the IAM state belongs to account {found}, not {expected}")]
    WrongAccount { found: String, expected: String },
}

impl Iam {
    /// Loads the stored state (or starts empty) for the account of `root_key`.
    pub fn open(root_key: AccessKey, store: Box<dyn StateStore>) -> Result<Iam, LoadError> {
        let account = root_key.principal.account().clone();
        let state = match store.load()? {
            Some(bytes) => {
                let mut state: IamState = serde_json::from_slice(&bytes)
                    .map_err(|e| LoadError::Corrupt(e.to_string()))?;
                if state.account != account.as_str() {
                    return Err(LoadError::WrongAccount {
                        found: state.account,
                        expected: account.to_string(),
                    });
                }
                state.rehydrate();
                state
            }
            None => IamState::new(&account),
        };
        Ok(Iam {
            account,
            root_key,
            state: RwLock::new(state),
            generation: AtomicU64::new(0),
            prepared: Mutex::default(),
            store,
        })
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// A consistent view of the state.
    pub fn read(&self) -> RwLockReadGuard<'_, IamState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a change all or nothing: on a copy, saved durably, then made current.
    pub fn mutate<T>(
        &self,
        change: impl FnOnce(&mut IamState) -> Result<T, IamError>,
    ) -> Result<T, IamError> {
        self.apply(change, true)
    }

    /// Issues temporary credentials ([`IamState::issue_session`]) as
    /// [`Iam::mutate`] would, but keeps the callers authorisation has
    /// prepared: a new session is no part of any of them, and the sessions
    /// it forgets expired a day ago, so their callers cannot sign in. (An
    /// account issuing sessions all day would otherwise gather every
    /// caller's policies again after each.)
    pub fn issue_session(
        &self,
        kind: SessionKind,
        duration: i64,
        options: SessionOptions,
        now: i64,
        rng: &dyn ring::rand::SecureRandom,
    ) -> Result<Session, IamError> {
        self.apply(
            |state| state.issue_session(kind, duration, options, now, rng),
            false,
        )
    }

    /// [`Iam::mutate`]; `invalidates` says whether prepared callers may
    /// depend on what the change touches.
    fn apply<T>(
        &self,
        change: impl FnOnce(&mut IamState) -> Result<T, IamError>,
        invalidates: bool,
    ) -> Result<T, IamError> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        let out = change(&mut next)?;
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| IamError::new(IamErrorKind::ValidationError, e.to_string()))?;
        self.store.save(&bytes).map_err(|e| {
            IamError::new(
                IamErrorKind::ValidationError,
                format!("the change could not be stored: {e}"),
            )
        })?;
        *guard = next;
        if invalidates {
            self.generation.fetch_add(1, Ordering::Release);
        }
        Ok(out)
    }

    /// `HOST:SUBJECT` of a web-identity session, for the audit log.
    pub fn web_identity_of(&self, caller: &Caller) -> Option<String> {
        let id = caller.session.as_ref()?;
        let state = self.read();
        let web = state.sessions.get(id)?.web_identity.as_ref()?;
        Some(format!("{}:{}", web.key_prefix, web.subject))
    }

    /// The secret and the caller of an access key, checking the session token.
    /// The token is compared in constant time.
    pub fn resolve_key(
        &self,
        access_key_id: &str,
        security_token: Option<&str>,
        now: i64,
    ) -> Result<(Secret, Caller), CredentialError> {
        if access_key_id == self.root_key.id {
            if security_token.is_some() {
                return Err(CredentialError::InvalidSecurityToken);
            }
            return Ok((
                self.root_key.secret.clone(),
                Caller::long_term(self.root_key.principal.clone()),
            ));
        }
        let state = self.read();
        if let Some(key) = state.keys.get(access_key_id) {
            if security_token.is_some() {
                return Err(CredentialError::InvalidSecurityToken);
            }
            if key.status != KeyStatus::Active {
                return Err(CredentialError::Inactive);
            }
            let user = state
                .users
                .get(&key.user.to_ascii_lowercase())
                .ok_or(CredentialError::UnknownAccessKey)?;
            let principal = Principal::User {
                account: self.account.clone(),
                name: user.name.clone(),
                id: user.id.clone(),
                path: user.path.clone(),
            };
            return Ok((
                Secret::new(key.secret.clone()),
                Caller::long_term(principal),
            ));
        }
        if let Some(session) = state.sessions.get(access_key_id) {
            let token = security_token.ok_or(CredentialError::InvalidSecurityToken)?;
            if !bool::from(token.as_bytes().ct_eq(session.token.as_bytes())) {
                return Err(CredentialError::InvalidSecurityToken);
            }
            if now >= session.expiration {
                return Err(CredentialError::Expired);
            }
            let principal = match &session.kind {
                SessionKind::Root => self.root_key.principal.clone(),
                SessionKind::User { name } => {
                    let user = state
                        .users
                        .get(&name.to_ascii_lowercase())
                        .ok_or(CredentialError::UnknownAccessKey)?;
                    Principal::User {
                        account: self.account.clone(),
                        name: user.name.clone(),
                        id: user.id.clone(),
                        path: user.path.clone(),
                    }
                }
                SessionKind::Role {
                    role_name,
                    session_name,
                } => {
                    let role = state
                        .roles
                        .get(&role_name.to_ascii_lowercase())
                        .ok_or(CredentialError::UnknownAccessKey)?;
                    Principal::AssumedRole {
                        account: self.account.clone(),
                        role_name: role.name.clone(),
                        role_id: role.id.clone(),
                        role_path: role.path.clone(),
                        session_name: session_name.clone(),
                    }
                }
            };
            return Ok((
                Secret::new(session.secret.clone()),
                Caller {
                    principal,
                    session: Some(access_key_id.to_owned()),
                },
            ));
        }
        Err(CredentialError::UnknownAccessKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_policy::{ContextKeys, Decision};

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("123456789012").is_some());
        for bad in ["", "12345678901", "1234567890123", "12345678901a"] {
            assert!(AccountId::parse(bad).is_none(), "{bad}");
        }
    }

    struct MemoryStore(std::sync::Mutex<Option<Vec<u8>>>);

    impl StateStore for MemoryStore {
        fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
            *self.0.lock().unwrap() = Some(bytes.to_vec());
            Ok(())
        }
    }

    /// An account's IAM kept in memory, with its root key `AKIAROOTROOTROOTROOT`.
    fn memory_iam() -> (Iam, AccountId) {
        let account = AccountId::parse("123456789012").unwrap();
        let root = AccessKey {
            id: "AKIAROOTROOTROOTROOT".into(),
            secret: Secret::new("s".repeat(40)),
            principal: Principal::Root {
                account: account.clone(),
            },
            active: true,
        };
        let iam = Iam::open(root, Box::new(MemoryStore(Default::default()))).unwrap();
        (iam, account)
    }

    #[test]
    fn session_credentials_expire_and_need_their_exact_token() {
        let (iam, _) = memory_iam();
        let rng = ring::rand::SystemRandom::new();
        let session = iam
            .mutate(|s| {
                s.issue_session(
                    SessionKind::Root,
                    900,
                    SessionOptions::default(),
                    1_000,
                    &rng,
                )
            })
            .unwrap();
        let id = session.access_key_id.as_str();
        assert!(id.starts_with("ASIA"));
        let (_, caller) = iam.resolve_key(id, Some(&session.token), 1_899).unwrap();
        assert_eq!(caller.session.as_deref(), Some(id));
        assert_eq!(
            iam.resolve_key(id, Some(&session.token), 1_900)
                .unwrap_err(),
            CredentialError::Expired
        );
        let mut tampered = session.token.clone();
        tampered.replace_range(10..11, if &tampered[10..11] == "A" { "B" } else { "A" });
        assert_eq!(
            iam.resolve_key(id, Some(&tampered), 1_000).unwrap_err(),
            CredentialError::InvalidSecurityToken
        );
        assert_eq!(
            iam.resolve_key(id, None, 1_000).unwrap_err(),
            CredentialError::InvalidSecurityToken
        );
        assert_eq!(
            iam.resolve_key("AKIAROOTROOTROOTROOT", Some("x"), 1_000)
                .unwrap_err(),
            CredentialError::InvalidSecurityToken
        );
        assert_eq!(
            iam.resolve_key("ASIANOPE", Some("x"), 1_000).unwrap_err(),
            CredentialError::UnknownAccessKey
        );
    }

    #[test]
    fn decisions_follow_policy_changes_and_ask_for_service_keys_only_when_read() {
        let (iam, account) = memory_iam();
        let rng = ring::rand::SystemRandom::new();
        let user = iam
            .mutate(|s| {
                s.create_user("alice", None, Vec::new(), None, 0, &rng)
                    .cloned()
            })
            .unwrap();
        let caller = Caller::long_term(Principal::User {
            account,
            name: user.name.clone(),
            id: user.id.clone(),
            path: user.path.clone(),
        });
        let put = |document: &str| {
            iam.mutate(|s| s.put_inline_policy(state::Target::User("alice"), "p", document))
                .unwrap()
        };
        let asked = std::cell::Cell::new(0);
        let leading_key = |keys: &mut ContextKeys| {
            asked.set(asked.get() + 1);
            keys.set_multi("dynamodb:LeadingKeys", vec!["alice".into()]);
        };
        let lazy = [LazyKeys {
            prefix: "dynamodb:",
            add: &leading_key,
        }];
        let decide_as = |who: &Caller| {
            iam.authorize(
                who,
                AuthzRequest {
                    action: "dynamodb:GetItem",
                    resource: "arn:aws:dynamodb:us-east-1:123456789012:table/t",
                    keys: ContextKeys::new(),
                    lazy_keys: &lazy,
                },
            )
            .decision
        };
        let decide = || decide_as(&caller);
        assert_eq!(decide(), Decision::ImplicitDeny);
        put(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": "*"}}"#,
        );
        assert_eq!(decide(), Decision::Allow);
        assert_eq!(asked.get(), 0, "no policy reads dynamodb keys");
        // Only the caller's own partition, by a condition on the service's
        // key and the principal's: both must reach the evaluator.
        put(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": "*", "Condition": {
            "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": "${aws:username}"}}}}"#,
        );
        assert_eq!(decide(), Decision::Allow);
        assert_eq!(asked.get(), 1);
        put(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": "*", "Condition": {
            "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": "bob"}}}}"#,
        );
        assert_eq!(decide(), Decision::ImplicitDeny);
        iam.mutate(|s| s.delete_inline_policy(state::Target::User("alice"), "p"))
            .unwrap();
        assert_eq!(decide(), Decision::ImplicitDeny);
        // A session's caller is refused once the session is gone, even
        // though its decisions were prepared while it was there.
        put(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": "*"}}"#,
        );
        let session = iam
            .issue_session(
                SessionKind::User {
                    name: "alice".into(),
                },
                900,
                SessionOptions::default(),
                0,
                &rng,
            )
            .unwrap();
        let (_, session_caller) = iam
            .resolve_key(&session.access_key_id, Some(&session.token), 1)
            .unwrap();
        assert_eq!(decide_as(&session_caller), Decision::Allow);
        iam.apply(
            |s| {
                s.sessions.remove(&session.access_key_id);
                Ok(())
            },
            false,
        )
        .unwrap();
        assert_eq!(decide_as(&session_caller), Decision::ImplicitDeny);
        assert_eq!(decide_as(&caller), Decision::Allow);
        // Issuing a session keeps what was prepared; any other change does not.
        let generation = iam.generation.load(Ordering::SeqCst);
        let session = iam
            .issue_session(SessionKind::Root, 900, SessionOptions::default(), 0, &rng)
            .unwrap();
        assert!(iam.read().sessions.contains_key(&session.access_key_id));
        assert_eq!(iam.generation.load(Ordering::SeqCst), generation);
        iam.mutate(|s| {
            s.create_user("bob", None, Vec::new(), None, 0, &rng)
                .map(|_| ())
        })
        .unwrap();
        assert_eq!(iam.generation.load(Ordering::SeqCst), generation + 1);
    }

    #[test]
    fn principal_arns() {
        let account = AccountId::parse("123456789012").unwrap();
        let user = Principal::User {
            account: account.clone(),
            name: "alice".into(),
            id: "AIDAEXAMPLE".into(),
            path: "/team/".into(),
        };
        assert_eq!(user.arn(), "arn:aws:iam::123456789012:user/team/alice");
        let role = Principal::AssumedRole {
            account,
            role_name: "r".into(),
            role_id: "AROAEXAMPLE".into(),
            role_path: "/".into(),
            session_name: "s".into(),
        };
        assert_eq!(role.arn(), "arn:aws:sts::123456789012:assumed-role/r/s");
        assert_eq!(role.user_id(), "AROAEXAMPLE:s");
    }
}
