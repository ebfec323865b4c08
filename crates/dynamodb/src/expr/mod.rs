//! DynamoDB's expression language: condition and filter expressions,
//! update expressions, projection expressions and key condition expressions.
//!
//! Each `parse_*` function turns the text of one expression into a typed
//! tree, resolving `#name` and `:value` placeholders from a request's
//! [`Placeholders`] (which remembers what was used so that unused ones can be
//! refused afterwards). Evaluation is pure: a [`Condition`] is evaluated
//! against an item, an [`Update`] is applied to one, a [`Projection`] selects
//! from one. Errors carry DynamoDB's `ValidationException` texts.
//!
//! Parsing never recurses without bound: nesting of parentheses, `NOT` and
//! function calls is limited, and so are document path depth and expression
//! length.

mod condition;
mod key;
mod lexer;
mod parser;
mod projection;
mod reserved;
mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;

use crate::value::AttributeValue;

pub use condition::Condition;
pub use key::{KeyCondition, SortCondition};
pub use projection::Projection;
pub use update::Update;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Most elements in one document path (`a.b[1]` has three).
pub const MAX_PATH_DEPTH: usize = 32;
/// Most nested parentheses, `NOT`s and function calls in one expression.
pub const MAX_NESTING: usize = 100;
/// Most operands on the right of `IN`.
pub const MAX_IN_OPERANDS: usize = 100;

/// An expression error; the text is DynamoDB's `ValidationException` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// The `ExpressionAttributeNames` and `ExpressionAttributeValues` of one
/// request, remembering which were used by the expressions parsed with it.
#[derive(Debug)]
pub struct Placeholders {
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
    used_names: Mutex<BTreeSet<String>>,
    used_values: Mutex<BTreeSet<String>>,
}

impl Placeholders {
    pub fn new(
        names: BTreeMap<String, String>,
        values: BTreeMap<String, AttributeValue>,
    ) -> Placeholders {
        Placeholders {
            names,
            values,
            used_names: Mutex::new(BTreeSet::new()),
            used_values: Mutex::new(BTreeSet::new()),
        }
    }

    /// Placeholders for a request that has none.
    pub fn empty() -> Placeholders {
        Placeholders::new(BTreeMap::new(), BTreeMap::new())
    }

    /// Call after parsing every expression of the request: refuses names and
    /// values that no expression used, as DynamoDB does.
    pub fn check_all_used(&self) -> Result<(), ExprError> {
        let unused = |all: Vec<&String>, used: &Mutex<BTreeSet<String>>| -> Vec<String> {
            let used = used.lock().unwrap_or_else(|e| e.into_inner());
            all.into_iter()
                .filter(|k| !used.contains(*k))
                .cloned()
                .collect()
        };
        let names = unused(self.names.keys().collect(), &self.used_names);
        if !names.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                names.join(", ")
            )));
        }
        let values = unused(self.values.keys().collect(), &self.used_values);
        if !values.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                values.join(", ")
            )));
        }
        Ok(())
    }

    /// Resolves `#name` and marks it used.
    pub(crate) fn name(&self, key: &str) -> Option<&str> {
        let v = self.names.get(key)?;
        self.used_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
        Some(v)
    }

    /// Resolves `:value` and marks it used.
    pub(crate) fn value(&self, key: &str) -> Option<&AttributeValue> {
        let v = self.values.get(key)?;
        self.used_values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
        Some(v)
    }
}

/// One step of a document path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElem {
    /// A map key (or the top-level attribute name).
    Key(String),
    /// A list index.
    Index(usize),
}

/// A document path (`a.b[2].c`) with `#names` resolved. The first element is
/// always a [`PathElem::Key`].
///
/// Displays the way DynamoDB's error messages do: `[a, b, [2], c]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    elems: Vec<PathElem>,
}

impl Path {
    /// A top-level attribute.
    pub fn attribute(name: &str) -> Path {
        Path {
            elems: vec![PathElem::Key(name.to_string())],
        }
    }

    pub fn elems(&self) -> &[PathElem] {
        &self.elems
    }

    /// The top-level attribute name.
    pub fn top_level(&self) -> &str {
        match self.elems.first() {
            Some(PathElem::Key(k)) => k,
            _ => "",
        }
    }

    /// The value at this path in `item`, if there is one.
    pub fn resolve<'a>(&self, item: &'a crate::value::Item) -> Option<&'a AttributeValue> {
        let mut cur = item.get(self.top_level())?;
        for e in &self.elems[1..] {
            cur = match (e, cur) {
                (PathElem::Key(k), AttributeValue::M(m)) => m.get(k)?,
                (PathElem::Index(i), AttributeValue::L(l)) => l.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (k, e) in self.elems.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            match e {
                PathElem::Key(s) => f.write_str(s)?,
                PathElem::Index(i) => write!(f, "[{i}]")?,
            }
        }
        f.write_str("]")
    }
}

/// Parses a `ConditionExpression`.
pub fn parse_condition(text: &str, ph: &Placeholders) -> Result<Condition, ExprError> {
    condition::parse(text, ph, parser::Kind::Condition)
}

/// Parses a `FilterExpression` (a condition; errors name the filter).
pub fn parse_filter(text: &str, ph: &Placeholders) -> Result<Condition, ExprError> {
    condition::parse(text, ph, parser::Kind::Filter)
}

/// Parses an `UpdateExpression`.
pub fn parse_update(text: &str, ph: &Placeholders) -> Result<Update, ExprError> {
    update::parse(text, ph)
}

/// Parses a `ProjectionExpression`.
pub fn parse_projection(text: &str, ph: &Placeholders) -> Result<Projection, ExprError> {
    projection::parse(text, ph)
}

/// Parses a `KeyConditionExpression`: `pk = :v` optionally joined by `AND`
/// to one sort key condition (`sk <op> :w`, `sk BETWEEN :a AND :b` or
/// `begins_with(sk, :p)`), in either order. Names are resolved; checking them
/// against the table's key schema is the caller's job (see
/// [`KeyCondition::for_schema`]).
pub fn parse_key_condition(text: &str, ph: &Placeholders) -> Result<KeyCondition, ExprError> {
    key::parse(text, ph)
}

/// Refuses paths that overlap (one is a prefix of the other) or conflict
/// (one indexes a list where the other names a map key), as DynamoDB does
/// for update and projection expressions.
fn check_overlaps(paths: &[&Path], label: &str) -> Result<(), ExprError> {
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let common = a.elems.len().min(b.elems.len());
            let differ = (0..common).find(|&k| a.elems[k] != b.elems[k]);
            let what = match differ {
                None => "overlap",
                Some(k) => match (&a.elems[k], &b.elems[k]) {
                    (PathElem::Key(_), PathElem::Index(_))
                    | (PathElem::Index(_), PathElem::Key(_)) => "conflict",
                    _ => continue,
                },
            };
            return Err(ExprError(format!(
                "Invalid {label}: Two document paths {what} with each other; must remove or rewrite one of these paths; path one: {a}, path two: {b}"
            )));
        }
    }
    Ok(())
}
