//! Update expressions: `SET` (with `+`, `-`, `if_not_exists`,
//! `list_append`), `REMOVE`, `ADD` and `DELETE`.
//!
//! Every operand is read from the item as it was before the update, as
//! DynamoDB does; an update that fails leaves the item untouched.

use std::cmp::Ordering;

use super::lexer::Tok;
use super::parser::{long_type_name, Kind, Parser};
use super::{check_overlaps, ExprError, Path, PathElem, Placeholders};
use crate::value::{AttributeValue, Item, ValueError};

/// A parsed update expression.
#[derive(Debug, Clone)]
pub struct Update {
    actions: Vec<Action>,
}

#[derive(Debug, Clone)]
enum Action {
    Set(Path, SetValue),
    Remove(Path),
    Add(Path, AttributeValue),
    Delete(Path, AttributeValue),
}

#[derive(Debug, Clone)]
enum SetValue {
    One(SetOperand),
    Plus(SetOperand, SetOperand),
    Minus(SetOperand, SetOperand),
}

#[derive(Debug, Clone)]
enum SetOperand {
    Path(Path),
    Value(AttributeValue),
    IfNotExists(Path, Box<SetOperand>),
    ListAppend(Box<SetOperand>, Box<SetOperand>),
}

const MISSING: &str =
    "The provided expression refers to an attribute that does not exist in the item";
const WRONG_TYPE: &str = "An operand in the update expression has an incorrect data type";
const BAD_PATH: &str = "The document path provided in the update expression is invalid for update";

const SECTIONS: [&str; 4] = ["SET", "REMOVE", "ADD", "DELETE"];

pub(crate) fn parse(text: &str, ph: &Placeholders) -> Result<Update, ExprError> {
    let mut p = Parser::new(text, ph, Kind::Update)?;
    let mut seen = [false; 4];
    let mut actions = Vec::new();
    while p.peek() != &Tok::Eof {
        let Some(section) = SECTIONS.iter().position(|s| p.is_keyword(s)) else {
            return Err(p.syntax_error());
        };
        if seen[section] {
            return Err(p.err(&format!(
                "The \"{}\" section can only be used once in an update expression;",
                SECTIONS[section]
            )));
        }
        seen[section] = true;
        p.advance();
        loop {
            actions.push(parse_action(&mut p, section)?);
            if !p.eat(Tok::Comma) {
                break;
            }
        }
    }
    let targets: Vec<&Path> = actions.iter().map(Action::path).collect();
    check_overlaps(&targets, Kind::Update.label())?;
    Ok(Update { actions })
}

fn parse_action(p: &mut Parser, section: usize) -> Result<Action, ExprError> {
    let path = p.path()?;
    match SECTIONS[section] {
        "SET" => {
            p.expect(Tok::Eq)?;
            let left = parse_operand(p)?;
            let arithmetic = match p.peek() {
                Tok::Plus => Some(true),
                Tok::Minus => Some(false),
                _ => None,
            };
            let Some(plus) = arithmetic else {
                return Ok(Action::Set(path, SetValue::One(left)));
            };
            let symbol = if plus { "+" } else { "-" };
            p.advance();
            let right = parse_operand(p)?;
            for o in [&left, &right] {
                if let SetOperand::Value(v) = o {
                    if !matches!(v, AttributeValue::N(_)) {
                        return Err(incorrect_operand(p, symbol, v.type_name()));
                    }
                }
            }
            let value = if plus {
                SetValue::Plus(left, right)
            } else {
                SetValue::Minus(left, right)
            };
            Ok(Action::Set(path, value))
        }
        "REMOVE" => Ok(Action::Remove(path)),
        section => {
            let value = p.value()?;
            let ok = match section {
                "ADD" => matches!(
                    value,
                    AttributeValue::N(_)
                        | AttributeValue::Ss(_)
                        | AttributeValue::Ns(_)
                        | AttributeValue::Bs(_)
                ),
                _ => matches!(
                    value,
                    AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_)
                ),
            };
            if !ok {
                return Err(p.err(&format!(
                    "Incorrect operand type for operator or function; operator: {section}, operand type: {}",
                    long_type_name(&value)
                )));
            }
            Ok(if section == "ADD" {
                Action::Add(path, value)
            } else {
                Action::Delete(path, value)
            })
        }
    }
}

fn incorrect_operand(p: &Parser, function: &str, type_name: &str) -> ExprError {
    p.err(&format!(
        "Incorrect operand type for operator or function; operator or function: {function}, operand type: {type_name}"
    ))
}

