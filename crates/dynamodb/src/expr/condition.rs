//! Condition and filter expressions: comparators, `BETWEEN`, `IN`, the
//! functions (`attribute_exists`, `attribute_not_exists`, `attribute_type`,
//! `begins_with`, `contains`, `size`) and `NOT` > `AND` > `OR` with
//! parentheses.
//!
//! A missing attribute makes every comparison false except `<>`, which is
//! true; values of different types are never ordered.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::lexer::Tok;
use super::parser::{compare, quote_value, Kind, Parser};
use super::{ExprError, Path, Placeholders, MAX_IN_OPERANDS};
use crate::value::{AttributeValue, Item, Number};

/// A parsed condition (or filter) expression.
#[derive(Debug, Clone)]
pub struct Condition {
    root: Cond,
}

impl Condition {
    /// Evaluates the condition against `item` (empty for a missing item).
    pub fn eval(&self, item: &Item) -> Result<bool, ExprError> {
        Ok(self.root.eval(item))
    }

    /// The top-level attribute names the condition reads (for the
    /// `dynamodb:Attributes` condition key), in order, without repeats.
    pub fn top_level_names(&self) -> Vec<String> {
        fn operand(o: &Operand, out: &mut Vec<String>) {
            match o {
                Operand::Path(p) | Operand::Size(p) => path(p, out),
                Operand::Value(_) => {}
            }
        }
        fn path(p: &Path, out: &mut Vec<String>) {
            let name = p.top_level().to_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        // An explicit stack: conditions may nest deeply.
        let mut out = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(c) = stack.pop() {
            match c {
                Cond::Cmp(_, a, b) | Cond::BeginsWith(a, b) | Cond::Contains(a, b) => {
                    operand(a, &mut out);
                    operand(b, &mut out);
                }
                Cond::Between(a, b, c) => {
                    operand(a, &mut out);
                    operand(b, &mut out);
                    operand(c, &mut out);
                }
                Cond::In(a, list) => {
                    operand(a, &mut out);
                    list.iter().for_each(|o| operand(o, &mut out));
                }
                Cond::Exists(p) | Cond::NotExists(p) => path(p, &mut out),
                Cond::Type(p, o) => {
                    path(p, &mut out);
                    operand(o, &mut out);
                }
                Cond::Not(inner) => stack.push(inner),
                Cond::And(list) | Cond::Or(list) => stack.extend(list.iter()),
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Operand {
    Path(Path),
    Value(AttributeValue),
    Size(Path),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Cond {
    Cmp(CmpOp, Operand, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

const BOOL_FUNCTIONS: [&str; 5] = [
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
];

const TYPE_NAMES: [&str; 10] = ["S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M"];

pub(crate) fn parse(text: &str, ph: &Placeholders, kind: Kind) -> Result<Condition, ExprError> {
    let mut p = Parser::new(text, ph, kind)?;
    let root = parse_or(&mut p)?;
    p.expect_eof()?;
    Ok(Condition { root })
}

fn parse_or(p: &mut Parser) -> Result<Cond, ExprError> {
    let mut terms = vec![parse_and(p)?];
    while p.eat_keyword("OR") {
        terms.push(parse_and(p)?);
    }
    Ok(if terms.len() == 1 {
        terms.remove(0)
    } else {
        Cond::Or(terms)
    })
}

fn parse_and(p: &mut Parser) -> Result<Cond, ExprError> {
    let mut terms = vec![parse_not(p)?];
    while p.eat_keyword("AND") {
        terms.push(parse_not(p)?);
    }
    Ok(if terms.len() == 1 {
        terms.remove(0)
    } else {
        Cond::And(terms)
    })
}

fn parse_not(p: &mut Parser) -> Result<Cond, ExprError> {
    if p.eat_keyword("NOT") {
        p.enter()?;
        let inner = parse_not(p)?;
        p.leave();
        return Ok(Cond::Not(Box::new(inner)));
    }
    parse_primary(p)
}

fn parse_primary(p: &mut Parser) -> Result<Cond, ExprError> {
    if p.eat(Tok::LParen) {
        p.enter()?;
        let inner = parse_or(p)?;
        p.expect(Tok::RParen)?;
        p.leave();
        return Ok(inner);
    }
    if p.at_function() && BOOL_FUNCTIONS.contains(&p.text()) {
        return parse_bool_function(p);
    }
    let left = parse_operand(p)?;
    let op = match p.peek() {
        Tok::Eq => Some(CmpOp::Eq),
        Tok::Ne => Some(CmpOp::Ne),
        Tok::Lt => Some(CmpOp::Lt),
        Tok::Le => Some(CmpOp::Le),
        Tok::Gt => Some(CmpOp::Gt),
        Tok::Ge => Some(CmpOp::Ge),
        _ => None,
    };
    if let Some(op) = op {
        let symbol = p.text();
        p.advance();
        let right = parse_operand(p)?;
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            check_orderable(p, symbol, &[&left, &right])?;
        }
        return Ok(Cond::Cmp(op, left, right));
    }
    if p.eat_keyword("BETWEEN") {
        let low = parse_operand(p)?;
        p.expect_keyword("AND")?;
        let high = parse_operand(p)?;
        check_orderable(p, "BETWEEN", &[&left, &low, &high])?;
        if let (Operand::Value(lo), Operand::Value(hi)) = (&low, &high) {
            check_bounds(p, lo, hi)?;
        }
        return Ok(Cond::Between(left, low, high));
    }
    if p.eat_keyword("IN") {
        p.expect(Tok::LParen)?;
        let mut list = vec![parse_operand(p)?];
        while p.eat(Tok::Comma) {
            list.push(parse_operand(p)?);
        }
        p.expect(Tok::RParen)?;
        if list.len() > MAX_IN_OPERANDS {
            return Err(p.err(&format!(
                "The IN operator is provided with too many operands; number of operands: {}",
                list.len()
            )));
        }
        return Ok(Cond::In(left, list));
    }
    Err(p.syntax_error())
}

/// Refuses `BETWEEN :hi AND :lo`.
pub(crate) fn check_bounds(
    p: &Parser,
    lo: &AttributeValue,
    hi: &AttributeValue,
) -> Result<(), ExprError> {
    if compare(lo, hi) == Some(Ordering::Greater) {
        return Err(p.err(&format!(
            "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: {}, upper bound operand: {}",
            quote_value(lo),
            quote_value(hi)
        )));
    }
    Ok(())
}

/// Operands of `<`, `<=`, `>`, `>=` and `BETWEEN` that are literal values
/// must be S, N or B.
fn check_orderable(p: &Parser, op: &str, operands: &[&Operand]) -> Result<(), ExprError> {
    for o in operands {
        if let Operand::Value(v) = o {
            if !v.is_key_type() {
                return Err(incorrect_operand(p, op, v.type_name()));
            }
        }
    }
    Ok(())
}

fn incorrect_operand(p: &Parser, function: &str, type_name: &str) -> ExprError {
    p.err(&format!(
        "Incorrect operand type for operator or function; operator or function: {function}, operand type: {type_name}"
    ))
}

fn parse_operand(p: &mut Parser) -> Result<Operand, ExprError> {
    match p.peek() {
        Tok::ValuePh => Ok(Operand::Value(p.value()?)),
        Tok::Name if p.at_function() => {
            let name = p.text();
            if name != "size" {
                return Err(if BOOL_FUNCTIONS.contains(&name) {
                    p.err(&format!(
                        "The function is not allowed to be used this way in an expression; function: {name}"
                    ))
                } else {
                    p.err(&format!("Invalid function name; function: {name}"))
                });
            }
            let args = parse_args(p)?;
            let [arg] = expect_arity::<1>(p, name, args)?;
            match arg {
                Operand::Path(path) => Ok(Operand::Size(path)),
                _ => Err(p.err(
                    "Operator or function requires a document path; operator or function: size",
                )),
            }
        }
        Tok::Name | Tok::NamePh => Ok(Operand::Path(p.path()?)),
        _ => Err(p.syntax_error()),
    }
}

/// `name(` operand, ... `)`; the current token is the function name.
fn parse_args(p: &mut Parser) -> Result<Vec<Operand>, ExprError> {
    p.advance();
    p.expect(Tok::LParen)?;
    p.enter()?;
    let mut args = vec![parse_operand(p)?];
    while p.eat(Tok::Comma) {
        args.push(parse_operand(p)?);
    }
    p.expect(Tok::RParen)?;
    p.leave();
    Ok(args)
}

fn expect_arity<const N: usize>(
    p: &Parser,
    name: &str,
    args: Vec<Operand>,
) -> Result<[Operand; N], ExprError> {
    let count = args.len();
    args.try_into().map_err(|_| {
        p.err(&format!(
            "Incorrect number of operands for operator or function; operator or function: {name}, number of operands: {count}"
        ))
    })
}

fn require_path(p: &Parser, name: &str, operand: Operand) -> Result<Path, ExprError> {
    match operand {
        Operand::Path(path) => Ok(path),
        _ => Err(p.err(&format!(
            "Operator or function requires a document path; operator or function: {name}"
        ))),
    }
}

fn parse_bool_function(p: &mut Parser) -> Result<Cond, ExprError> {
    let name = p.text();
    let args = parse_args(p)?;
    match name {
        "attribute_exists" | "attribute_not_exists" => {
            let [arg] = expect_arity::<1>(p, name, args)?;
            let path = require_path(p, name, arg)?;
            Ok(if name == "attribute_exists" {
                Cond::Exists(path)
            } else {
                Cond::NotExists(path)
            })
        }
        "attribute_type" => {
            let [arg, ty] = expect_arity::<2>(p, name, args)?;
            let path = require_path(p, name, arg)?;
            if let Operand::Value(v) = &ty {
                match v {
                    AttributeValue::S(s) if TYPE_NAMES.contains(&s.as_str()) => {}
                    AttributeValue::S(s) => {
                        return Err(p.err(&format!(
                            "Invalid attribute type name found; type: {s}, valid types: {{ B,BOOL,BS,L,M,N,NS,NULL,S,SS }}"
                        )))
                    }
                    other => return Err(incorrect_operand(p, name, other.type_name())),
                }
            }
            Ok(Cond::Type(path, ty))
        }
        "begins_with" => {
            let [a, b] = expect_arity::<2>(p, name, args)?;
            for o in [&a, &b] {
                match o {
                    Operand::Value(v)
                        if !matches!(v, AttributeValue::S(_) | AttributeValue::B(_)) =>
                    {
                        return Err(incorrect_operand(p, name, v.type_name()))
                    }
                    Operand::Size(_) => return Err(incorrect_operand(p, name, "N")),
                    _ => {}
                }
            }
            Ok(Cond::BeginsWith(a, b))
        }
        _ => {
            let [a, b] = expect_arity::<2>(p, name, args)?;
            Ok(Cond::Contains(a, b))
        }
    }
}

impl Operand {
    fn get<'a>(&'a self, item: &'a Item) -> Option<Cow<'a, AttributeValue>> {
        match self {
            Operand::Path(path) => path.resolve(item).map(Cow::Borrowed),
            Operand::Value(v) => Some(Cow::Borrowed(v)),
            Operand::Size(path) => {
                let n = match path.resolve(item)? {
                    AttributeValue::S(s) => s.chars().count(),
                    AttributeValue::B(b) => b.len(),
                    AttributeValue::Ss(s) => s.len(),
                    AttributeValue::Ns(s) => s.len(),
                    AttributeValue::Bs(s) => s.len(),
                    AttributeValue::L(l) => l.len(),
                    AttributeValue::M(m) => m.len(),
                    _ => return None,
                };
                Some(Cow::Owned(AttributeValue::N(Number::from(n as i64))))
            }
        }
    }
}

impl Cond {
    fn eval(&self, item: &Item) -> bool {
        match self {
            Cond::Cmp(op, a, b) => {
                let (a, b) = (a.get(item), b.get(item));
                let (Some(a), Some(b)) = (a, b) else {
                    return matches!(op, CmpOp::Ne);
                };
                match op {
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                    CmpOp::Lt => compare(&a, &b) == Some(Ordering::Less),
                    CmpOp::Le => matches!(compare(&a, &b), Some(Ordering::Less | Ordering::Equal)),
                    CmpOp::Gt => compare(&a, &b) == Some(Ordering::Greater),
                    CmpOp::Ge => {
                        matches!(compare(&a, &b), Some(Ordering::Greater | Ordering::Equal))
                    }
                }
            }
            Cond::Between(v, lo, hi) => {
                let (Some(v), Some(lo), Some(hi)) = (v.get(item), lo.get(item), hi.get(item))
                else {
                    return false;
                };
                matches!(compare(&v, &lo), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(compare(&v, &hi), Some(Ordering::Less | Ordering::Equal))
            }
            Cond::In(v, list) => {
                let Some(v) = v.get(item) else { return false };
                list.iter().any(|o| o.get(item).is_some_and(|x| x == v))
            }
            Cond::Exists(path) => path.resolve(item).is_some(),
            Cond::NotExists(path) => path.resolve(item).is_none(),
            Cond::Type(path, ty) => match (path.resolve(item), ty.get(item).as_deref()) {
                (Some(v), Some(AttributeValue::S(t))) => v.type_name() == t,
                _ => false,
            },
            Cond::BeginsWith(a, b) => match (a.get(item).as_deref(), b.get(item).as_deref()) {
                (Some(AttributeValue::S(a)), Some(AttributeValue::S(b))) => {
                    a.starts_with(b.as_str())
                }
                (Some(AttributeValue::B(a)), Some(AttributeValue::B(b))) => a.starts_with(b),
                _ => false,
            },
            Cond::Contains(a, b) => match (a.get(item).as_deref(), b.get(item).as_deref()) {
                (Some(hay), Some(needle)) => contains(hay, needle),
                _ => false,
            },
            Cond::Not(c) => !c.eval(item),
            Cond::And(cs) => cs.iter().all(|c| c.eval(item)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(item)),
        }
    }
}

fn contains(hay: &AttributeValue, needle: &AttributeValue) -> bool {
    use AttributeValue as V;
    match (hay, needle) {
        (V::S(h), V::S(n)) => h.contains(n.as_str()),
        (V::B(h), V::B(n)) => n.is_empty() || h.windows(n.len()).any(|w| w == n.as_slice()),
        (V::Ss(h), V::S(n)) => h.contains(n),
        (V::Ns(h), V::N(n)) => h.contains(n),
        (V::Bs(h), V::B(n)) => h.contains(n),
        (V::L(h), n) => h.contains(n),
        _ => false,
    }
}
