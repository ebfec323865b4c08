//! `Action`/`NotAction` patterns: `service:Name` with `*` and `?`, compared
//! without regard to ASCII case.
//!
//! Most patterns name their service literally (`dynamodb:Get*`), so the
//! service is kept apart: a statement about another service is rejected by
//! one short comparison, and only the name after the colon goes through the
//! wildcard matcher.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::glob::Glob;
use crate::template::NoVars;
use crate::Statement;

#[derive(Debug, Clone)]
pub(crate) enum ActionPattern {
    /// A literal service prefix (lowercased) and a pattern for the name.
    Vendor { vendor: Box<str>, name: Glob },
    /// `*`, or a pattern whose service part has a wildcard: matched whole.
    Whole(Glob),
}

/// The request's action, lowercased and split once per evaluation, so that
/// every comparison with the (lowercased) patterns is a plain one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestAction<'a> {
    whole: &'a str,
    /// Empty when the action has no colon: then no `Vendor` pattern matches,
    /// as the parser refuses empty service prefixes.
    vendor: &'a str,
    name: &'a str,
}

impl<'a> RequestAction<'a> {
    /// `lowered` must come from [`lowercase`].
    pub(crate) fn new(lowered: &'a str) -> RequestAction<'a> {
        let (vendor, name) = lowered.split_once(':').unwrap_or(("", lowered));
        RequestAction {
            whole: lowered,
            vendor,
            name,
        }
    }
}

/// The action in ASCII lowercase (action names are ASCII), borrowed when it
/// already is.
pub(crate) fn lowercase(action: &str) -> Cow<'_, str> {
    if action.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(action.to_ascii_lowercase())
    } else {
        Cow::Borrowed(action)
    }
}

impl ActionPattern {
    pub(crate) fn compile(pattern: &str) -> ActionPattern {
        match pattern.split_once(':') {
            Some((vendor, name)) if !vendor.is_empty() && !vendor.contains(['*', '?']) => {
                ActionPattern::Vendor {
                    vendor: vendor.to_ascii_lowercase().into(),
                    name: Glob::literal(name, true),
                }
            }
            _ => ActionPattern::Whole(Glob::literal(pattern, true)),
        }
    }

    pub(crate) fn matches(&self, action: &RequestAction<'_>) -> bool {
        match self {
            ActionPattern::Vendor { vendor, name } => {
                **vendor == *action.vendor && name.matches(action.name, &NoVars)
            }
            ActionPattern::Whole(glob) => glob.matches(action.whole, &NoVars),
        }
    }
}

/// Which statements of a policy can apply to an action of a given service,
/// so that evaluation skips the statements about other services without
/// looking at them. Built in one pass, and looked up by binary search, so a
/// huge document costs no more than its size.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionIndex {
    /// For each service named literally in an `Action` (lowercased, sorted
    /// by [`by_length`]):
    /// the statements that name it, in document order.
    by_service: Box<[ServiceStatements]>,
    /// Statements that can apply to any service: `NotAction`, or an action
    /// whose service part has a wildcard (`*`). In document order.
    any_service: Box<[usize]>,
}

