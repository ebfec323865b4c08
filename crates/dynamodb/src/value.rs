//! DynamoDB's type system: attribute values, exact decimal numbers, item
//! sizes and the order-preserving encoding of key attributes.
//!
//! Everything here is pure. Values arrive as DynamoDB's JSON wire form
//! (`{"S":"x"}`, `{"N":"1"}`, ...) and are validated the way DynamoDB
//! validates them; error texts are DynamoDB's `ValidationException` messages
//! so that the edge can pass them through unchanged.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// An item: attribute name to value.
pub type Item = BTreeMap<String, AttributeValue>;

/// A validation failure; the text is DynamoDB's `ValidationException` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Most significant digits a DynamoDB number may hold.
pub const MAX_DIGITS: usize = 38;
/// Largest scientific exponent of a number (9.99..9E+125).
pub const MAX_EXPONENT: i32 = 125;
/// Smallest scientific exponent of a number (1E-130).
pub const MIN_EXPONENT: i32 = -130;
/// Most levels of nested maps and lists in one attribute value.
pub const MAX_NESTING: usize = 32;

/// An exact decimal number as DynamoDB stores it: up to 38 significant
/// digits, magnitude between 1E-130 and 9.99..9E+125, or zero.
///
/// Always normalised (no leading or trailing zero digits, zero is positive),
/// so derived equality and hashing are numeric: `1.0 == 1`.
/// `to_string()` (through `Display`) gives the plain notation DynamoDB returns.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    /// Significant digits, each 0..=9, first and last non-zero; empty for zero.
    digits: Vec<u8>,
    /// Power of ten of the first digit (value = d0.d1d2.. x 10^exponent).
    exponent: i32,
}

impl Number {
    /// Parses DynamoDB's number syntax: optional sign, digits with an
    /// optional decimal point, optional exponent (`1.5E-3`).
    pub fn parse(text: &str) -> Result<Number, ValueError> {
        let invalid = || {
            ValueError(format!(
                "The parameter cannot be converted to a numeric value: {text}"
            ))
        };
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            negative = bytes[i] == b'-';
            i += 1;
        }
        let mut mantissa = Vec::new();
        let mut point: Option<usize> = None;
        while i < bytes.len() {
            match bytes[i] {
                b @ b'0'..=b'9' => mantissa.push(b - b'0'),
                b'.' if point.is_none() => point = Some(mantissa.len()),
                _ => break,
            }
            i += 1;
        }
        if mantissa.is_empty() {
            return Err(invalid());
        }
        let mut exp10: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let mut exp_negative = false;
            if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                exp_negative = bytes[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Saturate: anything this large is out of range anyway.
                exp10 = (exp10 * 10 + i64::from(bytes[i] - b'0')).min(1_000_000_000);
                i += 1;
            }
            if i == start {
                return Err(invalid());
            }
            if exp_negative {
                exp10 = -exp10;
            }
        }
        if i != bytes.len() {
            return Err(invalid());
        }
        let int_len = point.unwrap_or(mantissa.len()) as i64;
        Number::from_parts(negative, mantissa, int_len - 1 + exp10)
    }

    /// The sum `self + other`, exact; errors if the result does not fit.
    pub fn add(&self, other: &Number) -> Result<Number, ValueError> {
        self.combine(other, false)
    }

    /// The difference `self - other`, exact; errors if the result does not fit.
    pub fn sub(&self, other: &Number) -> Result<Number, ValueError> {
        self.combine(other, true)
    }

    /// Zero.
    pub fn zero() -> Number {
        Number {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Count of significant digits (0 for zero).
    pub fn significant_digits(&self) -> usize {
        self.digits.len()
    }

    /// The value as an `i64` if it is an integer in range.
    pub fn to_i64(&self) -> Option<i64> {
        if self.is_zero() {
            return Some(0);
        }
        if self.exponent < 0 || self.exponent > 18 || self.digits.len() > self.exponent as usize + 1
        {
            return None;
        }
        let mut v: i128 = 0;
        for k in 0..=self.exponent as usize {
            v = v * 10 + i128::from(*self.digits.get(k).unwrap_or(&0));
        }
        if self.negative {
            v = -v;
        }
        i64::try_from(v).ok()
    }

    /// Builds a validated number from a sign, raw digits (leading and
    /// trailing zeros allowed) and the power of ten of the first raw digit.
    fn from_parts(
        negative: bool,
        mut digits: Vec<u8>,
        exponent: i64,
    ) -> Result<Number, ValueError> {
        let leading = digits.iter().take_while(|d| **d == 0).count();
        if leading == digits.len() {
            return Ok(Number::zero());
        }
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        let exponent = exponent - leading as i64;
        if exponent > i64::from(MAX_EXPONENT) {
            return Err(ValueError(
                "Number overflow. Attempting to store a number with magnitude larger than supported range".into(),
            ));
        }
        if exponent < i64::from(MIN_EXPONENT) {
            return Err(ValueError(
                "Number underflow. Attempting to store a number with magnitude smaller than supported range".into(),
            ));
        }
        if digits.len() > MAX_DIGITS {
            return Err(ValueError(
                "Attempting to store more than 38 significant digits in a Number".into(),
            ));
        }
        Ok(Number {
            negative,
            digits,
            exponent: exponent as i32,
        })
    }

    fn combine(&self, other: &Number, subtract: bool) -> Result<Number, ValueError> {
        if other.is_zero() {
            return Ok(self.clone());
        }
        let other_negative = other.negative != subtract;
        if self.is_zero() {
            return Ok(Number {
                negative: other_negative,
                ..other.clone()
            });
        }
        // Align both magnitudes on a common grid of powers of ten, least
        // significant digit first.
        let low = self.last_power().min(other.last_power());
        let high = self.exponent.max(other.exponent) + 1; // room for a carry
        let width = (high - low + 1) as usize;
        let a = self.aligned(low, width);
        let b = other.aligned(low, width);
        let (negative, sum) = if self.negative == other_negative {
            (self.negative, add_magnitudes(&a, &b))
        } else {
            match cmp_magnitudes(&a, &b) {
                Ordering::Equal => return Ok(Number::zero()),
                Ordering::Greater => (self.negative, sub_magnitudes(&a, &b)),
                Ordering::Less => (other_negative, sub_magnitudes(&b, &a)),
            }
        };
        let big_endian: Vec<u8> = sum.into_iter().rev().collect();
        Number::from_parts(negative, big_endian, i64::from(high))
    }

    /// Power of ten of the last significant digit.
    fn last_power(&self) -> i32 {
        self.exponent - (self.digits.len() as i32 - 1)
    }

    /// Little-endian digits from power `low`, `width` long.
    fn aligned(&self, low: i32, width: usize) -> Vec<u8> {
        let mut out = vec![0u8; width];
        for (k, d) in self.digits.iter().enumerate() {
            let power = self.exponent - k as i32;
            out[(power - low) as usize] = *d;
        }
        out
    }

    fn cmp_magnitude(&self, other: &Number) -> Ordering {
        self.exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut carry = 0;
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let s = x + y + carry;
            carry = s / 10;
            s % 10
        })
        .collect()
}

