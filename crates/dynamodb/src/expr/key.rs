//! Key condition expressions of `Query`: an equality on the partition key,
//! optionally joined by `AND` to one condition on the sort key.

use super::condition::check_bounds;
use super::lexer::Tok;
use super::parser::{Kind, Parser};
use super::{ExprError, Placeholders};
use crate::value::AttributeValue;

/// A condition on the sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum SortCondition {
    Eq(AttributeValue),
    Lt(AttributeValue),
    Le(AttributeValue),
    Gt(AttributeValue),
    Ge(AttributeValue),
    Between(AttributeValue, AttributeValue),
    BeginsWith(AttributeValue),
}

/// A parsed key condition expression, names resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCondition {
    pub partition_name: String,
    pub partition_value: AttributeValue,
    pub sort: Option<(String, SortCondition)>,
}

impl KeyCondition {
    /// With two equalities (`a = :x AND b = :y`) the parser cannot know
    /// which is the partition key and takes the first; this swaps them if
    /// the table's partition key is the other one.
    pub fn for_schema(self, partition_key: &str) -> KeyCondition {
        match self.sort {
            Some((name, SortCondition::Eq(value)))
                if self.partition_name != partition_key && name == partition_key =>
            {
                KeyCondition {
                    partition_name: name,
                    partition_value: value,
                    sort: Some((self.partition_name, SortCondition::Eq(self.partition_value))),
                }
            }
            sort => KeyCondition { sort, ..self },
        }
    }
}

impl SortCondition {
    /// True if `v` satisfies the condition (same-type S, N or B only).
    pub fn matches(&self, v: &AttributeValue) -> bool {
        use std::cmp::Ordering::*;
        let cmp = |w: &AttributeValue| super::parser::compare(v, w);
        match self {
            SortCondition::Eq(w) => cmp(w) == Some(Equal),
            SortCondition::Lt(w) => cmp(w) == Some(Less),
            SortCondition::Le(w) => matches!(cmp(w), Some(Less | Equal)),
            SortCondition::Gt(w) => cmp(w) == Some(Greater),
            SortCondition::Ge(w) => matches!(cmp(w), Some(Greater | Equal)),
            SortCondition::Between(lo, hi) => {
                matches!(cmp(lo), Some(Greater | Equal)) && matches!(cmp(hi), Some(Less | Equal))
            }
            SortCondition::BeginsWith(w) => match (v, w) {
                (AttributeValue::S(a), AttributeValue::S(b)) => a.starts_with(b.as_str()),
                (AttributeValue::B(a), AttributeValue::B(b)) => a.starts_with(b),
                _ => false,
            },
        }
    }
}

const ONE_PER_KEY: &str = "KeyConditionExpressions must only contain one condition per key";

pub(crate) fn parse(text: &str, ph: &Placeholders) -> Result<KeyCondition, ExprError> {
    let mut p = Parser::new(text, ph, Kind::KeyCondition)?;
    let mut terms = vec![term(&mut p)?];
    while p.eat_keyword("AND") {
        terms.push(term(&mut p)?);
    }
    for op in ["OR", "NOT", "IN"] {
        if p.is_keyword(op) {
            return Err(invalid_operator(op));
        }
    }
    p.expect_eof()?;
    if terms.len() > 2 || (terms.len() == 2 && terms[0].0 == terms[1].0) {
        return Err(ExprError(ONE_PER_KEY.into()));
    }
    let partition_at = terms
        .iter()
        .position(|(_, c)| matches!(c, SortCondition::Eq(_)));
    let Some(at) = partition_at else {
        return Err(ExprError("Query key condition not supported".into()));
    };
    let (partition_name, partition) = terms.remove(at);
    let SortCondition::Eq(partition_value) = partition else {
        return Err(ExprError("Query key condition not supported".into()));
    };
    Ok(KeyCondition {
        partition_name,
        partition_value,
        sort: terms.pop(),
    })
}

fn invalid_operator(op: &str) -> ExprError {
    ExprError(format!(
        "Invalid operator used in KeyConditionExpression: {op}"
    ))
}

fn key_name(p: &mut Parser) -> Result<String, ExprError> {
    let path = p.path()?;
    if path.elems().len() != 1 {
        return Err(ExprError(
            "KeyConditionExpressions cannot have conditions on nested attributes".into(),
        ));
    }
    Ok(path.top_level().to_string())
}

fn term(p: &mut Parser) -> Result<(String, SortCondition), ExprError> {
    if p.eat(Tok::LParen) {
        p.enter()?;
        let t = term(p)?;
        p.expect(Tok::RParen)?;
        p.leave();
        return Ok(t);
    }
    if p.is_keyword("NOT") {
        return Err(invalid_operator("NOT"));
    }
    if p.at_function() {
        let name = p.text();
        match name {
            "begins_with" => {}
            "attribute_exists"
            | "attribute_not_exists"
            | "attribute_type"
            | "contains"
            | "size" => return Err(invalid_operator(name)),
            _ => return Err(p.err(&format!("Invalid function name; function: {name}"))),
        }
        p.advance();
        p.expect(Tok::LParen)?;
        let key = key_name(p)?;
        p.expect(Tok::Comma)?;
        let prefix = p.value()?;
        p.expect(Tok::RParen)?;
        if !matches!(prefix, AttributeValue::S(_) | AttributeValue::B(_)) {
            return Err(p.err(&format!(
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: {}",
                prefix.type_name()
            )));
        }
        return Ok((key, SortCondition::BeginsWith(prefix)));
    }
    let key = key_name(p)?;
    let op = p.peek().clone();
    let symbol = p.text();
    let make: fn(AttributeValue) -> SortCondition = match op {
        Tok::Eq => SortCondition::Eq,
        Tok::Lt => SortCondition::Lt,
        Tok::Le => SortCondition::Le,
        Tok::Gt => SortCondition::Gt,
        Tok::Ge => SortCondition::Ge,
        Tok::Ne => return Err(invalid_operator(symbol)),
        Tok::Name if p.is_keyword("IN") => return Err(invalid_operator("IN")),
        Tok::Name if p.eat_keyword("BETWEEN") => {
            let lo = p.value()?;
            p.expect_keyword("AND")?;
            let hi = p.value()?;
            check_bounds(p, &lo, &hi)?;
            return Ok((key, SortCondition::Between(lo, hi)));
        }
        _ => return Err(p.syntax_error()),
    };
    p.advance();
    Ok((key, make(p.value()?)))
}
