//! Tokenizer shared by every expression kind.
//!
//! Keywords (AND, SET, BETWEEN, ...) are plain names here; the parser
//! compares them case-insensitively. A character no token can start with
//! becomes a `Bad` token so that the parser reports it as a syntax error
//! with DynamoDB's `token: "..", near: ".."` wording.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A bare name or keyword: `[A-Za-z_][A-Za-z0-9_]*`.
    Name,
    /// `#name`, an expression attribute name.
    NamePh,
    /// `:name`, an expression attribute value.
    ValuePh,
    /// Decimal digits (list indexes).
    Int,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Plus,
    Minus,
    Bad,
    Eof,
}

/// A token and its byte span in the expression text.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Splits `src` into tokens; the last one is always `Eof`.
pub(crate) fn tokenize(src: &str) -> Vec<Token> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let run = |from: usize, pred: fn(u8) -> bool| {
            let mut j = from;
            while j < bytes.len() && pred(bytes[j]) {
                j += 1;
            }
            j
        };
        let (tok, end) = match c {
            b'#' | b':' => {
                let end = run(i + 1, is_name_char);
                if end == i + 1 {
                    (Tok::Bad, i + 1)
                } else if c == b'#' {
                    (Tok::NamePh, end)
                } else {
                    (Tok::ValuePh, end)
                }
            }
            b'0'..=b'9' => (Tok::Int, run(i, |c| c.is_ascii_digit())),
            c if is_name_start(c) => (Tok::Name, run(i, is_name_char)),
            b'=' => (Tok::Eq, i + 1),
            b'<' => match bytes.get(i + 1) {
                Some(b'>') => (Tok::Ne, i + 2),
                Some(b'=') => (Tok::Le, i + 2),
                _ => (Tok::Lt, i + 1),
            },
            b'>' => match bytes.get(i + 1) {
                Some(b'=') => (Tok::Ge, i + 2),
                _ => (Tok::Gt, i + 1),
            },
            b'(' => (Tok::LParen, i + 1),
            b')' => (Tok::RParen, i + 1),
            b'[' => (Tok::LBracket, i + 1),
            b']' => (Tok::RBracket, i + 1),
            b',' => (Tok::Comma, i + 1),
            b'.' => (Tok::Dot, i + 1),
            b'+' => (Tok::Plus, i + 1),
            b'-' => (Tok::Minus, i + 1),
            _ => {
                // One whole UTF-8 character.
                let len = src[i..].chars().next().map_or(1, char::len_utf8);
                (Tok::Bad, i + len)
            }
        };
        out.push(Token { tok, start, end });
        i = end;
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    out
}
