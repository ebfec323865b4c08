//! The one authorisation path: gathering a caller's policies and asking the evaluator.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use moat_policy::{
    evaluate, ContextKeys, Decision, Evaluation, Named, Policy, PolicySet, PrincipalInfo,
    PrincipalKind, RequestContext,
};

use crate::sessions::SessionKind;
use crate::state::{IamState, Role, Tag};
use crate::{Iam, Principal};

/// A verified caller: the principal and, for temporary credentials, the session's key id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub principal: Principal,
    pub session: Option<String>,
}

impl Caller {
    pub fn long_term(principal: Principal) -> Caller {
        Caller {
            principal,
            session: None,
        }
    }
}

/// What is being asked: the IAM action, the resource ARN, and the condition
/// keys the edge and the service supply (source address, time, TLS, service keys).
pub struct AuthzRequest<'a> {
    pub action: &'a str,
    pub resource: &'a str,
    pub keys: ContextKeys,
    /// Keys worked out only when one of the caller's policies may read a
    /// key of theirs (`Policy::may_read_keys`): the request's own (`aws:`)
    /// and the service's (`dynamodb:LeadingKeys`, ...). Working them out
    /// for a GetItem took longer than deciding it.
    pub lazy_keys: &'a [LazyKeys<'a>],
}

/// Condition keys that all start with `prefix`, added by `add` if needed.
pub struct LazyKeys<'a> {
    pub prefix: &'a str,
    pub add: &'a dyn Fn(&mut ContextKeys),
}

/// The prefix of an action's service's own condition keys: `dynamodb:` for
/// `dynamodb:GetItem`.
pub fn service_prefix(action: &str) -> &str {
    action.find(':').map_or(action, |colon| &action[..=colon])
}

/// All of an authorisation that depends on the caller and IAM's state but
/// not on the request: the caller's policies, its principal's condition
/// keys and how `Principal` elements see it. Gathered once per caller and
/// generation of the state; gathering formatted a dozen strings (policy
/// names, ARNs, tags) for every request.
pub(crate) struct Prepared {
    gathered: Gathered,
    info: PrincipalInfo,
    keys: Arc<ContextKeys>,
}

impl Prepared {
    /// The request's keys for evaluation: the service's where a policy may
    /// read them, and the caller's.
    fn keys(&self, request: AuthzRequest<'_>) -> ContextKeys {
        let mut keys = request.keys;
        let policies = (self.gathered.identity.iter())
            .chain(&self.gathered.boundary)
            .chain(&self.gathered.session);
        for lazy in request.lazy_keys {
            if policies.clone().any(|(p, _)| p.may_read_keys(lazy.prefix)) {
                (lazy.add)(&mut keys);
            }
        }
        keys.set_caller_keys(self.keys.clone());
        keys
    }
}

/// The prepared callers of one generation of IAM's state.
#[derive(Default)]
pub(crate) struct PreparedCallers {
    generation: u64,
    callers: HashMap<Caller, Arc<Prepared>>,
}

/// Callers prepared at most; more start the map afresh.
const MOST_PREPARED: usize = 4096;

/// A caller's policies, owned so that the evaluator can borrow them.
#[derive(Default)]
struct Gathered {
    identity: Vec<(Arc<Policy>, String)>,
    boundary: Option<(Arc<Policy>, String)>,
    session: Vec<(Arc<Policy>, String)>,
}

impl Gathered {
    fn set<'a>(&'a self, resource: &'a [(Arc<Policy>, String)]) -> PolicySet<'a> {
        let named = |(p, s): &'a (Arc<Policy>, String)| Named {
            policy: p.as_ref(),
            source: s.as_str(),
        };
        PolicySet {
            identity: self.identity.iter().map(named).collect(),
            boundary: self.boundary.as_ref().map(named),
            session: self.session.iter().map(named).collect(),
            resource: resource.iter().map(named).collect(),
        }
    }
}

fn allow() -> Evaluation {
    Evaluation {
        decision: Decision::Allow,
        reason: None,
        deciding: None,
    }
}