fn sub_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut borrow = 0i8;
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let mut s = *x as i8 - *y as i8 - borrow;
            borrow = 0;
            if s < 0 {
                s += 10;
                borrow = 1;
            }
            s as u8
        })
        .collect()
}

fn cmp_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let mut s = String::with_capacity(self.digits.len() + 8);
        if self.negative {
            s.push('-');
        }
        let digit = |d: &u8| char::from(b'0' + d);
        let n = self.digits.len() as i32;
        let e = self.exponent;
        if e < 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-e - 1) as usize));
            s.extend(self.digits.iter().map(digit));
        } else if e + 1 >= n {
            s.extend(self.digits.iter().map(digit));
            s.extend(std::iter::repeat_n('0', (e + 1 - n) as usize));
        } else {
            let split = (e + 1) as usize;
            s.extend(self.digits[..split].iter().map(digit));
            s.push('.');
            s.extend(self.digits[split..].iter().map(digit));
        }
        f.write_str(&s)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Number({self})")
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        let class = |n: &Number| match (n.is_zero(), n.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        match class(self).cmp(&class(other)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        match class(self) {
            0 => Ordering::Equal,
            1 => self.cmp_magnitude(other),
            _ => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl From<i64> for Number {
    fn from(v: i64) -> Number {
        // Every i64 fits: at most 19 digits.
        Number::parse(&v.to_string()).unwrap_or_else(|_| Number::zero())
    }
}

/// One attribute value.
///
/// Equality is DynamoDB's: sets compare as sets (order ignored), numbers
/// numerically.
#[derive(Clone, Debug)]
pub enum AttributeValue {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(Item),
    L(Vec<AttributeValue>),
    Ss(Vec<String>),
    Ns(Vec<Number>),
    Bs(Vec<Vec<u8>>),
}

impl PartialEq for AttributeValue {
    fn eq(&self, other: &AttributeValue) -> bool {
        use AttributeValue::*;
        match (self, other) {
            (S(a), S(b)) => a == b,
            (N(a), N(b)) => a == b,
            (B(a), B(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Null, Null) => true,
            (M(a), M(b)) => a == b,
            (L(a), L(b)) => a == b,
            (Ss(a), Ss(b)) => same_set(a, b),
            (Ns(a), Ns(b)) => same_set(a, b),
            (Bs(a), Bs(b)) => same_set(a, b),
            _ => false,
        }
    }
}

fn same_set<T: Ord>(a: &[T], b: &[T]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a: Vec<&T> = a.iter().collect();
    let mut b: Vec<&T> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

impl AttributeValue {
    /// Parses and validates DynamoDB's JSON wire form of one value.
    pub fn from_json(v: &Value) -> Result<AttributeValue, ValueError> {
        parse_value(v, 0)
    }

    /// DynamoDB's JSON wire form of this value.
    pub fn to_json(&self) -> Value {
        let (key, inner) = match self {
            AttributeValue::S(s) => ("S", Value::String(s.clone())),
            AttributeValue::N(n) => ("N", Value::String(n.to_string())),
            AttributeValue::B(b) => ("B", Value::String(base64_encode(b))),
            AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
            AttributeValue::Null => ("NULL", Value::Bool(true)),
            AttributeValue::M(m) => ("M", item_to_json(m)),
            AttributeValue::L(l) => ("L", Value::Array(l.iter().map(|v| v.to_json()).collect())),
            AttributeValue::Ss(s) => (
                "SS",
                Value::Array(s.iter().map(|x| Value::String(x.clone())).collect()),
            ),
            AttributeValue::Ns(s) => (
                "NS",
                Value::Array(s.iter().map(|x| Value::String(x.to_string())).collect()),
            ),
            AttributeValue::Bs(s) => (
                "BS",
                Value::Array(s.iter().map(|x| Value::String(base64_encode(x))).collect()),
            ),
        };
        let mut map = Map::new();
        map.insert(key.to_string(), inner);
        Value::Object(map)
    }

    /// DynamoDB's name of this value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
        }
    }

    /// Size in bytes as DynamoDB counts it for item size and capacity:
    /// strings by UTF-8 length, numbers one byte per two significant digits
    /// plus one, binaries by length, BOOL and NULL one byte, maps and lists
    /// three bytes plus one per element plus their contents (map keys
    /// included), sets the sum of their elements.
    pub fn size(&self) -> usize {
        match self {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => number_size(n),
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null => 1,
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| 1 + k.len() + v.size()).sum::<usize>()
            }
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + v.size()).sum::<usize>(),
            AttributeValue::Ss(s) => s.iter().map(String::len).sum(),
            AttributeValue::Ns(s) => s.iter().map(number_size).sum(),
            AttributeValue::Bs(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// Refuses a value with more than 32 levels of nested maps and lists
    /// (as `from_json` does), without recursing further than that.
    pub fn check_nesting(&self) -> Result<(), ValueError> {
        if nesting_exceeds(self, MAX_NESTING) {
            return Err(ValueError(
                "Nesting Levels have exceeded supported limits".into(),
            ));
        }
        Ok(())
    }

    /// True for the scalar types that may be key attributes (S, N, B).
    pub fn is_key_type(&self) -> bool {
        matches!(
            self,
            AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)
        )
    }
}

/// True if `v` holds more than `budget` levels of maps and lists.
fn nesting_exceeds(v: &AttributeValue, budget: usize) -> bool {
    let mut children: Box<dyn Iterator<Item = &AttributeValue>> = match v {
        AttributeValue::M(m) => Box::new(m.values()),
        AttributeValue::L(l) => Box::new(l.iter()),
        _ => return false,
    };
    budget == 0 || children.any(|c| nesting_exceeds(c, budget - 1))
}

fn number_size(n: &Number) -> usize {
    n.significant_digits().div_ceil(2) + 1
}

/// Parses and validates an item (a map of attribute names to wire values).
pub fn item_from_json(map: &Map<String, Value>) -> Result<Item, ValueError> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), parse_value(v, 0)?)))
        .collect()
}

