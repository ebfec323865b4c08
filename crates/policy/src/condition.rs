//! The `Condition` element: operators, set qualifiers and their semantics.
//!
//! How one condition (operator, key, policy values) is decided, following the
//! IAM User Guide ("Condition operators", "Creating a condition with multiple
//! keys or values"):
//! - several policy values for the key are OR-ed: a context value matches when
//!   it matches any of them;
//! - a key that is missing (or has an empty set of values) makes positive
//!   operators false and negated operators (`StringNotEquals`, `NotIpAddress`,
//!   `ArnNotLike`, ...) true; with `...IfExists` the condition is true;
//! - `ForAllValues:` is true when every context value passes the operator,
//!   and true when the key is missing or empty; `ForAnyValue:` is true when at
//!   least one does, and false when the key is missing or empty. For a negated
//!   operator "passes" means "matches none of the policy values";
//! - without a qualifier, a key with several values (AWS says multivalued keys
//!   need a set operator, and leaves this case undefined) is treated as
//!   `ForAnyValue` for positive operators and as "no value matches" for
//!   negated ones, i.e. the negation of the positive operator. For a
//!   single-valued key, all three readings agree;
//! - `Null` is true for `"true"` when the key is missing or empty, and for
//!   `"false"` when it has a value.
//!
//! Policy variables are substituted in the values of the string, `Bool` and
//! ARN operators only, as AWS does; for `Numeric`, `Date`, `Binary`,
//! `IpAddress` and `Null` a `${...}` is not a variable and the value must parse
//! as written.

use crate::arn::ArnPattern;
use crate::context::ContextKeys;
use crate::glob::Glob;
use crate::scalar::{self, Cidr};
use crate::template::{self, Part};
use crate::{PolicyError, PolicyVersion};

/// One compiled `"Operator": { "key": values }` entry.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    qualifier: Qualifier,
    negated: bool,
    if_exists: bool,
    /// The context key, lowercased.
    key: Box<str>,
    values: Values,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    None,
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, context: T, policy: T) -> bool {
        match self {
            Cmp::Eq => context == policy,
            Cmp::Lt => context < policy,
            Cmp::Le => context <= policy,
            Cmp::Gt => context > policy,
            Cmp::Ge => context >= policy,
        }
    }
}

/// The policy values, converted for their operator.
#[derive(Debug, Clone)]
enum Values {
    /// `StringEquals`/`StringNotEquals`: exact, case-sensitive.
    Equals(Vec<Text>),
    /// `StringEqualsIgnoreCase` and `Bool`: compared after lowercasing.
    EqualsIgnoreCase(Vec<Text>),
    /// `StringLike`/`StringNotLike`.
    Like(Vec<Glob>),
    Numeric(Cmp, Vec<f64>),
    Date(Cmp, Vec<i128>),
    Binary(Vec<Vec<u8>>),
    Ip(Vec<Cidr>),
    /// `ArnEquals`/`ArnLike` and their negations (AWS: they behave
    /// identically).
    Arn(Vec<ArnPattern>),
    /// `Null`: `true` means "the key must be absent".
    Null(Vec<bool>),
}

/// A string value, with its variables parsed.
#[derive(Debug, Clone)]
enum Text {
    /// No variable; for case-insensitive operators already lowercased.
    Static(Box<str>),
    Dynamic(Box<[Part]>),
}

/// What the operator name says, before the values are converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Equals,
    EqualsIgnoreCase,
    Like,
    Numeric(Cmp),
    Date(Cmp),
    Bool,
    Binary,
    Ip,
    Arn,
    Null,
}

impl Condition {
    /// `ForAllValues:StringEquals on dynamodb:leadingkeys`-style text for messages
    /// (the operator family and qualifier, and the key as evaluated).
    pub(crate) fn describe(&self) -> String {
        let qualifier = match self.qualifier {
            Qualifier::None => "",
            Qualifier::ForAllValues => "ForAllValues:",
            Qualifier::ForAnyValue => "ForAnyValue:",
        };
        let family = match &self.values {
            Values::Equals(_) | Values::EqualsIgnoreCase(_) => "String",
            _ => "",
        };
        let not = if self.negated { "Not" } else { "" };
        let if_exists = if self.if_exists { "IfExists" } else { "" };
        format!("{qualifier}{family}{not}{if_exists} on {}", self.key)
    }