impl Iam {
    /// May `caller` perform `request.action` on `request.resource`?
    ///
    /// The account's root user may do everything in its account. Everyone else
    /// needs an allow from their identity policies, within their permissions
    /// boundary and session policies, and no explicit deny anywhere.
    pub fn authorize(&self, caller: &Caller, request: AuthzRequest<'_>) -> Evaluation {
        if matches!(caller.principal, Principal::Root { .. }) {
            return allow();
        }
        self.judge(caller, request, evaluate).unwrap_or(Evaluation {
            decision: Decision::ImplicitDeny,
            reason: Some(moat_policy::DenyReason::NoSessionAllow),
            deciding: None,
        })
    }

    /// Runs `judge` (the evaluator, or its explanation of a denial) on the
    /// caller's prepared policies and the request; `None` when the caller's
    /// session is gone.
    fn judge<T>(
        &self,
        caller: &Caller,
        request: AuthzRequest<'_>,
        judge: impl FnOnce(&PolicySet<'_>, &RequestContext<'_>) -> T,
    ) -> Option<T> {
        let prepared = self.prepared(caller)?;
        let (action, resource) = (request.action, request.resource);
        let keys = prepared.keys(request);
        let ctx = RequestContext {
            principal: &prepared.info,
            action,
            resource,
            keys: &keys,
        };
        Some(judge(&prepared.gathered.set(&[]), &ctx))
    }

    /// The caller's [`Prepared`] for the current state; `None` for a
    /// session that is no longer there (forgotten after it expired): its
    /// policies are unknown, so nothing is allowed.
    fn prepared(&self, caller: &Caller) -> Option<Arc<Prepared>> {
        let state = self.read();
        if let Some(id) = &caller.session {
            if !state.sessions.contains_key(id) {
                return None;
            }
        }
        // Read under the state's lock: no change is under way.
        let generation = self.generation.load(Ordering::Acquire);
        let cached = {
            let mut cache = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            if cache.generation != generation {
                cache.callers.clear();
                cache.generation = generation;
            }
            cache.callers.get(caller).cloned()
        };
        if let Some(prepared) = cached {
            return Some(prepared);
        }
        let (gathered, keys) = gather(&state, caller);
        let prepared = Arc::new(Prepared {
            gathered,
            info: principal_info(&state, &caller.principal),
            keys: Arc::new(keys),
        });
        let mut cache = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation == generation {
            if cache.callers.len() >= MOST_PREPARED {
                cache.callers.clear();
            }
            cache.callers.insert(caller.clone(), prepared.clone());
        }
        Some(prepared)
    }

    /// Why a request `authorize` refused without an explicit deny: the Allow
    /// statement that matched but whose condition failed, and the condition.
    /// Computed only for refusals, for the audit log.
    pub fn explain_denial(&self, caller: &Caller, request: AuthzRequest<'_>) -> Option<String> {
        if matches!(caller.principal, Principal::Root { .. }) {
            return None;
        }
        self.judge(caller, request, moat_policy::failed_condition)
            .flatten()
    }

    /// May `caller` assume `role`? The role's trust policy must allow the
    /// caller. Where it names the caller itself, that is enough; where it
    /// names only the account, the caller's own policies must also allow
    /// `sts:AssumeRole` on the role, as in AWS. An explicit deny anywhere wins.
    pub fn authorize_assume_role(
        &self,
        caller: &Caller,
        role: &Role,
        action: &str,
        mut keys: ContextKeys,
    ) -> Evaluation {
        let state = self.read();
        let role_arn = state.role_arn(role);
        let info = principal_info(&state, &caller.principal);
        let gathered = match caller.principal {
            Principal::Root { .. } => Gathered::default(),
            _ => gather_under(&state, caller, &mut keys),
        };
        let trust = match role.trust.policy() {
            Some(p) => vec![(p.clone(), format!("{role_arn} trust policy"))],
            None => return denied_no_resource(),
        };
        let ctx = RequestContext {
            principal: &info,
            action,
            resource: &role_arn,
            keys: &keys,
        };
        let only_trust = Gathered::default();
        let trust_eval = evaluate(&only_trust.set(&trust), &ctx);
        if trust_eval.decision != Decision::Allow {
            return trust_eval;
        }
        let identity_eval = evaluate(&gathered.set(&[]), &ctx);
        if identity_eval.decision == Decision::ExplicitDeny {
            return identity_eval;
        }
        if matches!(caller.principal, Principal::Root { .. }) {
            return trust_eval;
        }
        // Does the trust policy name the caller itself? Evaluate it as if the
        // caller belonged to no account: only a match on its own ARN survives.
        let detached = PrincipalInfo {
            account: "000000000000".to_owned(),
            ..principal_info(&state, &caller.principal)
        };
        let named_ctx = RequestContext {
            principal: &detached,
            ..ctx
        };
        if evaluate(&only_trust.set(&trust), &named_ctx).decision == Decision::Allow {
            return trust_eval;
        }
        identity_eval
    }