/// DynamoDB's JSON wire form of an item.
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// An item serialised straight into DynamoDB's JSON wire form: the same
/// text as [`item_to_json`]'s, without building its tree of values first
/// (which was a fifth of a PutItem's time holding the store's writer).
pub struct ItemJson<'a>(pub &'a Item);

impl serde::Serialize for ItemJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &ValueJson(value))?;
        }
        map.end()
    }
}

/// An attribute value serialised as [`AttributeValue::to_json`] writes it.
struct ValueJson<'a>(&'a AttributeValue);

impl serde::Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        /// Elements of a list or set, each serialised as the function makes it.
        struct Each<'a, T>(&'a [T], fn(&T) -> ValueOrText<'_>);
        enum ValueOrText<'a> {
            Value(ValueJson<'a>),
            Text(&'a str),
            Display(&'a Number),
            Base64(&'a [u8]),
        }
        impl serde::Serialize for ValueOrText<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    ValueOrText::Value(v) => v.serialize(s),
                    ValueOrText::Text(t) => s.serialize_str(t),
                    ValueOrText::Display(n) => s.collect_str(n),
                    ValueOrText::Base64(b) => s.serialize_str(&base64_encode(b)),
                }
            }
        }
        impl<T> serde::Serialize for Each<'_, T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(self.1))
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        let name = self.0.type_name();
        match self.0 {
            AttributeValue::S(text) => map.serialize_entry(name, text)?,
            AttributeValue::N(n) => map.serialize_entry(name, &ValueOrText::Display(n))?,
            AttributeValue::B(b) => map.serialize_entry(name, &ValueOrText::Base64(b))?,
            AttributeValue::Bool(b) => map.serialize_entry(name, b)?,
            AttributeValue::Null => map.serialize_entry(name, &true)?,
            AttributeValue::M(m) => map.serialize_entry(name, &ItemJson(m))?,
            AttributeValue::L(l) => {
                map.serialize_entry(name, &Each(l, |v| ValueOrText::Value(ValueJson(v))))?
            }
            AttributeValue::Ss(s) => {
                map.serialize_entry(name, &Each(s, |t| ValueOrText::Text(t)))?
            }
            AttributeValue::Ns(s) => {
                map.serialize_entry(name, &Each(s, |n| ValueOrText::Display(n)))?
            }
            AttributeValue::Bs(s) => {
                map.serialize_entry(name, &Each(s, |b| ValueOrText::Base64(b)))?
            }
        }
        map.end()
    }
}

