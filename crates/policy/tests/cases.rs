//! Evaluator and parser cases kept as data.
//!
//! `tests/cases/*.json` each hold a list of evaluator cases:
//!
//! ```json
//! { "name": "unique name",
//!   "identity": [POLICY, ...], "boundary": POLICY, "session": [POLICY, ...],
//!   "resource": [POLICY, ...],
//!   "request": { "principal": PRINCIPAL, "action": "...", "resource": "...",
//!                "keys": { "aws:username": "alice", "dynamodb:LeadingKeys": ["a", "b"] } },
//!   "expect": "Allow" | "ImplicitDeny" | "ExplicitDeny",
//!   "reason": "NoIdentityAllow" (optional), "deciding_sid": "Sid" (optional) }
//! ```
//!
//! A POLICY is a whole document (an object with `Statement`), a list of
//! statements or a single statement (wrapped in a 2012-10-17 document), or
//! `{"kind": "Trust", "document": POLICY}` to choose the kind. Identity,
//! boundary and session policies default to kind Identity, resource policies
//! to kind Resource. The request defaults to alice
//! (`arn:aws:iam::123456789012:user/alice`, kind Aws), `dynamodb:GetItem` and
//! the table `Orders`. A PRINCIPAL is an ARN string (kind Aws, account taken
//! from the ARN) or `{"arn", "account", "kind"}` where kind is `"Aws"`,
//! `"Anonymous"`, `{"Federated": "host"}`, `{"Federated": {"provider",
//! "provider_arn"}}` or `{"Service": "name"}`.
//!
//! `tests/parse_cases.json` holds parser cases: a `policy` (JSON) or `text`
//! (raw), a `kind`, and either `"ok": true` or `"error": "message substring"`.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use moat_policy::{
    denial_message, evaluate, ContextKeys, Decision, DenyReason, Named, Policy, PolicyKind,
    PolicySet, PolicyVersion, PrincipalInfo, PrincipalKind, RequestContext,
};
use serde_json::{json, Value};

const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const ORDERS: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders";