    /// May a web identity from `provider` with these claims assume `role`? Only
    /// the trust policy decides, with the provider's condition keys.
    pub fn authorize_web_identity(
        &self,
        role: &Role,
        provider_host: &str,
        provider_arn: &str,
        keys: &ContextKeys,
    ) -> Evaluation {
        let state = self.read();
        let role_arn = state.role_arn(role);
        let trust = match role.trust.policy() {
            Some(p) => vec![(p.clone(), format!("{role_arn} trust policy"))],
            None => return denied_no_resource(),
        };
        let info = PrincipalInfo {
            arn: provider_arn.to_owned(),
            account: state.account.clone(),
            kind: PrincipalKind::Federated {
                provider: provider_host.to_owned(),
                provider_arn: Some(provider_arn.to_owned()),
            },
        };
        let ctx = RequestContext {
            principal: &info,
            action: "sts:AssumeRoleWithWebIdentity",
            resource: &role_arn,
            keys,
        };
        evaluate(&Gathered::default().set(&trust), &ctx)
    }

    /// Evaluates policy documents given directly (`SimulateCustomPolicy`), or a
    /// principal's own policies plus extra ones (`SimulatePrincipalPolicy`).
    pub fn simulate(
        &self,
        caller: Option<&Caller>,
        extra_identity: &[Arc<Policy>],
        boundaries: &[Arc<Policy>],
        action: &str,
        resource: &str,
        mut keys: ContextKeys,
    ) -> Evaluation {
        let state = self.read();
        let mut gathered = match caller {
            Some(c) if matches!(c.principal, Principal::Root { .. }) => return allow(),
            Some(c) => gather_under(&state, c, &mut keys),
            None => Gathered::default(),
        };
        for (i, p) in extra_identity.iter().enumerate() {
            gathered
                .identity
                .push((p.clone(), format!("PolicyInputList.{}", i + 1)));
        }
        if let Some(b) = boundaries.first() {
            gathered.boundary =
                Some((b.clone(), "PermissionsBoundaryPolicyInputList.1".to_owned()));
        }
        let info = match caller {
            Some(c) => principal_info(&state, &c.principal),
            None => PrincipalInfo {
                arn: format!("arn:aws:iam::{}:user/simulated", state.account),
                account: state.account.clone(),
                kind: PrincipalKind::Aws,
            },
        };
        let ctx = RequestContext {
            principal: &info,
            action,
            resource,
            keys: &keys,
        };
        evaluate(&gathered.set(&[]), &ctx)
    }
}

fn denied_no_resource() -> Evaluation {
    Evaluation {
        decision: Decision::ImplicitDeny,
        reason: Some(moat_policy::DenyReason::NoResourceAllow),
        deciding: None,
    }
}

fn principal_info(state: &IamState, principal: &Principal) -> PrincipalInfo {
    PrincipalInfo {
        arn: principal.arn(),
        account: state.account.clone(),
        kind: PrincipalKind::Aws,
    }
}

/// [`gather`] for one decision: the principal's keys go on `keys`.
fn gather_under(state: &IamState, caller: &Caller, keys: &mut ContextKeys) -> Gathered {
    let (gathered, caller_keys) = gather(state, caller);
    keys.set_caller_keys(Arc::new(caller_keys));
    gathered
}

