//! Projection expressions: a comma-separated list of document paths that
//! selects parts of an item.

use std::collections::BTreeMap;

use super::lexer::Tok;
use super::parser::{Kind, Parser};
use super::{check_overlaps, ExprError, Path, PathElem, Placeholders};
use crate::value::{AttributeValue, Item};

/// A parsed projection expression.
#[derive(Debug, Clone)]
pub struct Projection {
    paths: Vec<Path>,
}

pub(crate) fn parse(text: &str, ph: &Placeholders) -> Result<Projection, ExprError> {
    let mut p = Parser::new(text, ph, Kind::Projection)?;
    let mut paths = vec![p.path()?];
    while p.eat(Tok::Comma) {
        paths.push(p.path()?);
    }
    p.expect_eof()?;
    let refs: Vec<&Path> = paths.iter().collect();
    check_overlaps(&refs, Kind::Projection.label())?;
    Ok(Projection { paths })
}

/// What to keep of one value: all of it, some map keys, or some list
/// elements.
#[derive(Debug)]
enum Node {
    All,
    Keys(BTreeMap<String, Node>),
    Indexes(BTreeMap<usize, Node>),
}

impl Node {
    fn insert(&mut self, rest: &[PathElem]) {
        let Some((first, rest)) = rest.split_first() else {
            *self = Node::All;
            return;
        };
        let child = match (first, &mut *self) {
            (_, Node::All) => return,
            (PathElem::Key(k), Node::Keys(m)) => {
                m.entry(k.clone()).or_insert(Node::Keys(BTreeMap::new()))
            }
            (PathElem::Index(i), Node::Indexes(m)) => {
                m.entry(*i).or_insert(Node::Keys(BTreeMap::new()))
            }
            // Conflicting paths are refused by the parser.
            _ => return,
        };
        if rest.is_empty() {
            *child = Node::All;
        } else {
            if let (Node::Keys(m), PathElem::Index(_)) = (&*child, &rest[0]) {
                if m.is_empty() {
                    *child = Node::Indexes(BTreeMap::new());
                }
            }
            child.insert(rest);
        }
    }

    fn pick(&self, v: &AttributeValue) -> Option<AttributeValue> {
        match (self, v) {
            (Node::All, v) => Some(v.clone()),
            (Node::Keys(keys), AttributeValue::M(m)) => {
                let out: Item = keys
                    .iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.pick(m.get(k)?)?)))
                    .collect();
                (!out.is_empty()).then_some(AttributeValue::M(out))
            }
            (Node::Indexes(indexes), AttributeValue::L(l)) => {
                let out: Vec<AttributeValue> = indexes
                    .iter()
                    .filter_map(|(i, n)| n.pick(l.get(*i)?))
                    .collect();
                (!out.is_empty()).then_some(AttributeValue::L(out))
            }
            _ => None,
        }
    }
}

impl Projection {
    /// The parts of `item` the projection names. A list keeps the selected
    /// elements in index order; maps and lists left with nothing are omitted.
    pub fn apply(&self, item: &Item) -> Item {
        let mut top: BTreeMap<String, Node> = BTreeMap::new();
        for path in &self.paths {
            let rest = &path.elems[1..];
            let node =
                top.entry(path.top_level().to_string())
                    .or_insert_with(|| match rest.first() {
                        Some(PathElem::Index(_)) => Node::Indexes(BTreeMap::new()),
                        _ => Node::Keys(BTreeMap::new()),
                    });
            node.insert(rest);
        }
        top.iter()
            .filter_map(|(k, n)| Some((k.clone(), n.pick(item.get(k)?)?)))
            .collect()
    }

    /// Top-level attribute names the projection selects from, in order.
    pub fn top_level_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in &self.paths {
            if !names.iter().any(|n| n == p.top_level()) {
                names.push(p.top_level().to_string());
            }
        }
        names
    }

    /// The projected paths.
    pub fn paths(&self) -> &[Path] {
        &self.paths
    }
}
