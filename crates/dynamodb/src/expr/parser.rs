//! The token cursor every expression parser shares: error wording, keyword
//! matching, document paths and placeholder resolution.

use super::lexer::{tokenize, Tok, Token};
use super::reserved::is_reserved;
use super::{
    ExprError, Path, PathElem, Placeholders, MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_PATH_DEPTH,
};
use crate::value::AttributeValue;

/// Which request parameter an expression came from; names it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Condition,
    Filter,
    Update,
    Projection,
    KeyCondition,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Condition => "ConditionExpression",
            Kind::Filter => "FilterExpression",
            Kind::Update => "UpdateExpression",
            Kind::Projection => "ProjectionExpression",
            Kind::KeyCondition => "KeyConditionExpression",
        }
    }
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    kind: Kind,
    ph: &'a Placeholders,
    depth: usize,
}

impl<'a> Parser<'a> {
    /// Tokenizes `src`, refusing empty and over-long expressions.
    pub fn new(src: &'a str, ph: &'a Placeholders, kind: Kind) -> Result<Parser<'a>, ExprError> {
        let mut p = Parser {
            src,
            toks: Vec::new(),
            pos: 0,
            kind,
            ph,
            depth: 0,
        };
        if src.len() > MAX_EXPRESSION_BYTES {
            return Err(p.err(&format!(
                "Expression size has exceeded the maximum allowed size; expression size: {}",
                src.len()
            )));
        }
        p.toks = tokenize(src);
        if p.peek() == &Tok::Eof {
            return Err(p.err("The expression can not be empty;"));
        }
        Ok(p)
    }

    /// `Invalid <Kind>: <message>`.
    pub fn err(&self, message: &str) -> ExprError {
        ExprError(format!("Invalid {}: {}", self.kind.label(), message))
    }

    /// A syntax error at the current token, quoting it and its neighbours.
    pub fn syntax_error(&self) -> ExprError {
        let cur = &self.toks[self.pos];
        let token = if cur.tok == Tok::Eof {
            "<EOF>"
        } else {
            &self.src[cur.start..cur.end]
        };
        let start = if self.pos > 0 {
            self.toks[self.pos - 1].start
        } else {
            cur.start
        };
        // Up to the end of the next real token (never trailing blanks).
        let last = (0..=self.pos + 1)
            .rev()
            .filter_map(|i| self.toks.get(i))
            .find(|t| t.tok != Tok::Eof);
        let end = last.map_or(start, |t| t.end).max(start);
        self.err(&format!(
            "Syntax error; token: \"{token}\", near: \"{}\"",
            &self.src[start..end]
        ))
    }

    pub fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    pub fn peek_at(&self, ahead: usize) -> &Tok {
        let last = self.toks.len() - 1;
        &self.toks[(self.pos + ahead).min(last)].tok
    }

    /// Text of the current token.
    pub fn text(&self) -> &'a str {
        let t = &self.toks[self.pos];
        &self.src[t.start..t.end]
    }

    pub fn advance(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    /// True if the current token is the keyword `kw` (any case).
    pub fn is_keyword(&self, kw: &str) -> bool {
        self.peek() == &Tok::Name && self.text().eq_ignore_ascii_case(kw)
    }

    pub fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.advance();
        }
        yes
    }

    pub fn eat(&mut self, tok: Tok) -> bool {
        let yes = self.peek() == &tok;
        if yes {
            self.advance();
        }
        yes
    }

    pub fn expect(&mut self, tok: Tok) -> Result<(), ExprError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    pub fn expect_keyword(&mut self, kw: &str) -> Result<(), ExprError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    pub fn expect_eof(&self) -> Result<(), ExprError> {
        if self.peek() == &Tok::Eof {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    /// Enters one level of nesting (parenthesis, NOT, function call).
    pub fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(&format!(
                "The expression has too many nested levels; maximum: {MAX_NESTING}"
            )));
        }
        Ok(())
    }

    pub fn leave(&mut self) {
        self.depth -= 1;
    }

    /// True if the current token starts a function call (`name(`).
    pub fn at_function(&self) -> bool {
        self.peek() == &Tok::Name && self.peek_at(1) == &Tok::LParen
    }

    /// A document path: `name`, `#name`, then `.name`, `.#name`, `[n]`.
    pub fn path(&mut self) -> Result<Path, ExprError> {
        let mut elems = vec![PathElem::Key(self.path_name()?)];
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.advance();
                    elems.push(PathElem::Key(self.path_name()?));
                }
                Tok::LBracket => {
                    self.advance();
                    if self.peek() != &Tok::Int {
                        return Err(self.syntax_error());
                    }
                    let Ok(index) = self.text().parse::<u32>() else {
                        return Err(self.err(&format!(
                            "List index is not within the allowable range; index: [{}]",
                            self.text()
                        )));
                    };
                    self.advance();
                    self.expect(Tok::RBracket)?;
                    elems.push(PathElem::Index(index as usize));
                }
                _ => break,
            }
            if elems.len() > MAX_PATH_DEPTH {
                return Err(self.err(&format!(
                    "The document path has too many nesting levels; nesting levels: {}",
                    elems.len()
                )));
            }
        }
        Ok(Path { elems })
    }

    fn path_name(&mut self) -> Result<String, ExprError> {
        let text = self.text();
        match self.peek() {
            Tok::Name => {
                if is_reserved(text) {
                    return Err(self.err(&format!(
                        "Attribute name is a reserved keyword; reserved keyword: {text}"
                    )));
                }
                self.advance();
                Ok(text.to_string())
            }
            Tok::NamePh => match self.ph.name(text) {
                Some(name) => {
                    self.advance();
                    Ok(name.to_string())
                }
                None => Err(self.err(&format!(
                    "An expression attribute name used in the document path is not defined; attribute name: {text}"
                ))),
            },
            _ => Err(self.syntax_error()),
        }
    }

    /// An expression attribute value (`:v`), resolved.
    pub fn value(&mut self) -> Result<AttributeValue, ExprError> {
        if self.peek() != &Tok::ValuePh {
            return Err(self.syntax_error());
        }
        let text = self.text();
        match self.ph.value(text) {
            Some(v) => {
                self.advance();
                Ok(v.clone())
            }
            None => Err(self.err(&format!(
                "An expression attribute value used in expression is not defined; attribute value: {text}"
            ))),
        }
    }
}

