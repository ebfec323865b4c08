//! The decision: which policies apply to a request and how they combine.

use std::fmt;

use crate::action::{self, RequestAction};
use crate::arn;
use crate::context::RequestContext;
use crate::{Effect, Policy, Statement};

/// A policy plus where it came from, for the audit line and messages.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub policy: &'a Policy,
    /// e.g. `arn:aws:iam::123456789012:policy/orders-rw` or
    /// `user/alice inline orders`.
    pub source: &'a str,
}

/// Every policy that bears on one request.
#[derive(Debug, Clone, Default)]
pub struct PolicySet<'a> {
    /// The user's inline and managed policies and its groups', or the role's.
    pub identity: Vec<Named<'a>>,
    /// The permissions boundary, if one is set: effective permissions are
    /// the intersection of identity policies and the boundary.
    pub boundary: Option<Named<'a>>,
    /// Session policies (AssumeRole's `Policy` and `PolicyArns`), if any were
    /// passed: effective permissions are further intersected with their union.
    pub session: Vec<Named<'a>>,
    /// Resource-based policies, e.g. a role's trust policy when deciding
    /// `sts:AssumeRole*`. Parse them as [`PolicyKind::Trust`] or
    /// [`PolicyKind::Resource`]: their statements then name whom they apply
    /// to, while a statement without `Principal` would apply to everyone.
    ///
    /// [`PolicyKind::Trust`]: crate::PolicyKind::Trust
    /// [`PolicyKind::Resource`]: crate::PolicyKind::Resource
    pub resource: Vec<Named<'a>>,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// Nothing allowed the request (the default).
    ImplicitDeny,
    /// A statement denied it.
    ExplicitDeny,
}

/// Why a request was denied: the policy type that denied it, or that failed
/// to allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    ExplicitIdentity,
    ExplicitResource,
    ExplicitBoundary,
    ExplicitSession,
    NoIdentityAllow,
    NoBoundaryAllow,
    NoSessionAllow,
    NoResourceAllow,
}

/// The statement that decided, for the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    /// The [`Named::source`] of its policy.
    pub source: String,
    pub sid: Option<String>,
    /// Its position in the policy's statement list, from 0.
    pub index: usize,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sid {
            Some(sid) => write!(f, "{} statement {} ({sid})", self.source, self.index),
            None => write!(f, "{} statement {}", self.source, self.index),
        }
    }
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    /// Set for both kinds of deny, `None` for Allow.
    pub reason: Option<DenyReason>,
    /// The Deny statement that matched, or the Allow statement that granted;
    /// `None` for an implicit deny.
    pub deciding: Option<StatementRef>,
}

impl Evaluation {
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// Decides one request, as AWS does within one account:
///
/// 1. a matching Deny statement in any policy (identity, boundary, session,
///    resource; checked in that order) is an explicit deny;
/// 2. otherwise the request is allowed when
///    `(identity_allows || resource_allows) && boundary_ok && session_ok`,
///    where `resource_allows` needs a statement whose `Principal` names the
///    caller, `boundary_ok` is "no boundary, or the boundary allows", and
///    `session_ok` is "no session policy, or one of them allows". A trust
///    policy passed as the resource policy with no identity policies thus
///    decides `sts:AssumeRole*` alone;
/// 3. otherwise it is an implicit deny, and the reason names the first of
///    those terms that failed.
///
/// This is deliberately simpler than AWS's full logic, in which a
/// resource-based policy naming a user or a role session directly is not
/// limited by the boundary or by session policies; Moat applies both limits
/// to every grant. Cross-account requests and organisation policies are out
/// of scope, and root is decided by the caller before asking.
pub fn evaluate(set: &PolicySet<'_>, ctx: &RequestContext<'_>) -> Evaluation {
    let action = action::lowercase(ctx.action);
    let ctx = &Prepared {
        ctx,
        action: RequestAction::new(&action),
        resource: arn::split(ctx.resource),
    };
    // Each group is scanned once: Deny statements are checked all the way
    // through, Allow statements only until the group's first match.
    let identity = match scan(&set.identity, ctx) {
        Scan::Denied(at) => return denied(DenyReason::ExplicitIdentity, at),
        Scan::Allowed(at) => Some(at),
        Scan::Neither => None,
    };
    let boundary = match set
        .boundary
        .as_ref()
        .map(|b| scan(std::slice::from_ref(b), ctx))
    {
        Some(Scan::Denied(at)) => return denied(DenyReason::ExplicitBoundary, at),
        Some(Scan::Neither) => Some(false),
        Some(Scan::Allowed(_)) => Some(true),
        None => None,
    };
    let session = match scan(&set.session, ctx) {
        Scan::Denied(at) => return denied(DenyReason::ExplicitSession, at),
        Scan::Allowed(_) => Some(true),
        Scan::Neither => (!set.session.is_empty()).then_some(false),
    };
    let resource = match scan(&set.resource, ctx) {
        Scan::Denied(at) => return denied(DenyReason::ExplicitResource, at),
        Scan::Allowed(at) => Some(at),
        Scan::Neither => None,
    };

    let Some(grant) = identity.or(resource) else {
        let reason = if set.identity.is_empty() && !set.resource.is_empty() {
            DenyReason::NoResourceAllow
        } else {
            DenyReason::NoIdentityAllow
        };
        return implicit(reason);
    };
    if boundary == Some(false) {
        return implicit(DenyReason::NoBoundaryAllow);
    }
    if session == Some(false) {
        return implicit(DenyReason::NoSessionAllow);
    }
    Evaluation {
        decision: Decision::Allow,
        reason: None,
        deciding: Some(grant.to_ref()),
    }
}

/// AWS's wording of an access-denied message, e.g. "User:
/// arn:aws:iam::123456789012:user/alice is not authorized to perform:
/// dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/Orders
/// because no identity-based policy allows the dynamodb:GetItem action".
pub fn denial_message(
    principal_arn: &str,
    action: &str,
    resource: &str,
    evaluation: &Evaluation,
) -> String {
    if evaluation.decision == Decision::Allow {
        return format!(
            "User: {principal_arn} is authorized to perform: {action} on resource: {resource}"
        );
    }
    let head = format!(
        "User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
    );
    let because_no = |what: &str| format!("{head} because no {what} allows the {action} action");
    let explicit = |what: &str| format!("{head} with an explicit deny in {what}");
    match evaluation.reason {
        Some(DenyReason::ExplicitIdentity) => explicit("an identity-based policy"),
        Some(DenyReason::ExplicitResource) => explicit("a resource-based policy"),
        Some(DenyReason::ExplicitBoundary) => explicit("a permissions boundary"),
        Some(DenyReason::ExplicitSession) => explicit("a session policy"),
        Some(DenyReason::NoIdentityAllow) => because_no("identity-based policy"),
        Some(DenyReason::NoBoundaryAllow) => because_no("permissions boundary"),
        Some(DenyReason::NoSessionAllow) => because_no("session policy"),
        Some(DenyReason::NoResourceAllow) => because_no("resource-based policy"),
        None => head,
    }
}

/// Why an implicit deny happened, when an Allow statement matched the action,
/// the resource and the principal but one of its conditions was false: that
/// statement and the condition, e.g. `arn:...:policy/p (Sid Own): the
/// condition ForAllValues on dynamodb:leadingkeys is false`. Only called on
/// the way to a refusal, so it costs nothing on allowed requests.
pub fn failed_condition(set: &PolicySet<'_>, ctx: &RequestContext<'_>) -> Option<String> {
    let action = action::lowercase(ctx.action);
    let prepared = Prepared {
        ctx,
        action: RequestAction::new(&action),
        resource: arn::split(ctx.resource),
    };
    let groups = [&set.identity[..], &set.session[..], &set.resource[..]];
    for named in groups.into_iter().flatten().chain(set.boundary.iter()) {
        for index in named.policy.index.candidates(&prepared.action) {
            let Some(statement) = named.policy.statements.get(index) else {
                continue;
            };
            if statement.effect != Effect::Allow || !statement.applies_before_conditions(&prepared)
            {
                continue;
            }
            if let Some(c) = statement.conditions.iter().find(|c| !c.holds(ctx.keys)) {
                let at = match &statement.sid {
                    Some(sid) => format!("{} (Sid {sid})", named.source),
                    None => format!("{} (statement {})", named.source, index + 1),
                };
                return Some(format!("{at}: the condition {} is false", c.describe()));
            }
        }
    }
    None
}

/// A matching statement, by position.
#[derive(Clone, Copy)]
struct Hit<'s> {
    source: &'s str,
    statement: &'s Statement,
    index: usize,
}