impl ActionIndex {
    pub(crate) fn build(statements: &[Statement]) -> ActionIndex {
        let mut by_service: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut any_service = Vec::new();
        for (i, s) in statements.iter().enumerate() {
            let wildcard_service = s
                .actions
                .patterns
                .iter()
                .any(|p| matches!(p, ActionPattern::Whole(_)));
            if s.actions.negated || wildcard_service {
                any_service.push(i);
            }
            if s.actions.negated {
                continue;
            }
            for p in &s.actions.patterns {
                if let ActionPattern::Vendor { vendor, .. } = p {
                    let list = by_service.entry(vendor).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let mut by_service: Vec<ServiceStatements> = by_service
            .into_iter()
            .map(|(service, list)| (service.into(), list.into_boxed_slice()))
            .collect();
        by_service.sort_by(|(a, _), (b, _)| by_length(a, b));
        ActionIndex {
            by_service: by_service.into_boxed_slice(),
            any_service: any_service.into_boxed_slice(),
        }
    }

    /// Indices of the statements that may apply to `action`, in order.
    pub(crate) fn candidates(&self, action: &RequestAction<'_>) -> Candidates<'_> {
        let named = self
            .by_service
            .binary_search_by(|(service, _)| by_length(service, action.vendor))
            .ok()
            .and_then(|i| self.by_service.get(i))
            .map_or(&[][..], |(_, list)| &list[..]);
        Candidates {
            named,
            any: &self.any_service,
        }
    }
}

/// Orders by length, then bytes: service names mostly differ in length, so
/// most comparisons of the lookup never read the names.
fn by_length(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A service (lowercased) and the statements that name it.
type ServiceStatements = (Box<str>, Box<[usize]>);

/// The union of two ascending lists of statement indices, ascending.
pub(crate) struct Candidates<'a> {
    named: &'a [usize],
    any: &'a [usize],
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (self.named.split_first(), self.any.split_first()) {
            (Some((&a, rest_a)), Some((&b, rest_b))) => {
                if a <= b {
                    self.named = rest_a;
                    if a == b {
                        self.any = rest_b;
                    }
                    Some(a)
                } else {
                    self.any = rest_b;
                    Some(b)
                }
            }
            (Some((&a, rest)), None) => {
                self.named = rest;
                Some(a)
            }
            (None, Some((&b, rest))) => {
                self.any = rest;
                Some(b)
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_table() {
        let cases = [
            ("*", "dynamodb:GetItem", true),
            ("*", "", true),
            ("dynamodb:GetItem", "dynamodb:GetItem", true),
            ("DynamoDB:getitem", "dynamodb:GetItem", true),
            ("dynamodb:GetItem", "DYNAMODB:GETITEM", true),
            ("dynamodb:*", "dynamodb:Query", true),
            ("dynamodb:*", "dynamodbx:Query", false),
            ("dynamodb:*", "dynamodb", false),
            ("dynamodb:Get*", "dynamodb:GetItem", true),
            ("dynamodb:Get*", "dynamodb:BatchGetItem", false),
            ("dynamodb:?etItem", "dynamodb:GetItem", true),
            ("dynamodb:*Item", "dynamodb:PutItem", true),
            ("dynamo*:GetItem", "dynamodb:GetItem", true),
            ("dynamo*:GetItem", "dynamodb:PutItem", false),
            ("*:GetItem", "dynamodb:GetItem", true),
            ("s3:GetObject", "s3:GetObjectAcl", false),
            ("s3:", "s3:", true),
        ];
        for (pattern, action, want) in cases {
            let lowered = lowercase(action);
            let got = ActionPattern::compile(pattern).matches(&RequestAction::new(&lowered));
            assert_eq!(got, want, "{pattern} vs {action}");
        }
    }

    #[test]
    fn index_lists_candidates_in_order() {
        let doc = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "s3:PutObject"], "Resource": "*"},
            {"Effect": "Deny", "NotAction": "iam:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": ["dynamodb:Query", "dyn*:Scan"], "Resource": "*"},
            {"Effect": "Allow", "Action": "rds:*", "Resource": "*"}
        ]}"#;
        let policy = crate::Policy::parse(doc, crate::PolicyKind::Identity).expect("parses");
        let cases: [(&str, &[usize]); 5] = [
            ("s3:getobject", &[0, 1, 2, 3, 4]),
            ("dynamodb:query", &[1, 2, 3, 4]),
            ("rds:describedbinstances", &[2, 3, 4, 5]),
            ("iam:createuser", &[2, 3, 4]),
            ("nocolon", &[2, 3, 4]),
        ];
        for (action, want) in cases {
            let got: Vec<usize> = policy
                .index
                .candidates(&RequestAction::new(action))
                .collect();
            assert_eq!(got, want, "{action}");
        }
    }
}