/// DynamoDB's long type names, used in ADD and DELETE operand errors.
pub(crate) fn long_type_name(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "STRING",
        AttributeValue::N(_) => "NUMBER",
        AttributeValue::B(_) => "BINARY",
        AttributeValue::Bool(_) => "BOOLEAN",
        AttributeValue::Null => "NULL",
        AttributeValue::M(_) => "MAP",
        AttributeValue::L(_) => "LIST",
        AttributeValue::Ss(_) => "STRING_SET",
        AttributeValue::Ns(_) => "NUMBER_SET",
        AttributeValue::Bs(_) => "BINARY_SET",
    }
}

/// A scalar as DynamoDB quotes it in BETWEEN errors: `AttributeValue: {N:5}`.
pub(crate) fn quote_value(v: &AttributeValue) -> String {
    let inner = match v {
        AttributeValue::S(s) => s.clone(),
        AttributeValue::N(n) => n.to_string(),
        AttributeValue::B(b) => crate::value::base64_encode(b),
        other => other.to_json().to_string(),
    };
    format!("AttributeValue: {{{}:{inner}}}", v.type_name())
}

/// Order of two values for `<`, `BETWEEN` and friends: only S, N and B of
/// the same type are ordered.
pub(crate) fn compare(a: &AttributeValue, b: &AttributeValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (AttributeValue::N(x), AttributeValue::N(y)) => Some(x.cmp(y)),
        (AttributeValue::B(x), AttributeValue::B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}
