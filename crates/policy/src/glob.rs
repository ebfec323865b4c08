//! `*` and `?` wildcards, as used by `Action`, by each segment of a
//! `Resource` ARN, and by `StringLike`.
//!
//! A pattern is compiled once into literal runs and wildcard tokens. The common
//! shapes (`*`, an exact name, `prefix*`) get their own variants so that most
//! comparisons are a single string comparison.

use crate::template::{Part, Var, Vars};

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    /// `*`: anything, including the empty string.
    Any,
    /// No wildcard and no variable.
    Exact(Box<str>),
    /// Literal text followed by one trailing `*`.
    Prefix(Box<str>),
    /// Anything else.
    Tokens(Box<[Tok]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Literal text (from the policy, or an escaped `${*}`).
    Lit(Box<str>),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    One,
    /// A policy variable, whose value is matched literally.
    Var(Var),
}

impl Glob {
    /// Compiles template parts. With `lowercase`, literal text is ASCII
    /// lowercased: action patterns are, and so are the actions they are
    /// matched against, which makes action matching case-insensitive.
    pub(crate) fn compile(parts: &[Part], lowercase: bool) -> Glob {
        let mut toks: Vec<Tok> = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, toks: &mut Vec<Tok>| {
            if !lit.is_empty() {
                toks.push(Tok::Lit(std::mem::take(lit).into()));
            }
        };
        for part in parts {
            match part {
                Part::Text(text) => {
                    for c in text.chars() {
                        match c {
                            '*' => {
                                flush(&mut lit, &mut toks);
                                // Consecutive stars mean the same as one.
                                if toks.last() != Some(&Tok::Star) {
                                    toks.push(Tok::Star);
                                }
                            }
                            '?' => {
                                flush(&mut lit, &mut toks);
                                toks.push(Tok::One);
                            }
                            _ if lowercase => lit.push(c.to_ascii_lowercase()),
                            _ => lit.push(c),
                        }
                    }
                }
                Part::Escaped(e) => lit.push_str(e),
                Part::Var(v) => {
                    flush(&mut lit, &mut toks);
                    toks.push(Tok::Var(v.clone()));
                }
            }
        }
        flush(&mut lit, &mut toks);
        match toks.as_slice() {
            [] => Glob::Exact("".into()),
            [Tok::Star] => Glob::Any,
            [Tok::Lit(l)] => Glob::Exact(l.clone()),
            [Tok::Lit(l), Tok::Star] => Glob::Prefix(l.clone()),
            _ => Glob::Tokens(toks.into()),
        }
    }

    /// Compiles a string with no variables.
    pub(crate) fn literal(pattern: &str, lowercase: bool) -> Glob {
        Glob::compile(&[Part::Text(pattern.into())], lowercase)
    }

    /// Whether `text` matches, case-sensitively.
    pub(crate) fn matches(&self, text: &str, vars: &dyn Vars) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(e) => **e == *text,
            Glob::Prefix(p) => text.as_bytes().starts_with(p.as_bytes()),
            // Every way through the pattern passes every token, so a variable
            // without a value fails the whole match by itself.
            Glob::Tokens(toks) => match_tokens(toks, text.as_bytes(), vars),
        }
    }
}

/// Length of the UTF-8 character starting with `b`. `text` always comes from
/// a `&str` and positions only move by whole characters or whole literals, so
/// `b` is a leading byte.
fn char_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

/// Iterative wildcard matching with one backtrack point (the last `*`): each
/// run between stars is matched at its leftmost possible position, which is
/// enough for `*`/`?` patterns and costs at most O(pattern × text).
fn match_tokens(toks: &[Tok], text: &[u8], vars: &dyn Vars) -> bool {
    let mut ti = 0;
    let mut pos = 0;
    // (token index after the last star, text position that star has reached)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(tok) = toks.get(ti) {
            let advanced = match tok {
                Tok::Star => {
                    if ti + 1 == toks.len() {
                        return true;
                    }
                    star = Some((ti + 1, pos));
                    ti += 1;
                    continue;
                }
                Tok::One => (pos < text.len()).then(|| char_len(text[pos])),
                Tok::Lit(l) => literal_at(l.as_bytes(), text, pos),
                Tok::Var(v) => match v.resolve(vars) {
                    Some(value) => literal_at(value.as_bytes(), text, pos),
                    None => None,
                },
            };
            if let Some(n) = advanced {
                pos = (pos + n).min(text.len());
                ti += 1;
                continue;
            }
        } else if pos == text.len() {
            return true;
        }
        match star {
            Some((resume, reached)) if reached < text.len() => {
                let next = (reached + char_len(text[reached])).min(text.len());
                star = Some((resume, next));
                ti = resume;
                pos = next;
            }
            _ => return false,
        }
    }
}

fn literal_at(lit: &[u8], text: &[u8], pos: usize) -> Option<usize> {
    text.get(pos..)?.starts_with(lit).then_some(lit.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextKeys;
    use crate::template::{self, NoVars};
    use crate::PolicyVersion;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::literal(pattern, false).matches(text, &NoVars)
    }

    #[test]
    fn wildcard_table() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("ab*", "ab", true),
            ("ab*", "abxyz", true),
            ("ab*", "a", false),
            ("*c", "abc", true),
            ("*c", "abd", false),
            ("a*c", "ac", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "abbc", false),
            ("a?c", "aéc", true),
            ("??", "é", false),
            ("?", "é", true),
            ("*??", "é", false),
            ("*??", "éa", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("*a*a*", "aa", true),
            ("*a*a*", "a", false),
            ("**", "x", true),
            ("*.txt", "report.txt.gz", false),
            ("*.txt*", "report.txt.gz", true),
            ("Get*Item", "GetItem", true),
            ("Get*Item", "getitem", false),
            ("ab*cd?", "abcdcde", true),
            ("mississippi*", "mississippi", true),
            ("*issip*", "mississippi", true),
            ("*sip?i", "mississippi", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(m(p, t), want, "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn lowercasing_applies_to_literal_text_only() {
        let g = Glob::literal("DynamoDB:Get*", true);
        assert!(g.matches("dynamodb:getitem", &NoVars));
        assert!(!g.matches("dynamodb:GetItem", &NoVars));
        assert!(!g.matches("dynamodb:putitem", &NoVars));
        assert_eq!(Glob::literal("A?B*", true), Glob::literal("a?b*", false));
    }

    #[test]
    fn variables_match_literally() {
        let mut keys = ContextKeys::new();
        keys.set("aws:username", "a*");
        let parts = template::parse("home/${aws:username}/*", PolicyVersion::V2012_10_17);
        let g = Glob::compile(&parts, false);
        assert!(g.matches("home/a*/x", &keys));
        assert!(!g.matches("home/ab/x", &keys));
        let missing = template::parse("home/${aws:userid}*", PolicyVersion::V2012_10_17);
        assert!(!Glob::compile(&missing, false).matches("home/", &keys));
        let escaped = template::parse("a${*}", PolicyVersion::V2012_10_17);
        let g = Glob::compile(&escaped, false);
        assert!(g.matches("a*", &keys));
        assert!(!g.matches("ab", &keys));
    }
}
