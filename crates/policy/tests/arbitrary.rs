//! Hostile and random input: `Policy::parse` never panics on any text or any
//! JSON shape, evaluating whatever parsed never panics, and wildcard matching
//! agrees with a naive reference matcher.

use moat_policy::{
    denial_message, evaluate, ContextKeys, Decision, Named, Policy, PolicyKind, PolicySet,
    PrincipalInfo, PrincipalKind, RequestContext,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

const KINDS: [PolicyKind; 3] = [
    PolicyKind::Identity,
    PolicyKind::Trust,
    PolicyKind::Resource,
];

/// Any JSON value, up to a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        vocabulary().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field names: mostly the policy grammar's own words, so that random trees
/// reach deep into the parser.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Version", "Id", "Statement", "Sid", "Effect", "Principal", "NotPrincipal",
            "Action", "NotAction", "Resource", "NotResource", "Condition", "AWS",
            "Federated", "Service", "CanonicalUser", "StringEquals", "StringLike",
            "ForAllValues:StringNotEqualsIfExists", "ForAnyValue:ArnLike", "NumericLessThan",
            "DateGreaterThan", "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "Null",
            "aws:username", "aws:SourceIp", "dynamodb:LeadingKeys", "aws:CurrentTime",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ]
}

/// Strings the parser and matcher treat specially.
fn vocabulary() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "2012-10-17",
        "2008-10-17",
        "Allow",
        "Deny",
        "*",
        "?",
        "s3:*",
        "dynamodb:Get*",
        "arn:aws:s3:::b/*",
        "arn:aws:dynamodb:*:123456789012:table/${aws:username}",
        "arn:aws:iam::123456789012:root",
        "arn:aws:iam::123456789012:role/R",
        "123456789012",
        "accounts.google.com",
        "${aws:username, 'x'}",
        "${*}${?}${$}",
        "${",
        "10.0.0.0/8",
        "::1",
        "2020-01-01T00:00:00Z",
        "1500000000",
        "true",
        "QUJD",
    ])
    .prop_map(str::to_owned)
}

/// A plausible statement for an identity policy: valid shapes with random
/// contents, so that most documents parse and evaluation is exercised.
/// Principals are added per kind by [`for_kind`].
fn statement() -> impl Strategy<Value = Value> {
    let actions = prop::collection::vec(
        prop_oneof![
            1 => Just("*".to_owned()),
            6 => "[a-z]{1,4}:[A-Za-z*?]{0,8}",
            1 => vocabulary(),
        ],
        1..4,
    );
    let resources = prop::collection::vec(
        prop_oneof![
            1 => Just("*".to_owned()),
            6 => "arn:[a-z*]{0,3}:[a-z*?]{0,4}:[a-z0-9*?-]{0,6}:[0-9*]{0,3}:[a-z/*?:]{0,8}(\\$\\{aws:username\\}|\\$\\{\\*\\}|\\$\\{x:y, 'd'\\})?[a-z/*]{0,4}",
            1 => vocabulary(),
        ],
        1..4,
    );
    let conditions = prop::collection::vec(condition(), 0..4).prop_map(|conds| {
        let mut block = Map::new();
        for (operator, key, values) in conds {
            block.insert(operator, json!({ key: values }));
        }
        Value::Object(block)
    });
    (
        any::<bool>(),
        actions,
        resources,
        any::<(bool, bool)>(),
        conditions,
    )
        .prop_map(
            |(allow, actions, resources, (not_action, not_resource), condition)| {
                let mut s = Map::new();
                s.insert("Effect".into(), json!(if allow { "Allow" } else { "Deny" }));
                let a = if not_action { "NotAction" } else { "Action" };
                s.insert(a.into(), json!(actions));
                let r = if not_resource {
                    "NotResource"
                } else {
                    "Resource"
                };
                s.insert(r.into(), json!(resources));
                s.insert("Condition".into(), condition);
                Value::Object(s)
            },
        )
}