/// Item size: sum over attributes of (name length in UTF-8 bytes + value
/// size). The 400 KB limit is the caller's to enforce.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

/// Order-preserving, self-delimiting byte encoding of a key attribute
/// (S, N or B; `None` for other types).
///
/// `memcmp` order of encodings is DynamoDB's order: bytewise for S (UTF-8)
/// and B, numeric for N. Encodings are self-delimiting, so a partition key
/// encoding followed by a sort key encoding still compares correctly.
///
/// - S and B: every 0x00 byte becomes 0x00 0xFF; the end is 0x00 0x01.
/// - N: 0x02 for zero; positive numbers are 0x03, the exponent + 130 as one
///   byte, each digit as digit + 1, then 0x00; negative numbers are 0x01
///   followed by the same bytes complemented (so larger magnitudes sort
///   first), ending in 0xFF.
pub fn key_bytes(v: &AttributeValue) -> Option<Vec<u8>> {
    match v {
        AttributeValue::S(s) => Some(escape_bytes(s.as_bytes())),
        AttributeValue::B(b) => Some(escape_bytes(b)),
        AttributeValue::N(n) => Some(number_key_bytes(n)),
        _ => None,
    }
}

fn escape_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    for b in bytes {
        out.push(*b);
        if *b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

fn number_key_bytes(n: &Number) -> Vec<u8> {
    if n.is_zero() {
        return vec![0x02];
    }
    let mut body = Vec::with_capacity(n.digits.len() + 2);
    body.push((n.exponent - MIN_EXPONENT) as u8);
    body.extend(n.digits.iter().map(|d| d + 1));
    body.push(0x00);
    if n.negative {
        let mut out = vec![0x01];
        out.extend(body.iter().map(|b| !b));
        out
    } else {
        let mut out = vec![0x03];
        out.extend(body);
        out
    }
}

fn parse_value(v: &Value, depth: usize) -> Result<AttributeValue, ValueError> {
    let Value::Object(obj) = v else {
        return Err(ValueError("Unexpected value type in payload".into()));
    };
    const TYPES: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];
    let mut present = obj
        .iter()
        .filter(|(k, v)| TYPES.contains(&k.as_str()) && !v.is_null());
    let Some((key, inner)) = present.next() else {
        return Err(invalid(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        ));
    };
    if present.next().is_some() {
        return Err(invalid(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
        ));
    }
    let wrong = || ValueError(format!("Unexpected value type in payload for {key}"));
    let string = |v: &Value| v.as_str().map(str::to_owned).ok_or_else(wrong);
    let strings = |v: &Value| -> Result<Vec<String>, ValueError> {
        v.as_array().ok_or_else(wrong)?.iter().map(string).collect()
    };
    Ok(match key.as_str() {
        "S" => AttributeValue::S(string(inner)?),
        "N" => AttributeValue::N(Number::parse(&string(inner)?)?),
        "B" => AttributeValue::B(base64_decode(&string(inner)?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(wrong)?),
        "NULL" => {
            if inner.as_bool().ok_or_else(wrong)? {
                AttributeValue::Null
            } else {
                return Err(invalid(
                    "Null attribute value types must have the value of true",
                ));
            }
        }
        "M" | "L" => {
            if depth >= MAX_NESTING {
                return Err(ValueError(
                    "Nesting Levels have exceeded supported limits".into(),
                ));
            }
            if key == "M" {
                let map = inner.as_object().ok_or_else(wrong)?;
                let mut out = Item::new();
                for (k, v) in map {
                    out.insert(k.clone(), parse_value(v, depth + 1)?);
                }
                AttributeValue::M(out)
            } else {
                let list = inner.as_array().ok_or_else(wrong)?;
                AttributeValue::L(
                    list.iter()
                        .map(|v| parse_value(v, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        "SS" => {
            let raw = strings(inner)?;
            check_set(&raw, &raw, "string")?;
            AttributeValue::Ss(raw)
        }
        "NS" => {
            let raw = strings(inner)?;
            let parsed: Vec<Number> = raw
                .iter()
                .map(|s| Number::parse(s))
                .collect::<Result<_, _>>()?;
            check_set(&raw, &parsed, "number")?;
            AttributeValue::Ns(parsed)
        }
        _ => {
            let raw = strings(inner)?;
            let parsed: Vec<Vec<u8>> = raw
                .iter()
                .map(|s| base64_decode(s))
                .collect::<Result<_, _>>()?;
            check_set(&raw, &parsed, "binary")?;
            AttributeValue::Bs(parsed)
        }
    })
}

fn invalid(message: &str) -> ValueError {
    ValueError(format!(
        "One or more parameter values were invalid: {message}"
    ))
}

/// Refuses empty sets and sets with duplicates (compared after parsing, so
/// that `1` and `1.0` are duplicates), quoting the input as DynamoDB does.
fn check_set<T: Ord>(raw: &[String], parsed: &[T], kind: &str) -> Result<(), ValueError> {
    if parsed.is_empty() {
        return Err(invalid(&format!("An {kind} set  may not be empty")));
    }
    let mut sorted: Vec<&T> = parsed.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(&format!(
            "Input collection [{}] contains duplicates.",
            raw.join(", ")
        )));
    }
    Ok(())
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, ValueError> {
    let bad = || ValueError("Invalid Base64 value".into());
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks(4).enumerate() {
        let last = q + 1 == quads;
        let pad = quad.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(bad());
        }
        let mut n: u32 = 0;
        for &c in &quad[..4 - pad] {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(bad()),
            };
            n = (n << 6) | u32::from(v);
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn number() -> impl Strategy<Value = Number> {
        (any::<i64>(), 0u32..6).prop_map(|(n, scale)| {
            let text = format!("{n}e-{scale}");
            Number::parse(&text).expect("a number DynamoDB takes")
        })
    }

    fn value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            ".{0,12}".prop_map(AttributeValue::S),
            number().prop_map(AttributeValue::N),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(AttributeValue::B),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null),
            // Sets hold distinct members.
            proptest::collection::btree_set(".{0,6}", 1..4)
                .prop_map(|s| AttributeValue::Ss(s.into_iter().collect())),
            proptest::collection::btree_set(any::<i64>(), 1..4).prop_map(|s| {
                AttributeValue::Ns(
                    s.iter()
                        .map(|n| Number::parse(&n.to_string()).unwrap())
                        .collect(),
                )
            }),
            proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..6), 1..4)
                .prop_map(|s| AttributeValue::Bs(s.into_iter().collect())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::btree_map(".{0,6}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    proptest! {
        /// Items serialised straight to text read as the tree of values
        /// `item_to_json` builds, byte for byte, and back as the same item.
        #[test]
        fn item_json_writes_what_item_to_json_builds(
            item in proptest::collection::btree_map(".{0,8}", value(), 0..6),
        ) {
            let direct = serde_json::to_string(&ItemJson(&item)).unwrap();
            let through_tree = serde_json::to_string(&item_to_json(&item)).unwrap();
            prop_assert_eq!(&direct, &through_tree);
            let parsed: Map<String, Value> = serde_json::from_str(&direct).unwrap();
            prop_assert_eq!(item_from_json(&parsed).unwrap(), item);
        }
    }
}
