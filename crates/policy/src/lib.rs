//! The AWS IAM policy language: a parser that turns a JSON policy document
//! into an immutable, precompiled [`Policy`], and an evaluator ([`evaluate`])
//! that decides one request against the policies that apply to it, the way AWS
//! does (explicit deny, then allow from identity or resource policies, limited
//! by a permissions boundary and session policies).
//!
//! Parsing does the expensive work once: actions are lowercased, ARNs are
//! split into their six segments, wildcards and policy variables are compiled,
//! CIDRs, numbers and dates are converted. Evaluation then only compares, and
//! allocates only where a policy variable feeds a case-insensitive comparison.
//!
//! Architecture invariant: pure. No I/O, no HTTP, no clock reads (the caller
//! puts `aws:CurrentTime` in the [`ContextKeys`]), no randomness, no global
//! state. It depends on no other Moat crate: `iam` owns identities and decides
//! which policies apply; this crate only reads and applies them.
//!
//! API boundary: the types re-exported here are what `iam` and the services
//! call. [`PolicyError`]'s text is the message of AWS's
//! `MalformedPolicyDocument` error and is shown to clients as is.

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
    denial_message, evaluate, Decision, DenyReason, Evaluation, Named, PolicySet, StatementRef,
};

use arn::ArnPattern;
use condition::Condition;
use glob::Glob;
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
    actions: Matcher<Glob>,
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