/// A statement for every action whose outcome turns on context keys: in
/// its conditions, or as variables in its resources.
fn reading_statement() -> impl Strategy<Value = Value> {
    let resource = prop::sample::select(vec![
        "*",
        "arn:aws:dynamodb:*:*:table/${aws:username}",
        "arn:aws:dynamodb:*:*:table/${dynamodb:Select, 'ALL_ATTRIBUTES'}",
        "arn:aws:dynamodb:*:*:table/${svc:n}",
        "arn:aws:dynamodb:*:*:table/t",
    ]);
    (
        any::<bool>(),
        resource,
        prop::collection::vec(condition(), 0..3),
    )
        .prop_map(|(allow, resource, conditions)| {
            let mut block = Map::new();
            for (operator, key, values) in conditions {
                block.insert(operator, json!({ key: values }));
            }
            json!({"Effect": if allow { "Allow" } else { "Deny" }, "Action": "*",
                   "Resource": resource, "Condition": block})
        })
}

/// One condition: an operator (with qualifier and IfExists), a key, and
/// values that mostly suit the operator.
fn condition() -> impl Strategy<Value = (String, String, Vec<Value>)> {
    let family = prop::sample::select(vec![
        ("StringEquals", 0),
        ("StringNotEquals", 0),
        ("StringEqualsIgnoreCase", 0),
        ("StringNotEqualsIgnoreCase", 0),
        ("StringLike", 0),
        ("StringNotLike", 0),
        ("ArnEquals", 0),
        ("ArnLike", 0),
        ("ArnNotLike", 0),
        ("NumericEquals", 1),
        ("NumericNotEquals", 1),
        ("NumericLessThan", 1),
        ("NumericGreaterThanEquals", 1),
        ("DateEquals", 2),
        ("DateLessThanEquals", 2),
        ("DateGreaterThan", 2),
        ("IpAddress", 3),
        ("NotIpAddress", 3),
        ("BinaryEquals", 4),
        ("Bool", 5),
        ("Null", 5),
    ]);
    let qualifier = prop::sample::select(vec!["", "", "ForAllValues:", "ForAnyValue:"]);
    (family, qualifier, any::<bool>(), context_key()).prop_flat_map(
        |((op, values), q, if_exists, key)| {
            let suffix = if if_exists && op != "Null" {
                "IfExists"
            } else {
                ""
            };
            let value = match values {
                1 => prop_oneof![
                    "-?[0-9]{1,4}(\\.[0-9]{1,2})?".prop_map(Value::String),
                    any::<i32>().prop_map(|n| json!(n)),
                ]
                .boxed(),
                2 => prop::sample::select(vec![
                    "2020-01-01T00:00:00Z",
                    "2024-02-29",
                    "1500000000",
                    "2017-07-14T04:40:00+02:00",
                ])
                .prop_map(|s| json!(s))
                .boxed(),
                3 => prop::sample::select(vec!["10.0.0.0/8", "192.0.2.1", "::/0", "2001:db8::/32"])
                    .prop_map(|s| json!(s))
                    .boxed(),
                4 => prop::sample::select(vec!["QUJD", "", "YQ=="])
                    .prop_map(|s| json!(s))
                    .boxed(),
                5 => any::<bool>().prop_map(|b| json!(b)).boxed(),
                _ => prop_oneof![
                    vocabulary(),
                    "[a-z*?]{0,6}(\\$\\{aws:username\\})?",
                    "\\PC{0,8}"
                ]
                .prop_map(Value::String)
                .boxed(),
            };
            (
                Just(format!("{q}{op}{suffix}")),
                Just(key),
                prop::collection::vec(value, 1..3),
            )
        },
    )
}

fn any_principal() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!("*"),
        json!({"AWS": "*"}),
        json!({"AWS": ["123456789012", "arn:aws:iam::123456789012:role/R"]}),
        json!({"AWS": "arn:aws:iam::123456789012:user/alice"}),
        json!({"Federated": "accounts.google.com"}),
        json!({"Service": "ec2.amazonaws.com"}),
    ])
}

