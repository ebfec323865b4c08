//! From JSON text to a compiled [`Policy`], with AWS's validation and its
//! `MalformedPolicyDocument` messages.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::action::{ActionIndex, ActionPattern};
use crate::arn::ArnPattern;
use crate::condition::Condition;
use crate::principal::PrincipalClause;
use crate::template;
use crate::{Effect, Matcher, Policy, PolicyError, PolicyKind, PolicyVersion, Statement};

fn syntax() -> PolicyError {
    PolicyError::new("Syntax errors in policy.")
}

const VENDOR: &str = "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";

pub(crate) fn parse_policy(json: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
    // serde_json refuses nesting deeper than 128 levels with an error rather
    // than recursing further, so hostile documents cannot exhaust the stack.
    let doc: Value = serde_json::from_str(json).map_err(|_| syntax())?;
    let Value::Object(top) = &doc else {
        return Err(syntax());
    };
    for field in top.keys() {
        if !matches!(field.as_str(), "Version" | "Id" | "Statement") {
            return Err(PolicyError::new(format!("Unknown field {field}")));
        }
    }
    let version = match top.get("Version") {
        None => PolicyVersion::V2008_10_17,
        Some(Value::String(v)) if v == "2012-10-17" => PolicyVersion::V2012_10_17,
        Some(Value::String(v)) if v == "2008-10-17" => PolicyVersion::V2008_10_17,
        Some(other) => {
            return Err(PolicyError::new(format!(
                "Policy document must be version 2012-10-17 or greater. Version {other} is not \
                 a policy language version (2012-10-17, or the legacy 2008-10-17)."
            )))
        }
    };
    let id = match top.get("Id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(syntax()),
    };
    let raw: Vec<&Map<String, Value>> = match top.get("Statement") {
        None => return Err(PolicyError::new("Missing required field Statement")),
        Some(Value::Object(one)) => vec![one],
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| s.as_object().ok_or_else(syntax))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(syntax()),
    };
    if raw.is_empty() {
        return Err(PolicyError::new(
            "Policy document must contain at least one statement.",
        ));
    }
    let mut sids = HashSet::new();
    let mut statements = Vec::with_capacity(raw.len());
    for s in raw {
        let statement = parse_statement(s, kind, version)?;
        if let Some(sid) = &statement.sid {
            if !sids.insert(sid.clone()) {
                return Err(PolicyError::new(
                    "Statement IDs (SID) in a single policy must be unique.",
                ));
            }
        }
        statements.push(statement);
    }
    Ok(Policy {
        version,
        kind,
        id,
        index: ActionIndex::build(&statements),
        statements,
        keys_read: keys_read(&doc),
    })
}

/// The context keys a document may read, lowercased: a superset of those
/// its conditions test and its variables name. Every object key with a
/// colon in it counts (condition keys are the keys of the operators'
/// objects), and so does every `${...}` in any string, keys included, as
/// decoded from the JSON: a variable spelt with escapes is still found.
fn keys_read(doc: &Value) -> Box<[Box<str>]> {
    // Found as `template::parse` finds them: an unterminated `${` is text,
    // and the scan goes on after each `}`, so that it stays linear in the
    // string (a string of `${${${...` once stored every suffix of itself).
    fn variables(text: &str, out: &mut Vec<Box<str>>) {
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let inner = &after[..end];
            let name = inner.split_once(',').map_or(inner, |(name, _)| name);
            out.push(crate::context::lower_key(name.trim()).into());
            rest = &after[end + 1..];
        }
    }
    let mut out = Vec::new();
    // A stack, not recursion: the parser bounds the depth, this need not.
    let mut pending = vec![doc];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key.contains(':') {
                        out.push(crate::context::lower_key(key).into());
                    }
                    variables(key, &mut out);
                    pending.push(inner);
                }
            }
            Value::Array(items) => pending.extend(items),
            Value::String(text) => variables(text, &mut out),
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out.into_boxed_slice()
}