fn parse_operand(p: &mut Parser) -> Result<SetOperand, ExprError> {
    match p.peek() {
        Tok::ValuePh => Ok(SetOperand::Value(p.value()?)),
        Tok::Name if p.at_function() => {
            let name = p.text();
            match name {
                "if_not_exists" | "list_append" => {}
                "attribute_exists"
                | "attribute_not_exists"
                | "attribute_type"
                | "begins_with"
                | "contains"
                | "size" => {
                    return Err(p.err(&format!(
                        "The function is not allowed in an update expression; function: {name}"
                    )))
                }
                _ => return Err(p.err(&format!("Invalid function name; function: {name}"))),
            }
            p.advance();
            p.expect(Tok::LParen)?;
            p.enter()?;
            let first = parse_operand(p)?;
            p.expect(Tok::Comma)?;
            let second = parse_operand(p)?;
            p.expect(Tok::RParen)?;
            p.leave();
            if name == "if_not_exists" {
                let SetOperand::Path(path) = first else {
                    return Err(p.err(
                        "Operator or function requires a document path; operator or function: if_not_exists",
                    ));
                };
                return Ok(SetOperand::IfNotExists(path, Box::new(second)));
            }
            for o in [&first, &second] {
                if let SetOperand::Value(v) = o {
                    if !matches!(v, AttributeValue::L(_)) {
                        return Err(incorrect_operand(p, name, v.type_name()));
                    }
                }
            }
            Ok(SetOperand::ListAppend(Box::new(first), Box::new(second)))
        }
        Tok::Name | Tok::NamePh => Ok(SetOperand::Path(p.path()?)),
        _ => Err(p.syntax_error()),
    }
}

impl Action {
    fn path(&self) -> &Path {
        match self {
            Action::Set(p, _) | Action::Remove(p) | Action::Add(p, _) | Action::Delete(p, _) => p,
        }
    }
}

impl Update {
    /// Applies the update to `item` and returns the top-level attribute
    /// names it touched, in expression order. On error `item` is unchanged.
    pub fn apply(&self, item: &mut Item) -> Result<Vec<String>, ExprError> {
        // Compute every new value from the original item first.
        enum Write {
            Put(AttributeValue),
            Remove,
        }
        let mut writes: Vec<(&Path, Write)> = Vec::with_capacity(self.actions.len());
        for action in &self.actions {
            let write = match action {
                Action::Set(_, value) => Write::Put(eval_value(value, item)?),
                Action::Remove(_) => Write::Remove,
                Action::Add(path, value) => Write::Put(add(path.resolve(item), value)?),
                Action::Delete(path, value) => match path.resolve(item) {
                    None => continue,
                    Some(current) => match delete(current, value)? {
                        Some(rest) => Write::Put(rest),
                        None => Write::Remove,
                    },
                },
            };
            writes.push((action.path(), write));
        }
        // Removals last, list elements from the highest index down, so that
        // indexes keep referring to the original list.
        writes.sort_by(|(pa, wa), (pb, wb)| match (wa, wb) {
            (Write::Put(_), Write::Remove) => Ordering::Less,
            (Write::Remove, Write::Put(_)) => Ordering::Greater,
            (Write::Remove, Write::Remove) => removal_order(pa, pb),
            _ => Ordering::Equal,
        });
        let mut work = item.clone();
        for (path, write) in writes {
            match write {
                Write::Put(v) => put(&mut work, path, v)?,
                Write::Remove => remove(&mut work, path)?,
            }
        }
        let names = self.top_level_names();
        for name in &names {
            if let Some(v) = work.get(name) {
                v.check_nesting().map_err(value_error)?;
            }
        }
        *item = work;
        Ok(names)
    }

    /// Top-level attribute names the update touches, in expression order.
    pub fn top_level_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for a in &self.actions {
            let name = a.path().top_level();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }
}

