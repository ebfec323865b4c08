//! ARN patterns for `Resource`/`NotResource` and the `Arn...` condition
//! operators.
//!
//! An ARN is `arn:partition:service:region:account:resource`. AWS checks each
//! of the six colon-separated segments on its own, so a wildcard in the region
//! cannot swallow the account; the last segment keeps any further `:` and `/`,
//! and a wildcard there may cross them. Segments are split once, at parse time.

use crate::glob::Glob;
use crate::template::{Part, Vars};

/// A compiled ARN pattern.
#[derive(Debug, Clone)]
pub(crate) enum ArnPattern {
    /// `*`: any resource, including the `*` of actions without resource-level
    /// permissions and values that are not ARNs.
    Any,
    /// The six segment patterns.
    Segments(Box<[Glob; 6]>),
    /// A condition value that has fewer than six segments: it can never match
    /// an ARN segment by segment.
    Never,
}

impl ArnPattern {
    /// Compiles a pattern; `None` when it is neither `*` nor six segments.
    pub(crate) fn compile(parts: &[Part]) -> Option<ArnPattern> {
        if let [Part::Text(t)] = parts {
            if &**t == "*" {
                return Some(ArnPattern::Any);
            }
        }
        let mut segments: Vec<Vec<Part>> = vec![Vec::new()];
        for part in parts {
            match part {
                Part::Text(text) => {
                    let mut rest: &str = text;
                    while segments.len() < 6 {
                        let Some(i) = rest.find(':') else { break };
                        push(&mut segments, &rest[..i]);
                        segments.push(Vec::new());
                        rest = &rest[i + 1..];
                    }
                    push(&mut segments, rest);
                }
                // A substituted value stays inside the segment it starts in:
                // a value with a `:` can then only match in the last segment.
                other => {
                    if let Some(last) = segments.last_mut() {
                        last.push(other.clone());
                    }
                }
            }
        }
        let globs: Vec<Glob> = segments.iter().map(|s| Glob::compile(s, false)).collect();
        let globs: [Glob; 6] = globs.try_into().ok()?;
        Some(ArnPattern::Segments(Box::new(globs)))
    }

    /// Compiles a condition value: like [`ArnPattern::compile`], but a value
    /// that is not ARN-shaped is kept as a pattern that matches nothing.
    pub(crate) fn compile_value(parts: &[Part]) -> ArnPattern {
        ArnPattern::compile(parts).unwrap_or(ArnPattern::Never)
    }

    /// Whether the ARN (or `*`) `text` matches, case-sensitively.
    pub(crate) fn matches(&self, text: &str, vars: &dyn Vars) -> bool {
        self.matches_split(split(text).as_ref(), vars)
    }

    /// [`ArnPattern::matches`] for a text already split by [`split`] (`None`
    /// when it is not an ARN), so that one request resource is split once
    /// for all the statements it is checked against.
    pub(crate) fn matches_split(&self, segments: Option<&[&str; 6]>, vars: &dyn Vars) -> bool {
        match (self, segments) {
            (ArnPattern::Any, _) => true,
            (ArnPattern::Segments(globs), Some(segments)) => {
                globs.iter().zip(segments).all(|(g, s)| g.matches(s, vars))
            }
            _ => false,
        }
    }
}

fn push(segments: &mut [Vec<Part>], text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(last) = segments.last_mut() {
        last.push(Part::Text(text.into()));
    }
}

/// The six segments of an ARN, the last one keeping any further colons.
pub(crate) fn split(arn: &str) -> Option<[&str; 6]> {
    let mut it = arn.splitn(6, ':');
    Some([
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextKeys;
    use crate::template;
    use crate::PolicyVersion;

    fn pat(p: &str) -> Option<ArnPattern> {
        ArnPattern::compile(&template::parse(p, PolicyVersion::V2012_10_17))
    }

    #[test]
    fn segment_table() {
        let keys = ContextKeys::new();
        let t = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders";
        let cases = [
            ("*", "*", true),
            ("*", t, true),
            (t, t, true),
            ("arn:aws:dynamodb:*:123456789012:table/Orders", t, true),
            ("arn:aws:dynamodb:*:*:*", t, true),
            (
                "arn:aws:dynamodb:us-east-?:123456789012:table/Orders",
                t,
                true,
            ),
            (
                "arn:aws:dynamodb:us-east-1:123456789012:table/Ord*",
                t,
                true,
            ),
            (
                "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
                t,
                false,
            ),
            // A wildcard inside a segment does not cross a colon (the IAM
            // User Guide's ArnLike example).
            (
                "arn:aws:someservice:*:111122223333:finance/*",
                "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/x",
                false,
            ),
            (
                "arn:aws:someservice:*:111122223333:finance/*",
                "arn:aws:someservice:us-east-2:111122223333:finance/x",
                true,
            ),
            // Fewer than six segments never match.
            ("arn:aws:dynamodb:*:table/Orders", t, false),
            ("arn:aws:*:table/Orders", t, false),
            // The last segment may contain colons and slashes.
            (
                "arn:aws:logs:us-east-1:123456789012:log-group:app:*",
                "arn:aws:logs:us-east-1:123456789012:log-group:app:log-stream:x",
                true,
            ),
            (
                "arn:aws:dynamodb:us-east-1:123456789012:table/Orders*",
                "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/index/ByDate",
                true,
            ),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b:c", true),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket2/a", false),
            // A request for "*" only matches "*".
            ("arn:aws:dynamodb:*:*:*", "*", false),
            ("arn:*:*:*:*:*", "not-an-arn", false),
        ];
        for (p, text, want) in cases {
            let compiled =
                ArnPattern::compile_value(&template::parse(p, PolicyVersion::V2012_10_17));
            assert_eq!(compiled.matches(text, &keys), want, "{p} vs {text}");
        }
    }

    #[test]
    fn rejects_short_patterns() {
        assert!(pat("arn:aws:s3").is_none());
        assert!(pat("bucket").is_none());
        assert!(pat("").is_none());
        assert!(pat("arn:aws:s3:::").is_some());
    }
}