    /// Compiles one key of one operator block. `values` are the policy's
    /// values as strings (JSON numbers and booleans already in their text
    /// form).
    pub(crate) fn compile(
        operator: &str,
        key: &str,
        values: &[String],
        version: PolicyVersion,
    ) -> Result<Condition, PolicyError> {
        let invalid_type = || PolicyError::new(format!("Invalid Condition type : {operator}"));
        let (qualifier, rest) = if let Some(r) = operator.strip_prefix("ForAllValues:") {
            (Qualifier::ForAllValues, r)
        } else if let Some(r) = operator.strip_prefix("ForAnyValue:") {
            (Qualifier::ForAnyValue, r)
        } else {
            (Qualifier::None, operator)
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let (kind, negated) = kind_of(base).ok_or_else(invalid_type)?;
        // AWS: "You can add IfExists to the end of any condition operator name
        // except the Null condition".
        if kind == Kind::Null && if_exists {
            return Err(invalid_type());
        }
        let bad_value = |v: &str| {
            PolicyError::new(format!(
                "Invalid value {v:?} for condition operator {operator} on key {key}"
            ))
        };
        let with_vars = |v: &String| template::parse(v, version);
        let values = match kind {
            Kind::Equals => {
                Values::Equals(values.iter().map(|v| text(with_vars(v), false)).collect())
            }
            Kind::EqualsIgnoreCase | Kind::Bool => {
                Values::EqualsIgnoreCase(values.iter().map(|v| text(with_vars(v), true)).collect())
            }
            Kind::Like => Values::Like(
                values
                    .iter()
                    .map(|v| Glob::compile(&with_vars(v), false))
                    .collect(),
            ),
            Kind::Numeric(cmp) => {
                Values::Numeric(cmp, convert(values, scalar::parse_number, bad_value)?)
            }
            Kind::Date(cmp) => Values::Date(cmp, convert(values, scalar::parse_date, bad_value)?),
            Kind::Binary => Values::Binary(convert(values, scalar::decode_base64, bad_value)?),
            Kind::Ip => Values::Ip(convert(values, Cidr::parse, bad_value)?),
            Kind::Arn => Values::Arn(
                values
                    .iter()
                    .map(|v| ArnPattern::compile_value(&with_vars(v)))
                    .collect(),
            ),
            Kind::Null => Values::Null(convert(values, parse_bool, bad_value)?),
        };
        Ok(Condition {
            qualifier,
            negated,
            if_exists,
            key: crate::context::lower_key(key).into(),
            values,
        })
    }

    /// Whether the condition holds for the request.
    pub(crate) fn holds(&self, keys: &ContextKeys) -> bool {
        let present = keys.lookup(&self.key).filter(|v| !v.is_empty());
        if let Values::Null(wants_absent) = &self.values {
            return wants_absent.contains(&present.is_none());
        }
        let Some(context) = present else {
            if self.if_exists {
                return true;
            }
            return match self.qualifier {
                Qualifier::ForAllValues => true,
                Qualifier::ForAnyValue => false,
                Qualifier::None => self.negated,
            };
        };
        // A context value "passes" a positive operator when it matches a
        // policy value, and a negated one when it matches none.
        let passes = |v: &String| self.matches_any(v, keys) != self.negated;
        match self.qualifier {
            Qualifier::ForAllValues => context.iter().all(passes),
            Qualifier::ForAnyValue => context.iter().any(passes),
            Qualifier::None if self.negated => context.iter().all(passes),
            Qualifier::None => context.iter().any(passes),
        }
    }

    /// Whether one context value matches at least one policy value.
    fn matches_any(&self, value: &str, keys: &ContextKeys) -> bool {
        match &self.values {
            Values::Equals(texts) => texts.iter().any(|t| match t {
                Text::Static(s) => **s == *value,
                Text::Dynamic(parts) => template::equals(parts, keys, value),
            }),
            Values::EqualsIgnoreCase(texts) => texts.iter().any(|t| match t {
                Text::Static(lower) => eq_ignore_case(value, lower),
                Text::Dynamic(parts) => template::render(parts, keys)
                    .is_some_and(|s| eq_ignore_case(value, &lowercase(&s))),
            }),
            Values::Like(globs) => globs.iter().any(|g| g.matches(value, keys)),
            Values::Numeric(cmp, numbers) => match scalar::parse_number(value) {
                Some(n) => numbers.iter().any(|&p| cmp.holds(n, p)),
                None => false,
            },
            Values::Date(cmp, dates) => match scalar::parse_date(value) {
                Some(d) => dates.iter().any(|&p| cmp.holds(d, p)),
                None => false,
            },
            Values::Binary(blobs) => match scalar::decode_base64(value) {
                Some(bytes) => blobs.contains(&bytes),
                None => false,
            },
            Values::Ip(cidrs) => match scalar::parse_ip(value) {
                Some(ip) => cidrs.iter().any(|c| c.contains(ip)),
                None => false,
            },
            Values::Arn(patterns) => patterns.iter().any(|p| p.matches(value, keys)),
            Values::Null(_) => false,
        }
    }
}

fn kind_of(base: &str) -> Option<(Kind, bool)> {
    Some(match base {
        "StringEquals" => (Kind::Equals, false),
        "StringNotEquals" => (Kind::Equals, true),
        "StringEqualsIgnoreCase" => (Kind::EqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Kind::EqualsIgnoreCase, true),
        "StringLike" => (Kind::Like, false),
        "StringNotLike" => (Kind::Like, true),
        "NumericEquals" => (Kind::Numeric(Cmp::Eq), false),
        "NumericNotEquals" => (Kind::Numeric(Cmp::Eq), true),
        "NumericLessThan" => (Kind::Numeric(Cmp::Lt), false),
        "NumericLessThanEquals" => (Kind::Numeric(Cmp::Le), false),
        "NumericGreaterThan" => (Kind::Numeric(Cmp::Gt), false),
        "NumericGreaterThanEquals" => (Kind::Numeric(Cmp::Ge), false),
        "DateEquals" => (Kind::Date(Cmp::Eq), false),
        "DateNotEquals" => (Kind::Date(Cmp::Eq), true),
        "DateLessThan" => (Kind::Date(Cmp::Lt), false),
        "DateLessThanEquals" => (Kind::Date(Cmp::Le), false),
        "DateGreaterThan" => (Kind::Date(Cmp::Gt), false),
        "DateGreaterThanEquals" => (Kind::Date(Cmp::Ge), false),
        "Bool" => (Kind::Bool, false),
        "BinaryEquals" => (Kind::Binary, false),
        "IpAddress" => (Kind::Ip, false),
        "NotIpAddress" => (Kind::Ip, true),
        "ArnEquals" | "ArnLike" => (Kind::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (Kind::Arn, true),
        "Null" => (Kind::Null, false),
        _ => return None,
    })
}

fn text(parts: Vec<Part>, lowercase: bool) -> Text {
    if template::is_static(&parts) {
        // Static parts are text and escapes only; joining them gives the
        // literal string.
        let joined = template::render(&parts, &template::NoVars).unwrap_or_default();
        Text::Static(if lowercase {
            self::lowercase(&joined).into()
        } else {
            joined.into()
        })
    } else {
        Text::Dynamic(parts.into())
    }
}

fn convert<T>(
    values: &[String],
    parse: impl Fn(&str) -> Option<T>,
    bad: impl Fn(&str) -> PolicyError,
) -> Result<Vec<T>, PolicyError> {
    values
        .iter()
        .map(|v| parse(v).ok_or_else(|| bad(v)))
        .collect()
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Lowercases character by character, the same way [`eq_ignore_case`]
/// folds the context value (`str::to_lowercase` treats a final sigma
/// differently).
fn lowercase(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Case-insensitive equality of `value` with an already lowercased string,
/// without allocating.
fn eq_ignore_case(value: &str, lower: &str) -> bool {
    if value.is_ascii() && lower.is_ascii() {
        return value.eq_ignore_ascii_case(lower);
    }
    value.chars().flat_map(char::to_lowercase).eq(lower.chars())
}