/// Turns identity statements into a document of the given kind: trust and
/// resource policies get a principal, trust policies lose their resources.
fn for_kind(
    statements: &[Value],
    principal: &Value,
    negated: bool,
    kind: PolicyKind,
) -> Vec<Value> {
    statements
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Value::Object(map) = &mut s {
                if kind != PolicyKind::Identity {
                    let field = if negated { "NotPrincipal" } else { "Principal" };
                    map.insert(field.into(), principal.clone());
                }
                if kind == PolicyKind::Trust {
                    map.remove("Resource");
                    map.remove("NotResource");
                }
            }
            s
        })
        .collect()
}

fn context_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "aws:username",
        "aws:SourceIp",
        "aws:CurrentTime",
        "aws:SecureTransport",
        "dynamodb:LeadingKeys",
        "dynamodb:Select",
        "svc:blob",
        "svc:n",
    ])
    .prop_map(str::to_owned)
}

fn context() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    prop::collection::vec(
        (
            context_key(),
            prop::collection::vec(prop_oneof![vocabulary(), "\\PC{0,12}"], 0..3),
        ),
        0..6,
    )
}

fn principal() -> impl Strategy<Value = PrincipalInfo> {
    prop_oneof![
        Just(PrincipalKind::Aws),
        Just(PrincipalKind::Anonymous),
        Just(PrincipalKind::Service("ec2.amazonaws.com".into())),
        Just(PrincipalKind::Federated {
            provider: "accounts.google.com".into(),
            provider_arn: None
        }),
    ]
    .prop_flat_map(|kind| {
        (
            prop_oneof![
                Just("arn:aws:iam::123456789012:user/alice".to_owned()),
                Just("arn:aws:sts::123456789012:assumed-role/R/s".to_owned()),
                "\\PC{0,30}",
            ],
            Just(kind),
        )
    })
    .prop_map(|(arn, kind)| PrincipalInfo {
        account: arn.split(':').nth(4).unwrap_or_default().to_owned(),
        arn,
        kind,
    })
}

/// Evaluates every parsed policy in every role, checking the invariants of
/// an [`Evaluation`](moat_policy::Evaluation).
fn exercise(
    policies: &[Policy],
    who: &PrincipalInfo,
    action: &str,
    resource: &str,
    keys: &ContextKeys,
) {
    let named: Vec<Named<'_>> = policies
        .iter()
        .map(|policy| Named {
            policy,
            source: "p",
        })
        .collect();
    let sets = [
        PolicySet {
            identity: named.clone(),
            ..PolicySet::default()
        },
        PolicySet {
            resource: named.clone(),
            ..PolicySet::default()
        },
        PolicySet {
            identity: named.clone(),
            boundary: named.first().copied(),
            session: named.clone(),
            resource: named.clone(),
        },
    ];
    let ctx = RequestContext {
        principal: who,
        action,
        resource,
        keys,
    };
    for set in &sets {
        let e = evaluate(set, &ctx);
        match e.decision {
            Decision::Allow => assert!(e.reason.is_none() && e.deciding.is_some()),
            Decision::ExplicitDeny => assert!(e.reason.is_some() && e.deciding.is_some()),
            Decision::ImplicitDeny => assert!(e.reason.is_some() && e.deciding.is_none()),
        }
        let _ = denial_message(&who.arn, action, resource, &e);
    }
}