fn removal_order(a: &Path, b: &Path) -> Ordering {
    for (x, y) in a.elems.iter().zip(&b.elems) {
        let o = match (x, y) {
            (PathElem::Index(i), PathElem::Index(j)) => j.cmp(i),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.elems.len().cmp(&b.elems.len())
}

fn value_error(e: ValueError) -> ExprError {
    ExprError(e.0)
}

fn eval_value(value: &SetValue, item: &Item) -> Result<AttributeValue, ExprError> {
    let (left, right, plus) = match value {
        SetValue::One(o) => return eval_operand(o, item),
        SetValue::Plus(a, b) => (a, b, true),
        SetValue::Minus(a, b) => (a, b, false),
    };
    match (eval_operand(left, item)?, eval_operand(right, item)?) {
        (AttributeValue::N(a), AttributeValue::N(b)) => {
            let n = if plus { a.add(&b) } else { a.sub(&b) };
            Ok(AttributeValue::N(n.map_err(value_error)?))
        }
        _ => Err(ExprError(WRONG_TYPE.into())),
    }
}

fn eval_operand(o: &SetOperand, item: &Item) -> Result<AttributeValue, ExprError> {
    match o {
        SetOperand::Path(p) => p
            .resolve(item)
            .cloned()
            .ok_or_else(|| ExprError(MISSING.into())),
        SetOperand::Value(v) => Ok(v.clone()),
        SetOperand::IfNotExists(p, fallback) => match p.resolve(item) {
            Some(v) => Ok(v.clone()),
            None => eval_operand(fallback, item),
        },
        SetOperand::ListAppend(a, b) => match (eval_operand(a, item)?, eval_operand(b, item)?) {
            (AttributeValue::L(mut a), AttributeValue::L(b)) => {
                a.extend(b);
                Ok(AttributeValue::L(a))
            }
            _ => Err(ExprError(WRONG_TYPE.into())),
        },
    }
}

fn add(
    current: Option<&AttributeValue>,
    value: &AttributeValue,
) -> Result<AttributeValue, ExprError> {
    use AttributeValue as V;
    fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = a.to_vec();
        out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
        out
    }
    Ok(match (current, value) {
        (None, v) => v.clone(),
        (Some(V::N(a)), V::N(b)) => V::N(a.add(b).map_err(value_error)?),
        (Some(V::Ss(a)), V::Ss(b)) => V::Ss(union(a, b)),
        (Some(V::Ns(a)), V::Ns(b)) => V::Ns(union(a, b)),
        (Some(V::Bs(a)), V::Bs(b)) => V::Bs(union(a, b)),
        _ => return Err(ExprError(WRONG_TYPE.into())),
    })
}

/// The set left after removing `value`'s elements, or `None` if empty.
fn delete(
    current: &AttributeValue,
    value: &AttributeValue,
) -> Result<Option<AttributeValue>, ExprError> {
    use AttributeValue as V;
    fn minus<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    }
    let rest = match (current, value) {
        (V::Ss(a), V::Ss(b)) => V::Ss(minus(a, b)),
        (V::Ns(a), V::Ns(b)) => V::Ns(minus(a, b)),
        (V::Bs(a), V::Bs(b)) => V::Bs(minus(a, b)),
        _ => return Err(ExprError(WRONG_TYPE.into())),
    };
    let empty = match &rest {
        V::Ss(s) => s.is_empty(),
        V::Ns(s) => s.is_empty(),
        V::Bs(s) => s.is_empty(),
        _ => false,
    };
    Ok(if empty { None } else { Some(rest) })
}

/// The value holding the last element of `path` (a map or list), if any.
fn parent_mut<'a>(item: &'a mut Item, path: &Path) -> Option<&'a mut AttributeValue> {
    let (_, middle) = path.elems.split_last()?;
    let mut cur = item.get_mut(path.top_level())?;
    for e in &middle[1..] {
        cur = match (e, cur) {
            (PathElem::Key(k), AttributeValue::M(m)) => m.get_mut(k)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn put(item: &mut Item, path: &Path, value: AttributeValue) -> Result<(), ExprError> {
    if path.elems.len() == 1 {
        item.insert(path.top_level().to_string(), value);
        return Ok(());
    }
    let bad = || ExprError(BAD_PATH.into());
    match (path.elems.last(), parent_mut(item, path).ok_or_else(bad)?) {
        (Some(PathElem::Key(k)), AttributeValue::M(m)) => {
            m.insert(k.clone(), value);
        }
        (Some(PathElem::Index(i)), AttributeValue::L(l)) => {
            if *i < l.len() {
                l[*i] = value;
            } else {
                l.push(value);
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn remove(item: &mut Item, path: &Path) -> Result<(), ExprError> {
    if path.elems.len() == 1 {
        item.remove(path.top_level());
        return Ok(());
    }
    let bad = || ExprError(BAD_PATH.into());
    match (path.elems.last(), parent_mut(item, path).ok_or_else(bad)?) {
        (Some(PathElem::Key(k)), AttributeValue::M(m)) => {
            m.remove(k);
        }
        (Some(PathElem::Index(i)), AttributeValue::L(l)) => {
            if *i < l.len() {
                l.remove(*i);
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}
