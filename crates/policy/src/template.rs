//! Policy variables (`${aws:username}`, `${aws:PrincipalTag/team, 'none'}`,
//! `${*}`) inside `Resource` entries and string-like condition values.
//!
//! A string is split once, at parse time, into literal text and variable
//! references. What a variable resolves to is always taken literally: a `*`
//! in a user name or a tag never becomes a wildcard. A variable that has no
//! value and no default makes the whole string fail to match (never a
//! wildcard, never an empty string), which is what AWS means by "any attempt to
//! match it fails".

use crate::context::ContextKeys;
use crate::PolicyVersion;

/// One piece of a policy string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text as written in the policy. Where the operator takes wildcards, its
    /// `*` and `?` are wildcards.
    Text(Box<str>),
    /// `${*}`, `${?}` or `${$}`: the character itself, never a wildcard.
    Escaped(&'static str),
    /// `${key}` or `${key, 'default'}`.
    Var(Var),
}

/// A reference to a context key, looked up case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Var {
    /// The key, lowercased (context keys are stored lowercased).
    pub(crate) key: Box<str>,
    pub(crate) default: Option<Box<str>>,
}

/// Where policy variables get their values: the request's context keys.
pub(crate) trait Vars {
    /// The single value of a lowercased key. Multivalued keys have no value
    /// as a variable (AWS: "you can't use multivalued context keys as policy
    /// variables"), so they resolve to `None` as a missing key does.
    fn value(&self, key: &str) -> Option<&str>;
}

impl Vars for ContextKeys {
    fn value(&self, key: &str) -> Option<&str> {
        match self.lookup(key) {
            Some([one]) => Some(one.as_str()),
            _ => None,
        }
    }
}

/// For strings that can hold no variable (actions).
pub(crate) struct NoVars;

impl Vars for NoVars {
    fn value(&self, _key: &str) -> Option<&str> {
        None
    }
}

impl Var {
    pub(crate) fn resolve<'a>(&'a self, vars: &'a dyn Vars) -> Option<&'a str> {
        vars.value(&self.key).or(self.default.as_deref())
    }
}

/// Splits a policy string into parts. In 2008-10-17 documents variables do
/// not exist and the whole string is text.
pub(crate) fn parse(text: &str, version: PolicyVersion) -> Vec<Part> {
    let mut parts = Vec::new();
    if version == PolicyVersion::V2008_10_17 {
        push_text(&mut parts, text);
        return parts;
    }
    // Text is gathered here and pushed once per variable, so that a string
    // full of things that are not variables costs linear time.
    let mut pending = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        // An unterminated or empty `${` is ordinary text, as is anything we
        // cannot read as a variable: the string then simply contains it.
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        let part = match inner {
            "*" => Some(Part::Escaped("*")),
            "?" => Some(Part::Escaped("?")),
            "$" => Some(Part::Escaped("$")),
            _ => parse_var(inner).map(Part::Var),
        };
        match part {
            Some(part) => {
                pending.push_str(&rest[..start]);
                push_text(&mut parts, &std::mem::take(&mut pending));
                parts.push(part);
            }
            None => pending.push_str(&rest[..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    pending.push_str(rest);
    push_text(&mut parts, &pending);
    parts
}

/// `key` or `key, 'default'` (the default in single quotes, as AWS documents;
/// an unquoted default is taken as written).
fn parse_var(inner: &str) -> Option<Var> {
    let (name, default) = match inner.split_once(',') {
        Some((name, default)) => {
            let default = default.trim();
            let default = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .unwrap_or(default);
            (name.trim(), Some(default.into()))
        }
        None => (inner.trim(), None),
    };
    if name.is_empty() {
        return None;
    }
    Some(Var {
        key: crate::context::lower_key(name).into(),
        default,
    })
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
}

/// True when the parts are plain text (no variable): the string can be
/// compared without looking anything up.
pub(crate) fn is_static(parts: &[Part]) -> bool {
    parts.iter().all(|p| !matches!(p, Part::Var(_)))
}

/// The string with variables substituted, or `None` if one has no value.
pub(crate) fn render(parts: &[Part], vars: &dyn Vars) -> Option<String> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Escaped(e) => out.push_str(e),
            Part::Var(v) => out.push_str(v.resolve(vars)?),
        }
    }
    Some(out)
}

/// Exact comparison of `text` with the substituted string, without building
/// it.
pub(crate) fn equals(parts: &[Part], vars: &dyn Vars, text: &str) -> bool {
    let mut rest = text;
    for part in parts {
        let piece = match part {
            Part::Text(t) => &**t,
            Part::Escaped(e) => e,
            Part::Var(v) => match v.resolve(vars) {
                Some(value) => value,
                None => return false,
            },
        };
        match rest.strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Part {
        Part::Text(s.into())
    }

    fn var(k: &str, d: Option<&str>) -> Part {
        Part::Var(Var {
            key: k.into(),
            default: d.map(Into::into),
        })
    }

    #[test]
    fn splits_variables_specials_and_defaults() {
        let v = PolicyVersion::V2012_10_17;
        let cases: &[(&str, Vec<Part>)] = &[
            ("plain", vec![text("plain")]),
            ("", vec![]),
            (
                "home/${aws:username}/*",
                vec![text("home/"), var("aws:username", None), text("/*")],
            ),
            (
                "${aws:PrincipalTag/Team, 'none'}",
                vec![var("aws:principaltag/team", Some("none"))],
            ),
            ("${aws:userid,anon}", vec![var("aws:userid", Some("anon"))]),
            (
                "a${*}b${?}c${$}",
                vec![
                    text("a"),
                    Part::Escaped("*"),
                    text("b"),
                    Part::Escaped("?"),
                    text("c"),
                    Part::Escaped("$"),
                ],
            ),
            ("x${}y", vec![text("x${}y")]),
            ("x${unterminated", vec![text("x${unterminated")]),
            ("$x{y}", vec![text("$x{y}")]),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input, v), want, "{input}");
        }
        assert_eq!(
            parse("${aws:username}", PolicyVersion::V2008_10_17),
            vec![text("${aws:username}")]
        );
    }

    #[test]
    fn renders_and_compares() {
        let mut keys = ContextKeys::new();
        keys.set("aws:username", "alice");
        keys.set_multi("dynamodb:LeadingKeys", vec!["a".into(), "b".into()]);
        let parts = parse("u/${aws:username}", PolicyVersion::V2012_10_17);
        assert_eq!(render(&parts, &keys).as_deref(), Some("u/alice"));
        assert!(equals(&parts, &keys, "u/alice"));
        assert!(!equals(&parts, &keys, "u/alicex"));
        assert!(!equals(&parts, &keys, "u/"));
        let missing = parse("${aws:userid}", PolicyVersion::V2012_10_17);
        assert_eq!(render(&missing, &keys), None);
        assert!(!equals(&missing, &keys, ""));
        let multi = parse("${dynamodb:LeadingKeys}", PolicyVersion::V2012_10_17);
        assert_eq!(render(&multi, &keys), None);
        let defaulted = parse("${aws:userid, 'anonymous'}", PolicyVersion::V2012_10_17);
        assert!(equals(&defaulted, &keys, "anonymous"));
    }
}