/// Collects a caller's policies and its principal's condition keys.
fn gather(state: &IamState, caller: &Caller) -> (Gathered, ContextKeys) {
    let mut out = Gathered::default();
    let mut keys = ContextKeys::new();
    let session = caller
        .session
        .as_ref()
        .and_then(|id| state.sessions.get(id));
    keys.set("aws:PrincipalAccount", state.account.clone());
    keys.set("aws:userid", caller.principal.user_id());
    let mut tags: Vec<Tag> = Vec::new();
    match &caller.principal {
        Principal::Root { account } => {
            keys.set("aws:PrincipalArn", format!("arn:aws:iam::{account}:root"));
            keys.set("aws:PrincipalType", "Account");
        }
        Principal::User { name, .. } => {
            keys.set("aws:PrincipalArn", caller.principal.arn());
            keys.set("aws:PrincipalType", "User");
            keys.set("aws:username", name.clone());
            if let Ok(user) = state.user(name) {
                for (policy, doc) in &user.inline {
                    push(
                        &mut out.identity,
                        doc.policy(),
                        format!("user/{} inline policy {policy}", user.name),
                    );
                }
                for arn in &user.attached {
                    push_managed(state, &mut out.identity, arn);
                }
                for group in &user.groups {
                    if let Ok(g) = state.group(group) {
                        for (policy, doc) in &g.inline {
                            push(
                                &mut out.identity,
                                doc.policy(),
                                format!("group/{} inline policy {policy}", g.name),
                            );
                        }
                        for arn in &g.attached {
                            push_managed(state, &mut out.identity, arn);
                        }
                    }
                }
                if let Some(b) = &user.boundary {
                    out.boundary = managed_default(state, b);
                }
                tags.extend(user.tags.iter().cloned());
            }
        }
        Principal::AssumedRole { role_name, .. } => {
            keys.set("aws:PrincipalType", "AssumedRole");
            if let Ok(role) = state.role(role_name) {
                keys.set("aws:PrincipalArn", state.role_arn(role));
                for (policy, doc) in &role.inline {
                    push(
                        &mut out.identity,
                        doc.policy(),
                        format!("role/{} inline policy {policy}", role.name),
                    );
                }
                for arn in &role.attached {
                    push_managed(state, &mut out.identity, arn);
                }
                if let Some(b) = &role.boundary {
                    out.boundary = managed_default(state, b);
                }
                tags.extend(role.tags.iter().cloned());
            }
        }
    }
    if let Some(s) = session {
        if let Some(doc) = &s.policy {
            push(&mut out.session, doc.policy(), "session policy".to_owned());
        }
        for arn in &s.policy_arns {
            push_managed(state, &mut out.session, arn);
        }
        // Session tags override the principal's tags of the same key.
        for t in &s.tags {
            tags.retain(|e| !e.key.eq_ignore_ascii_case(&t.key));
            tags.push(t.clone());
        }
        if let Some(web) = &s.web_identity {
            for (k, v) in &web.keys {
                keys.set_multi(k, v.clone());
            }
        }
        if matches!(s.kind, SessionKind::Root | SessionKind::User { .. }) {
            keys.set("aws:MultiFactorAuthPresent", "false");
        }
    }
    for t in tags {
        keys.set(&format!("aws:PrincipalTag/{}", t.key), t.value);
    }
    (out, keys)
}

fn push(into: &mut Vec<(Arc<Policy>, String)>, policy: Option<&Arc<Policy>>, source: String) {
    if let Some(p) = policy {
        into.push((p.clone(), source));
    }
}

fn push_managed(state: &IamState, into: &mut Vec<(Arc<Policy>, String)>, arn: &str) {
    if let Some(found) = managed_default(state, arn) {
        into.push(found);
    }
}

fn managed_default(state: &IamState, arn: &str) -> Option<(Arc<Policy>, String)> {
    let policy = state.policies.get(arn)?;
    let doc = policy.default_document()?;
    doc.policy().map(|p| (p.clone(), arn.to_owned()))
}
