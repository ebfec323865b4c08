//! How long one decision takes for a principal with 10 attached policies of
//! 10 statements each: `cargo run --release -p moat-policy --example
//! bench_evaluate`.
//!
//! The policies mix the shapes real ones have: service wildcards, ARN
//! wildcards, policy variables in resources and conditions, `StringEquals`,
//! `StringLike`, `IpAddress` and `Bool` conditions, and explicit denies. The
//! allow case is granted by the last policy, so every statement is looked at;
//! the implicit deny also scans everything.

use std::hint::black_box;
use std::time::Instant;

use moat_policy::{
    evaluate, ContextKeys, Decision, Named, Policy, PolicyKind, PolicySet, PrincipalInfo,
    PrincipalKind, RequestContext,
};
use serde_json::{json, Value};

const ITERATIONS: u32 = 1_000_000;

fn statement(policy: usize, index: usize) -> Value {
    let sid = format!("P{policy}S{index}");
    match index % 5 {
        0 => json!({"Sid": sid, "Effect": "Allow",
            "Action": [format!("svc{policy}:Get*"), format!("svc{policy}:List*")],
            "Resource": format!("arn:aws:svc{policy}:*:123456789012:thing/*")}),
        1 => json!({"Sid": sid, "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"],
            "Resource": [
                "arn:aws:dynamodb:*:123456789012:table/${aws:username}-*",
                "arn:aws:dynamodb:*:123456789012:table/${aws:username}-*/index/*"
            ],
            "Condition": {"StringEquals": {"aws:PrincipalTag/team": format!("team{policy}")}}}),
        2 => json!({"Sid": sid, "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::bucket-{policy}/home/${{aws:username}}/*"),
            "Condition": {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]}}}),
        3 => json!({"Sid": sid, "Effect": "Deny",
            "Action": ["dynamodb:Delete*", "s3:Delete*", format!("svc{policy}:Delete*")],
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
        _ => json!({"Sid": sid, "Effect": "Allow",
            "Action": ["rds:Describe*", format!("svc{policy}:*Tag*")],
            "Resource": "*",
            "Condition": {"StringLike": {"aws:userid": ["AIDA*", "AROA*:${aws:username}"]},
                          "StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}}),
    }
}

fn main() {
    let policies: Vec<Policy> = (0..10)
        .map(|p| {
            let doc = json!({"Version": "2012-10-17",
                "Statement": (0..10).map(|s| statement(p, s)).collect::<Vec<_>>()});
            Policy::parse(&doc.to_string(), PolicyKind::Identity).expect("benchmark policy parses")
        })
        .collect();
    let sources: Vec<String> = (0..10)
        .map(|p| format!("arn:aws:iam::123456789012:policy/p{p}"))
        .collect();
    let set = PolicySet {
        identity: policies
            .iter()
            .zip(&sources)
            .map(|(policy, source)| Named { policy, source })
            .collect(),
        ..PolicySet::default()
    };

    let principal = PrincipalInfo {
        arn: "arn:aws:iam::123456789012:user/alice".into(),
        account: "123456789012".into(),
        kind: PrincipalKind::Aws,
    };
    let mut keys = ContextKeys::new();
    keys.set("aws:username", "alice");
    keys.set("aws:userid", "AIDAEXAMPLEALICE");
    keys.set("aws:PrincipalTag/team", "team9");
    keys.set("aws:SourceIp", "10.1.2.3");
    keys.set("aws:SecureTransport", "true");
    keys.set("aws:RequestedRegion", "us-east-1");
    keys.set("aws:CurrentTime", "2024-06-01T12:00:00Z");
    keys.set("aws:PrincipalArn", principal.arn.clone());
    let mut insecure = keys.clone();
    insecure.set("aws:SecureTransport", "false");

    let allow = RequestContext {
        principal: &principal,
        action: "dynamodb:Query",
        resource: "arn:aws:dynamodb:us-east-1:123456789012:table/alice-orders/index/ByDate",
        keys: &keys,
    };
    let explicit_deny = RequestContext {
        action: "dynamodb:DeleteItem",
        resource: "arn:aws:dynamodb:us-east-1:123456789012:table/alice-orders",
        keys: &insecure,
        ..allow
    };
    let implicit_deny = RequestContext {
        action: "dynamodb:PutItem",
        resource: "arn:aws:dynamodb:us-east-1:123456789012:table/alice-orders",
        ..allow
    };

    let cases = [
        ("allow (granted by the last policy)", allow, Decision::Allow),
        ("explicit deny", explicit_deny, Decision::ExplicitDeny),
        (
            "implicit deny (full scan)",
            implicit_deny,
            Decision::ImplicitDeny,
        ),
    ];
    println!("10 policies x 10 statements, {ITERATIONS} decisions per case");
    for (name, ctx, want) in cases {
        assert_eq!(evaluate(&set, &ctx).decision, want, "{name}");
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            black_box(evaluate(black_box(&set), black_box(&ctx)));
        }
        let elapsed = start.elapsed();
        println!(
            "{name:>36}: {:>7.0} ns per decision",
            elapsed.as_nanos() as f64 / f64::from(ITERATIONS)
        );
    }
}