impl Hit<'_> {
    fn to_ref(self) -> StatementRef {
        StatementRef {
            source: self.source.to_owned(),
            sid: self.statement.sid.clone(),
            index: self.index,
        }
    }
}

enum Scan<'s> {
    Denied(Hit<'s>),
    Allowed(Hit<'s>),
    Neither,
}

/// The request with what every statement needs split once.
struct Prepared<'a> {
    ctx: &'a RequestContext<'a>,
    action: RequestAction<'a>,
    resource: Option<[&'a str; 6]>,
}

fn scan<'s>(policies: &[Named<'s>], ctx: &Prepared<'_>) -> Scan<'s> {
    let mut allowed = None;
    for named in policies {
        let statements = &named.policy.statements;
        for index in named.policy.index.candidates(&ctx.action) {
            let Some(statement) = statements.get(index) else {
                continue;
            };
            if statement.effect == Effect::Allow && allowed.is_some() {
                continue;
            }
            if !statement.applies(ctx) {
                continue;
            }
            let hit = Hit {
                source: named.source,
                statement,
                index,
            };
            match statement.effect {
                Effect::Deny => return Scan::Denied(hit),
                Effect::Allow => allowed = Some(hit),
            }
        }
    }
    match allowed {
        Some(hit) => Scan::Allowed(hit),
        None => Scan::Neither,
    }
}

fn denied(reason: DenyReason, at: Hit<'_>) -> Evaluation {
    Evaluation {
        decision: Decision::ExplicitDeny,
        reason: Some(reason),
        deciding: Some(at.to_ref()),
    }
}

fn implicit(reason: DenyReason) -> Evaluation {
    Evaluation {
        decision: Decision::ImplicitDeny,
        reason: Some(reason),
        deciding: None,
    }
}

impl Statement {
    /// Whether the statement applies to the request, whatever its effect.
    /// Cheapest and most selective tests first: action, resource, principal,
    /// then conditions.
    fn applies(&self, req: &Prepared<'_>) -> bool {
        self.applies_before_conditions(req) && self.conditions.iter().all(|c| c.holds(req.ctx.keys))
    }

    /// Action, resource and principal match (conditions not considered).
    fn applies_before_conditions(&self, req: &Prepared<'_>) -> bool {
        let keys = req.ctx.keys;
        let action = self.actions.patterns.iter().any(|p| p.matches(&req.action));
        if action == self.actions.negated {
            return false;
        }
        if let Some(resources) = &self.resources {
            let hit = resources
                .patterns
                .iter()
                .any(|p| p.matches_split(req.resource.as_ref(), keys));
            if hit == resources.negated {
                return false;
            }
        }
        if let Some(principal) = &self.principal {
            if !principal.matches(req.ctx.principal) {
                return false;
            }
        }
        true
    }
}