/// Naive recursive `*`/`?` matcher, the reference for the real one.
fn reference_like(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| reference_like(rest, &t[i..])),
        Some(('?', rest)) => !t.is_empty() && reference_like(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && reference_like(rest, &t[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        for kind in KINDS {
            let _ = Policy::parse(&text, kind);
        }
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        for kind in KINDS {
            let _ = Policy::parse(&text, kind);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(doc in any_json(), who in principal(), ctx in context()) {
        let mut keys = ContextKeys::new();
        for (k, v) in ctx {
            keys.set_multi(&k, v);
        }
        // The tree as it is, and wrapped as a statement list, so that random
        // statements get past the top-level checks.
        let docs = [
            doc.to_string(),
            json!({"Version": "2012-10-17", "Statement": doc.clone()}).to_string(),
            json!({"Statement": [doc]}).to_string(),
        ];
        for text in &docs {
            for kind in KINDS {
                if let Ok(policy) = Policy::parse(text, kind) {
                    exercise(&[policy], &who, "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/T", &keys);
                }
            }
        }
    }

    #[test]
    fn plausible_policies_evaluate_without_panicking(
        statements in prop::collection::vec(statement(), 1..5),
        version in prop::sample::select(vec![Some("2012-10-17"), Some("2008-10-17"), None]),
        principal_element in any_principal(),
        not_principal in prop::bool::weighted(0.2),
        who in principal(),
        ctx in context(),
        action in prop_oneof![vocabulary(), "[a-z]{1,4}:[a-zA-Z*?]{0,10}", "\\PC{0,20}"],
        resource in prop_oneof![vocabulary(), "arn:[a-z]{0,3}:[a-z]{0,4}:[a-z0-9-]{0,6}:[0-9]{0,3}:[a-z/*?:]{0,12}", "\\PC{0,20}"],
    ) {
        let mut keys = ContextKeys::new();
        for (k, v) in ctx {
            keys.set_multi(&k, v);
        }
        let mut parsed = Vec::new();
        for kind in KINDS {
            let mut doc = json!({"Statement": for_kind(&statements, &principal_element, not_principal, kind)});
            if let Some(v) = version {
                doc["Version"] = json!(v);
            }
            if let Ok(policy) = Policy::parse(&doc.to_string(), kind) {
                parsed.push(policy);
            }
        }
        exercise(&parsed, &who, &action, &resource, &keys);
    }

    #[test]
    fn keys_no_policy_may_read_change_no_decision(
        statements in prop::collection::vec(reading_statement(), 1..4),
        ctx in context(),
        pick in any::<prop::sample::Index>(),
    ) {
        let doc = json!({"Version": "2012-10-17", "Statement": statements});
        let Ok(policy) = Policy::parse(&doc.to_string(), PolicyKind::Identity) else {
            return Ok(());
        };
        // A resource named by one of the request's own values, so that
        // variables in `Resource` have something to match.
        let values: Vec<&String> = ctx.iter().flat_map(|(_, v)| v).collect();
        let name = if values.is_empty() { "t" } else { values[pick.index(values.len())].as_str() };
        let resource = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}");
        let who = PrincipalInfo { arn: "arn:aws:iam::123456789012:user/alice".into(), account: "123456789012".into(), kind: PrincipalKind::Aws };
        let set = PolicySet { identity: vec![Named { policy: &policy, source: "p" }], ..PolicySet::default() };
        let decide = |skipped: &str| {
            let mut keys = ContextKeys::new();
            for (k, v) in ctx.iter().filter(|(k, _)| !k.to_lowercase().starts_with(skipped)) {
                keys.set_multi(k, v.clone());
            }
            let request = RequestContext { principal: &who, action: "dynamodb:GetItem", resource: &resource, keys: &keys };
            let e = evaluate(&set, &request);
            (e.decision, e.reason, e.deciding.map(|d| d.index))
        };
        let all = decide("\u{0}");
        for prefix in ["dynamodb:", "aws:", "svc:"] {
            if !policy.may_read_keys(prefix) {
                prop_assert_eq!(&decide(prefix), &all, "{} {}", prefix, doc);
            }
        }
    }

    #[test]
    fn string_like_agrees_with_a_reference_matcher(pattern in "[ab*?é]{0,8}", text in "[abé]{0,8}") {
        let doc = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"StringLike": {"svc:k": pattern}}}});
        let policy = Policy::parse(&doc.to_string(), PolicyKind::Identity).expect("parses");
        let who = PrincipalInfo { arn: "a".into(), account: "1".into(), kind: PrincipalKind::Aws };
        let mut keys = ContextKeys::new();
        keys.set("svc:k", text.clone());
        let set = PolicySet { identity: vec![Named { policy: &policy, source: "p" }], ..PolicySet::default() };
        let ctx = RequestContext { principal: &who, action: "svc:Do", resource: "*", keys: &keys };
        let got = evaluate(&set, &ctx).decision == Decision::Allow;
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(got, reference_like(&p, &t), "{:?} vs {:?}", pattern, text);
    }

    #[test]
    fn resource_segments_agree_with_a_reference_matcher(
        pattern in prop::collection::vec("[ab*?]{0,3}", 6),
        text in prop::collection::vec("[ab:]{0,3}", 6),
    ) {
        let pattern = format!("arn:{}", pattern[1..].join(":"));
        let text = format!("arn:{}", text[1..].join(":"));
        let doc = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": pattern}});
        let policy = Policy::parse(&doc.to_string(), PolicyKind::Identity).expect("parses");
        let who = PrincipalInfo { arn: "a".into(), account: "1".into(), kind: PrincipalKind::Aws };
        let keys = ContextKeys::new();
        let set = PolicySet { identity: vec![Named { policy: &policy, source: "p" }], ..PolicySet::default() };
        let ctx = RequestContext { principal: &who, action: "svc:Do", resource: &text, keys: &keys };
        let got = evaluate(&set, &ctx).decision == Decision::Allow;
        // Reference: split both into six segments (the last keeps its
        // colons) and match each with the naive matcher.
        let ps: Vec<&str> = pattern.splitn(6, ':').collect();
        let ts: Vec<&str> = text.splitn(6, ':').collect();
        let want = ps.len() == 6 && ts.len() == 6 && ps.iter().zip(&ts).all(|(p, t)| {
            let p: Vec<char> = p.chars().collect();
            let t: Vec<char> = t.chars().collect();
            reference_like(&p, &t)
        });
        prop_assert_eq!(got, want, "{} vs {}", pattern, text);
    }
}