#[test]
fn evaluator_cases() {
    let dir = Path::new(&manifest_dir()).join("tests/cases");
    let mut files: Vec<_> = must_read_dir(&dir);
    files.sort();
    let mut names = HashSet::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in &files {
        let text = fs::read_to_string(file).expect("read case file");
        let cases: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", file.display()));
        let cases = cases.as_array().expect("a case file is a JSON list");
        for case in cases {
            total += 1;
            let name = case["name"].as_str().expect("case name").to_owned();
            assert!(names.insert(name.clone()), "duplicate case name {name}");
            if let Err(why) = run_case(case) {
                failures.push(format!("{} / {name}: {why}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 150, "only {total} evaluator cases");
}

#[test]
fn parse_cases() {
    let path = Path::new(&manifest_dir()).join("tests/parse_cases.json");
    let text = fs::read_to_string(path).expect("read parse cases");
    let cases: Value = serde_json::from_str(&text).expect("parse cases are JSON");
    let cases = cases.as_array().expect("a list");
    let mut failures = Vec::new();
    let mut names = HashSet::new();
    for case in cases {
        let name = case["name"].as_str().expect("case name");
        assert!(names.insert(name), "duplicate case name {name}");
        let kind = must_kind(case.get("kind"), PolicyKind::Identity);
        let doc = match (case.get("text"), case.get("policy")) {
            (Some(Value::String(t)), _) => t.clone(),
            (_, Some(p)) => p.to_string(),
            _ => panic!("{name}: needs text or policy"),
        };
        let result = Policy::parse(&doc, kind);
        match (case.get("error"), result) {
            (Some(Value::String(want)), Err(e)) if e.0.contains(want.as_str()) => {}
            (Some(Value::String(want)), Err(e)) => {
                failures.push(format!("{name}: error {:?} lacks {want:?}", e.0))
            }
            (Some(Value::String(_)), Ok(_)) => {
                failures.push(format!("{name}: parsed, expected an error"))
            }
            (None, Err(e)) => failures.push(format!("{name}: unexpected error {:?}", e.0)),
            (Some(other), _) => {
                failures.push(format!("{name}: error must be a string, not {other}"))
            }
            (None, Ok(policy)) => {
                if let Some(Value::String(v)) = case.get("version") {
                    let got = policy.version().as_str();
                    if got != v {
                        failures.push(format!("{name}: version {got}, want {v}"));
                    }
                }
                if let Some(n) = case.get("statements").and_then(Value::as_u64) {
                    if policy.statements().len() as u64 != n {
                        failures.push(format!("{name}: {} statements", policy.statements().len()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 30, "only {} parse cases", cases.len());
}

#[test]
fn denial_messages_use_aws_wording() {
    let head = format!(
        "User: {ALICE} is not authorized to perform: dynamodb:GetItem on resource: {ORDERS}"
    );
    let cases = [
        (
            DenyReason::NoIdentityAllow,
            " because no identity-based policy allows the dynamodb:GetItem action",
        ),
        (
            DenyReason::NoBoundaryAllow,
            " because no permissions boundary allows the dynamodb:GetItem action",
        ),
        (
            DenyReason::NoSessionAllow,
            " because no session policy allows the dynamodb:GetItem action",
        ),
        (
            DenyReason::NoResourceAllow,
            " because no resource-based policy allows the dynamodb:GetItem action",
        ),
        (
            DenyReason::ExplicitIdentity,
            " with an explicit deny in an identity-based policy",
        ),
        (
            DenyReason::ExplicitBoundary,
            " with an explicit deny in a permissions boundary",
        ),
        (
            DenyReason::ExplicitSession,
            " with an explicit deny in a session policy",
        ),
        (
            DenyReason::ExplicitResource,
            " with an explicit deny in a resource-based policy",
        ),
    ];
    for (reason, tail) in cases {
        let decision = if format!("{reason:?}").starts_with("Explicit") {
            Decision::ExplicitDeny
        } else {
            Decision::ImplicitDeny
        };
        let evaluation = moat_policy::Evaluation {
            decision,
            reason: Some(reason),
            deciding: None,
        };
        assert_eq!(
            denial_message(ALICE, "dynamodb:GetItem", ORDERS, &evaluation),
            format!("{head}{tail}")
        );
    }
}

#[test]
fn deciding_statement_is_reported() {
    let allow = must_parse(
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Other", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "ReadOrders", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": ORDERS}
        ]}),
        PolicyKind::Identity,
    );
    let deny = must_parse(
        json!({"Version": "2012-10-17", "Statement":
            {"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}}),
        PolicyKind::Identity,
    );
    let principal = alice();
    let mut keys = ContextKeys::new();
    keys.set("aws:SecureTransport", "true");
    let ctx = RequestContext {
        principal: &principal,
        action: "dynamodb:GetItem",
        resource: ORDERS,
        keys: &keys,
    };
    let set = PolicySet {
        identity: vec![
            Named {
                policy: &deny,
                source: "arn:aws:iam::123456789012:policy/tls-only",
            },
            Named {
                policy: &allow,
                source: "user/alice inline orders",
            },
        ],
        ..PolicySet::default()
    };
    let e = evaluate(&set, &ctx);
    assert_eq!(e.decision, Decision::Allow);
    let at = e.deciding.expect("deciding statement");
    assert_eq!(at.source, "user/alice inline orders");
    assert_eq!(at.sid.as_deref(), Some("ReadOrders"));
    assert_eq!(at.index, 1);

    let mut plain_http = ContextKeys::new();
    plain_http.set("aws:SecureTransport", "false");
    let ctx = RequestContext {
        keys: &plain_http,
        ..ctx
    };
    let e = evaluate(&set, &ctx);
    assert_eq!(e.decision, Decision::ExplicitDeny);
    assert_eq!(e.reason, Some(DenyReason::ExplicitIdentity));
    let at = e.deciding.clone().expect("deciding statement");
    assert_eq!(
        (at.source.as_str(), at.sid, at.index),
        ("arn:aws:iam::123456789012:policy/tls-only", None, 0)
    );
    assert_eq!(
        denial_message(&principal.arn, ctx.action, ctx.resource, &e),
        format!(
            "User: {ALICE} is not authorized to perform: dynamodb:GetItem on resource: {ORDERS} \
             with an explicit deny in an identity-based policy"
        )
    );
}

#[test]
fn policies_say_which_keys_they_may_read() {
    let reads = |doc: &str| {
        let p = Policy::parse(doc, PolicyKind::Identity).expect("parses");
        ["dynamodb:", "aws:", "kms:"].map(|prefix| p.may_read_keys(prefix))
    };
    let plain = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Action": ["dynamodb:GetItem", "kms:Decrypt"], "Resource": "arn:aws:dynamodb:*:*:table/kms:x"}}"#;
    assert_eq!(reads(plain), [false, false, false]);
    let condition = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*",
        "Resource": "*", "Condition": {"ForAllValues:StringEquals": {"DynamoDB:LeadingKeys": "a"}}}}"#;
    assert_eq!(reads(condition), [true, false, false]);
    // A variable, spelt with a JSON escape for its dollar sign.
    let variable = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*",
        "Resource": "arn:aws:dynamodb:*:*:table/\u0024{aws:username}",
        "Condition": {"StringEquals": {"kms:ViaService": "${dynamodb:Select, 'x'}"}}}}"#;
    assert_eq!(reads(variable), [true, true, true]);
}

#[test]
fn version_defaults_to_2008() {
    let p = must_parse(
        json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}),
        PolicyKind::Identity,
    );
    assert_eq!(p.version(), PolicyVersion::V2008_10_17);
}

fn run_case(case: &Value) -> Result<(), String> {
    let mut policies: Vec<(String, Policy)> = Vec::new();
    let mut add = |role: &str, i: usize, v: &Value, default: PolicyKind| -> Result<(), String> {
        let (kind, doc) = policy_doc(v, default);
        let policy = Policy::parse(&doc.to_string(), kind)
            .map_err(|e| format!("{role}[{i}] does not parse: {}", e.0))?;
        policies.push((format!("{role}[{i}]"), policy));
        Ok(())
    };
    let list = |key: &str| -> Vec<Value> {
        case.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (i, p) in list("identity").iter().enumerate() {
        add("identity", i, p, PolicyKind::Identity)?;
    }
    if let Some(b) = case.get("boundary") {
        add("boundary", 0, b, PolicyKind::Identity)?;
    }
    for (i, p) in list("session").iter().enumerate() {
        add("session", i, p, PolicyKind::Identity)?;
    }
    for (i, p) in list("resource").iter().enumerate() {
        add("resource", i, p, PolicyKind::Resource)?;
    }
    let mut set = PolicySet::default();
    for (source, policy) in &policies {
        let named = Named { policy, source };
        match source.split('[').next() {
            Some("identity") => set.identity.push(named),
            Some("boundary") => set.boundary = Some(named),
            Some("session") => set.session.push(named),
            _ => set.resource.push(named),
        }
    }

    let request = case.get("request").cloned().unwrap_or(json!({}));
    let principal = principal_of(request.get("principal"));
    let action = request["action"].as_str().unwrap_or("dynamodb:GetItem");
    let resource = request["resource"].as_str().unwrap_or(ORDERS);
    let mut keys = ContextKeys::new();
    if let Some(Value::Object(map)) = request.get("keys") {
        for (k, v) in map {
            match v {
                Value::Array(items) => keys.set_multi(k, items.iter().map(scalar).collect()),
                other => keys.set(k, scalar(other)),
            }
        }
    }
    let ctx = RequestContext {
        principal: &principal,
        action,
        resource,
        keys: &keys,
    };
    let got = evaluate(&set, &ctx);

    let want = case["expect"].as_str().ok_or("missing expect")?;
    let got_decision = format!("{:?}", got.decision);
    if got_decision != want {
        return Err(format!("decision {got_decision}, want {want} ({got:?})"));
    }
    if let Some(reason) = case.get("reason").and_then(Value::as_str) {
        let got_reason = got.reason.map(|r| format!("{r:?}"));
        if got_reason.as_deref() != Some(reason) {
            return Err(format!("reason {got_reason:?}, want {reason}"));
        }
    }
    if let Some(sid) = case.get("deciding_sid").and_then(Value::as_str) {
        let got_sid = got.deciding.as_ref().and_then(|d| d.sid.as_deref());
        if got_sid != Some(sid) {
            return Err(format!("deciding sid {got_sid:?}, want {sid}"));
        }
    }
    // Every decision can be explained.
    let message = denial_message(&principal.arn, action, resource, &got);
    if !message.contains(action) {
        return Err(format!("message {message:?} lacks the action"));
    }
    Ok(())
}

fn policy_doc(v: &Value, default: PolicyKind) -> (PolicyKind, Value) {
    if let Some(doc) = v.get("document") {
        return (
            must_kind(v.get("kind"), default),
            policy_doc(doc, default).1,
        );
    }
    match v {
        Value::Object(o) if o.contains_key("Statement") => (default, v.clone()),
        _ => (
            default,
            json!({"Version": "2012-10-17", "Statement": v.clone()}),
        ),
    }
}

fn must_kind(v: Option<&Value>, default: PolicyKind) -> PolicyKind {
    match v.and_then(Value::as_str) {
        None => default,
        Some("Identity") => PolicyKind::Identity,
        Some("Trust") => PolicyKind::Trust,
        Some("Resource") => PolicyKind::Resource,
        Some(other) => panic!("unknown kind {other}"),
    }
}

fn alice() -> PrincipalInfo {
    PrincipalInfo {
        arn: ALICE.to_owned(),
        account: "123456789012".to_owned(),
        kind: PrincipalKind::Aws,
    }
}

fn principal_of(v: Option<&Value>) -> PrincipalInfo {
    match v {
        None => alice(),
        Some(Value::String(arn)) => PrincipalInfo {
            arn: arn.clone(),
            account: arn.split(':').nth(4).unwrap_or_default().to_owned(),
            kind: PrincipalKind::Aws,
        },
        Some(obj) => {
            let arn = obj["arn"].as_str().unwrap_or(ALICE).to_owned();
            let account = obj["account"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| arn.split(':').nth(4).unwrap_or_default().to_owned());
            let kind = match &obj["kind"] {
                Value::Null => PrincipalKind::Aws,
                Value::String(s) if s == "Aws" => PrincipalKind::Aws,
                Value::String(s) if s == "Anonymous" => PrincipalKind::Anonymous,
                Value::Object(k) if k.contains_key("Federated") => match &k["Federated"] {
                    Value::String(host) => PrincipalKind::Federated {
                        provider: host.clone(),
                        provider_arn: None,
                    },
                    f => PrincipalKind::Federated {
                        provider: f["provider"].as_str().expect("provider").to_owned(),
                        provider_arn: f["provider_arn"].as_str().map(str::to_owned),
                    },
                },
                Value::Object(k) if k.contains_key("Service") => {
                    PrincipalKind::Service(k["Service"].as_str().expect("service").to_owned())
                }
                other => panic!("unknown principal kind {other}"),
            };
            PrincipalInfo { arn, account, kind }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn must_parse(doc: Value, kind: PolicyKind) -> Policy {
    Policy::parse(&doc.to_string(), kind).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

fn must_read_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .expect("tests/cases exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect()
}

/// The package directory, read when the test runs: a target directory
/// shared by checkouts at other paths may hold a binary built elsewhere.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