fn parse_statement(
    s: &Map<String, Value>,
    kind: PolicyKind,
    version: PolicyVersion,
) -> Result<Statement, PolicyError> {
    for field in s.keys() {
        if !matches!(
            field.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(PolicyError::new(format!("Unknown field {field}")));
        }
    }

    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(sid)) => {
            // IAM (not every resource-policy service) restricts Sids.
            if kind == PolicyKind::Identity && !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(PolicyError::new(
                    "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies \
                     the regular expression [0-9A-Za-z]*",
                ));
            }
            Some(sid.clone())
        }
        Some(_) => return Err(syntax()),
    };

    let effect = match s.get("Effect") {
        None => return Err(PolicyError::new("Missing required field Effect")),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => {
            return Err(PolicyError::new(format!(
                "Invalid effect: {other}. Effect must be Allow or Deny."
            )))
        }
    };

    let principal = match (s.get("Principal"), s.get("NotPrincipal"), kind) {
        (Some(_), _, PolicyKind::Identity) => {
            return Err(PolicyError::new("Has prohibited field Principal"))
        }
        (_, Some(_), PolicyKind::Identity) => {
            return Err(PolicyError::new("Has prohibited field NotPrincipal"))
        }
        (None, None, PolicyKind::Identity) => None,
        (Some(_), Some(_), _) => {
            return Err(PolicyError::new(
                "Statement cannot contain both Principal and NotPrincipal",
            ))
        }
        (Some(p), None, _) => Some(PrincipalClause::parse(p, false)?),
        (None, Some(p), _) => Some(PrincipalClause::parse(p, true)?),
        (None, None, _) => return Err(PolicyError::new("Missing required field Principal")),
    };

    let actions = match (s.get("Action"), s.get("NotAction")) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::new(
                "Statement cannot contain both Action and NotAction",
            ))
        }
        (None, None) => return Err(PolicyError::new("Policy statement must contain actions.")),
        (Some(a), None) => actions(a, false)?,
        (None, Some(a)) => actions(a, true)?,
    };

    let resources = match (s.get("Resource"), s.get("NotResource"), kind) {
        (Some(_), _, PolicyKind::Trust) => {
            return Err(PolicyError::new("Has prohibited field Resource"))
        }
        (_, Some(_), PolicyKind::Trust) => {
            return Err(PolicyError::new("Has prohibited field NotResource"))
        }
        (None, None, PolicyKind::Trust) => None,
        (Some(_), Some(_), _) => {
            return Err(PolicyError::new(
                "Statement cannot contain both Resource and NotResource",
            ))
        }
        (None, None, _) => {
            return Err(PolicyError::new("Policy statement must contain resources."))
        }
        (Some(r), None, _) => Some(resources(r, false, version)?),
        (None, Some(r), _) => Some(resources(r, true, version)?),
    };

    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c, version)?,
    };

    Ok(Statement {
        sid,
        effect,
        principal,
        actions,
        resources,
        conditions,
    })
}

/// A string or a non-empty list of strings.
fn strings(value: &Value) -> Result<Vec<&str>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(syntax))
            .collect(),
        _ => Err(syntax()),
    }
}

fn actions(value: &Value, negated: bool) -> Result<Matcher<ActionPattern>, PolicyError> {
    let names = strings(value)?;
    if names.is_empty() {
        return Err(PolicyError::new("Policy statement must contain actions."));
    }
    let mut patterns = Vec::with_capacity(names.len());
    for name in names {
        if name != "*" {
            let has_vendor = name
                .split_once(':')
                .is_some_and(|(vendor, _)| !vendor.is_empty());
            if !has_vendor {
                return Err(PolicyError::new(VENDOR));
            }
        }
        // Actions hold no policy variables; `${` is text.
        patterns.push(ActionPattern::compile(name));
    }
    Ok(Matcher { negated, patterns })
}

fn resources(
    value: &Value,
    negated: bool,
    version: PolicyVersion,
) -> Result<Matcher<ArnPattern>, PolicyError> {
    let names = strings(value)?;
    if names.is_empty() {
        return Err(PolicyError::new("Policy statement must contain resources."));
    }
    let mut patterns = Vec::with_capacity(names.len());
    for name in names {
        let compiled = name
            .starts_with("arn:")
            .then(|| ArnPattern::compile(&template::parse(name, version)))
            .flatten()
            .or_else(|| (name == "*").then_some(ArnPattern::Any));
        match compiled {
            Some(p) => patterns.push(p),
            None => {
                return Err(PolicyError::new(format!(
                    "Resource {name} must be in ARN format or \"*\"."
                )))
            }
        }
    }
    Ok(Matcher { negated, patterns })
}

fn conditions(value: &Value, version: PolicyVersion) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(operators) = value else {
        return Err(syntax());
    };
    let mut out = Vec::new();
    for (operator, block) in operators {
        let Value::Object(keys) = block else {
            return Err(syntax());
        };
        for (key, values) in keys {
            let has_vendor = key
                .split_once(':')
                .is_some_and(|(vendor, rest)| !vendor.is_empty() && !rest.is_empty());
            if !has_vendor {
                return Err(PolicyError::new(VENDOR));
            }
            let values = condition_values(values)?;
            if values.is_empty() {
                return Err(PolicyError::new(format!(
                    "Condition {operator} on key {key} has no values"
                )));
            }
            out.push(Condition::compile(operator, key, &values, version)?);
        }
    }
    Ok(out)
}

/// A condition value is a string, number or boolean, or a list of them;
/// numbers and booleans are compared through their text.
fn condition_values(value: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(syntax()),
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_are_found_in_linear_space() {
        let open = "${".repeat(20_000);
        let closed = "${a}".repeat(20_000) + &"${x".repeat(5_000) + "}";
        let doc = serde_json::json!({"Id": open, "Sid": closed, "Condition": {"StringEquals": {"Svc:Key": "${Svc:Var, 'd'}"}}});
        let keys = keys_read(&doc);
        let bytes: usize = keys.iter().map(|k| k.len()).sum();
        assert!(bytes < 3 * 20_000, "{bytes} bytes kept");
        assert!(keys.iter().any(|k| &**k == "svc:key"));
        assert!(keys.iter().any(|k| &**k == "svc:var"));
        assert!(keys.iter().any(|k| &**k == "a"));
    }
}