/// The plausible-policy generator must mostly produce documents that parse,
/// or the evaluation property would only exercise the parser's error paths.
#[test]
fn plausible_policies_mostly_parse() {
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(statement(), 1..5);
    let principal = json!({"AWS": "123456789012"});
    let (mut tried, mut parsed) = (0, 0);
    for _ in 0..200 {
        let statements = strategy
            .new_tree(&mut runner)
            .expect("generate statements")
            .current();
        for kind in KINDS {
            let doc = json!({"Version": "2012-10-17", "Statement": for_kind(&statements, &principal, false, kind)});
            tried += 1;
            parsed += usize::from(Policy::parse(&doc.to_string(), kind).is_ok());
        }
    }
    assert!(
        parsed * 3 >= tried,
        "only {parsed} of {tried} generated documents parsed"
    );
}

/// Documents far beyond any size limit are refused or accepted in time
/// proportional to their size (no quadratic corner in the parser).
#[test]
fn huge_documents_stay_linear() {
    let junk = "${}".repeat(300_000);
    let doc = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*",
        "Resource": format!("arn:aws:s3:::b/{junk}"),
        "Condition": {"StringLike": {"svc:k": junk}}}});
    let policy = Policy::parse(&doc.to_string(), PolicyKind::Identity).expect("parses");
    assert_eq!(policy.statements().len(), 1);

    // Many statements, each naming another service, plus NotAction ones.
    let statements: Vec<Value> = (0..20_000)
        .map(|i| {
            if i % 2 == 0 {
                json!({"Effect": "Allow", "Action": format!("svc{i}:Get*"), "Resource": "*"})
            } else {
                json!({"Effect": "Deny", "NotAction": format!("svc{i}:*"), "Resource": "*",
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
            }
        })
        .collect();
    let doc = json!({"Version": "2012-10-17", "Statement": statements});
    let policy = Policy::parse(&doc.to_string(), PolicyKind::Identity).expect("parses");
    let who = PrincipalInfo {
        arn: "a".into(),
        account: "1".into(),
        kind: PrincipalKind::Aws,
    };
    let keys = ContextKeys::new();
    let set = PolicySet {
        identity: vec![Named {
            policy: &policy,
            source: "big",
        }],
        ..PolicySet::default()
    };
    let ctx = RequestContext {
        principal: &who,
        action: "svc19998:GetThing",
        resource: "*",
        keys: &keys,
    };
    assert_eq!(evaluate(&set, &ctx).decision, Decision::Allow);

    // Nesting far deeper than the parser's limit is an error, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Policy::parse(&deep, PolicyKind::Identity).is_err());
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    assert!(Policy::parse(&deep_object, PolicyKind::Trust).is_err());
}
