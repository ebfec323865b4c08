//! The AWS IAM policy language: a parser that turns a JSON policy document
//! into an immutable, precompiled [`Policy`], and an evaluator ([`evaluate`])
//! that decides one request against the policies that bear on it the way AWS
//! does: an explicit deny anywhere wins; otherwise an identity or
//! resource-based allow is needed, limited by a permissions boundary and by
//! session policies.
//!
//! ```
//! use moat_policy::*;
//!
//! let policy = Policy::parse(
//!     r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
//!         "Action": "dynamodb:Get*",
//!         "Resource": "arn:aws:dynamodb:*:123456789012:table/${aws:username}-*"}}"#,
//!     PolicyKind::Identity,
//! )?;
//! let alice = PrincipalInfo {
//!     arn: "arn:aws:iam::123456789012:user/alice".into(),
//!     account: "123456789012".into(),
//!     kind: PrincipalKind::Aws,
//! };
//! let mut keys = ContextKeys::new();
//! keys.set("aws:username", "alice");
//! let set = PolicySet {
//!     identity: vec![Named { policy: &policy, source: "user/alice inline orders" }],
//!     ..PolicySet::default()
//! };
//! let ctx = RequestContext {
//!     principal: &alice,
//!     action: "dynamodb:GetItem",
//!     resource: "arn:aws:dynamodb:us-east-1:123456789012:table/alice-orders",
//!     keys: &keys,
//! };
//! assert_eq!(evaluate(&set, &ctx).decision, Decision::Allow);
//! # Ok::<(), PolicyError>(())
//! ```
//!
//! Parsing does the expensive work once: actions are lowercased and indexed
//! by service, ARNs are split into their six segments, wildcards and policy
//! variables are compiled, CIDRs, numbers, dates and base64 are converted.
//! Evaluation then only compares; it allocates only to lowercase the request's
//! action, to name the deciding statement, and where a policy variable feeds a
//! case-insensitive comparison.
//!
//! Where AWS leaves a case open, this crate decides as follows (each choice is
//! explained where it is made):
//! - a condition operator without `ForAllValues:`/`ForAnyValue:` on a key with
//!   several values is true when any value matches (negated operators: when
//!   none does);
//! - a policy variable without a value and without a default makes that
//!   `Resource` entry or condition value match nothing (so a negated operator
//!   over it is true); multivalued keys have no value as variables;
//! - an empty list of context values counts as a missing key, except for the
//!   set qualifiers, which follow AWS's empty-set rules.
//!
//! Architecture invariant: pure. No I/O, no HTTP, no clock reads (the caller
//! puts `aws:CurrentTime` in the [`ContextKeys`]), no randomness, no global
//! state. It depends on no other Moat crate: `iam` owns identities and decides
//! which policies apply; this crate only reads and applies them.
//!
//! API boundary: the types re-exported here are what `iam` and the services
//! call. [`PolicyError`]'s text is the message of AWS's
//! `MalformedPolicyDocument` error and is shown to clients as is.

mod action;
mod arn;
mod condition;
mod context;
mod eval;
mod glob;
mod parse;
mod principal;
mod scalar;
mod template;

pub use context::{ContextKeys, PrincipalInfo, PrincipalKind, RequestContext};
pub use eval::{
    denial_message, evaluate, failed_condition, Decision, DenyReason, Evaluation, Named, PolicySet,
    StatementRef,
};

use action::{ActionIndex, ActionPattern};
use arn::ArnPattern;
use condition::Condition;
use principal::PrincipalClause;

/// Which kind of document is being parsed. Trust and resource policies name
/// who they apply to in `Principal`; identity policies apply to the identity
/// they are attached to and must not have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Attached to a user, group or role (inline or managed), also used for
    /// permissions boundaries and session policies.
    Identity,
    /// A role's trust policy (`AssumeRolePolicyDocument`): `Principal`
    /// required, `Resource` prohibited (the resource is the role itself).
    Trust,
    /// A resource-based policy (a bucket, queue or key policy): `Principal`
    /// and `Resource` required.
    Resource,
}

/// The policy language version named by the document's `Version` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyVersion {
    /// `2012-10-17`: the current language, with policy variables.
    V2012_10_17,
    /// `2008-10-17`, and the version of a document without `Version` (as on
    /// AWS): `${...}` is literal text.
    V2008_10_17,
}

impl PolicyVersion {
    /// The text of the `Version` element.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::V2012_10_17 => "2012-10-17",
            PolicyVersion::V2008_10_17 => "2008-10-17",
        }
    }
}

/// Why a policy document was rejected. The text is the message of AWS's
/// `MalformedPolicyDocument` error, e.g. "Missing required field Effect".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyError {
    pub(crate) fn new(message: impl Into<String>) -> PolicyError {
        PolicyError(message.into())
    }
}

/// A parsed, validated policy document. Immutable, cheap to evaluate, and
/// shareable between threads.
#[derive(Debug, Clone)]
pub struct Policy {
    version: PolicyVersion,
    kind: PolicyKind,
    id: Option<String>,
    statements: Vec<Statement>,
    index: ActionIndex,
    /// See [`Policy::may_read_keys`].
    keys_read: Box<[Box<str>]>,
}

impl Policy {
    /// Parses and validates a policy document of the given kind.
    ///
    /// The caller enforces size limits (6,144 characters for a managed policy,
    /// 2,048 for a user's inline policies, ...); this function accepts any size
    /// and rejects nesting deeper than the JSON parser's limit without
    /// overflowing the stack.
    pub fn parse(json: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        parse::parse_policy(json, kind)
    }

    /// The language version; a document without `Version` is 2008-10-17.
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The kind the document was parsed as.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The optional top-level `Id` element.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The statements, in document order (a single statement object is a list
    /// of one).
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Whether the policy may read a context key that starts with `prefix`
    /// (e.g. `dynamodb:`, in any case), in a condition or as a variable. A
    /// service works out its own condition keys only for callers whose
    /// policies may read them. Errs towards yes: it is answered from every
    /// colon-bearing object key and every `${...}` in the document.
    pub fn may_read_keys(&self, prefix: &str) -> bool {
        self.keys_read.iter().any(|key| {
            key.as_bytes()
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
        })
    }
}

/// Whether a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

/// One compiled statement of a policy.
#[derive(Debug, Clone)]
pub struct Statement {
    sid: Option<String>,
    effect: Effect,
    /// `Principal` or `NotPrincipal`; absent in identity policies, where the
    /// statement applies to whoever the policy is attached to.
    principal: Option<PrincipalClause>,
    /// `Action` (`negated == false`) or `NotAction`.
    actions: Matcher<ActionPattern>,
    /// `Resource` or `NotResource`; absent in trust policies, where the
    /// resource is the role the policy belongs to.
    resources: Option<Matcher<ArnPattern>>,
    /// Every condition must hold (AND across operators and keys).
    conditions: Vec<Condition>,
}

impl Statement {
    /// The statement's `Sid`, if it has one.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// Allow or Deny.
    pub fn effect(&self) -> Effect {
        self.effect
    }
}

/// A list of patterns from `Action`/`Resource` (any one matching) or their
/// `Not...` form (none matching).
#[derive(Debug, Clone)]
struct Matcher<P> {
    negated: bool,
    patterns: Vec<P>,
}
