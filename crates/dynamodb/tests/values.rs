//! DynamoDB's type system: numbers at their limits, validation of the wire
//! form, sizes, and the order-preserving key encoding.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use moat_dynamodb::value::{
    base64_decode, base64_encode, item_from_json, item_size, item_to_json, key_bytes,
    AttributeValue, Number,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn must_number(s: &str) -> Number {
    Number::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn must_value(v: Value) -> AttributeValue {
    AttributeValue::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn error_of(v: Value) -> String {
    match AttributeValue::from_json(&v) {
        Ok(x) => panic!("{v} accepted as {x:?}"),
        Err(e) => e.0,
    }
}

const OVERFLOW: &str =
    "Number overflow. Attempting to store a number with magnitude larger than supported range";
const UNDERFLOW: &str =
    "Number underflow. Attempting to store a number with magnitude smaller than supported range";
const TOO_PRECISE: &str = "Attempting to store more than 38 significant digits in a Number";

#[test]
fn numbers_at_the_edges() {
    let exact = [
        "12345678901234567890123456789012345678",
        "-1.2345678901234567890123456789012345678",
        "0.00000000000000000000000000000000000012345678901234567890123456789012345678",
    ];
    for s in exact {
        assert_eq!(must_number(s).to_string(), s);
        assert_eq!(must_number(s).significant_digits(), 38);
    }
    let big = must_number("1e125").to_string();
    assert_eq!(big, format!("1{}", "0".repeat(125)));
    let max = must_number("9.9999999999999999999999999999999999999e125");
    assert_eq!(
        max.to_string(),
        format!("{}{}", "9".repeat(38), "0".repeat(88))
    );
    assert_eq!(must_number(&max.to_string()), max);
    let tiny = must_number("1e-130");
    assert_eq!(tiny.to_string(), format!("0.{}1", "0".repeat(129)));
    assert_eq!(
        must_number("-1E-130").to_string(),
        format!("-0.{}1", "0".repeat(129))
    );

    let refused = [
        ("1e126", OVERFLOW),
        ("-1e126", OVERFLOW),
        ("10e125", OVERFLOW),
        ("1e-131", UNDERFLOW),
        ("0.1e-130", UNDERFLOW),
        ("1e999999999999999999999", OVERFLOW),
        ("123456789012345678901234567890123456789", TOO_PRECISE),
        ("1.00000000000000000000000000000000000001", TOO_PRECISE),
    ];
    for (s, message) in refused {
        assert_eq!(
            Number::parse(s).map_err(|e| e.0),
            Err(message.to_string()),
            "{s}"
        );
    }
    // Zeros are not significant: 1 followed by 39 zeros has one digit.
    assert_eq!(
        must_number(&format!("1{}", "0".repeat(39))).significant_digits(),
        1
    );
    assert_eq!(
        must_number(&format!("0.{}", "0".repeat(200))).to_string(),
        "0"
    );
}

#[test]
fn numbers_normalise_as_dynamodb_returns_them() {
    let cases = [
        ("01.500", "1.5"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("0.000", "0"),
        ("+5", "5"),
        ("1E3", "1000"),
        ("1.23e1", "12.3"),
        ("-.5", "-0.5"),
        ("5.", "5"),
        ("0001000", "1000"),
        ("1e-3", "0.001"),
        ("123.456e-2", "1.23456"),
        ("-00.0100", "-0.01"),
    ];
    for (input, output) in cases {
        assert_eq!(must_number(input).to_string(), output, "{input}");
    }
    for bad in [
        "", "abc", "1e", "--1", "1.2.3", " 1", "1 ", "0x10", "NaN", "Infinity", "1e+", ".", "-",
        "1,5",
    ] {
        assert_eq!(
            Number::parse(bad).map_err(|e| e.0),
            Err(format!(
                "The parameter cannot be converted to a numeric value: {bad}"
            )),
        );
    }
}

#[test]
fn numbers_order_numerically() {
    let ascending = [
        "-1e125",
        "-100",
        "-99.5",
        "-1",
        "-0.5",
        "-1e-130",
        "0",
        "1e-130",
        "0.001",
        "0.5",
        "1",
        "1.0000000000000000000000000000000000001",
        "2",
        "10",
        "99.99",
        "100",
        "1e125",
    ];
    for (i, a) in ascending.iter().enumerate() {
        for (j, b) in ascending.iter().enumerate() {
            assert_eq!(must_number(a).cmp(&must_number(b)), i.cmp(&j), "{a} vs {b}");
        }
    }
    let hash = |n: &Number| {
        let mut h = DefaultHasher::new();
        n.hash(&mut h);
        h.finish()
    };
    for (a, b) in [("1.0", "1"), ("100", "1e2"), ("-0", "0"), ("0.50", "5e-1")] {
        assert_eq!(must_number(a), must_number(b));
        assert_eq!(hash(&must_number(a)), hash(&must_number(b)));
    }
}

#[test]
fn arithmetic_is_exact() {
    let sums = [
        ("0.1", "0.2", "0.3"),
        ("1e30", "1", "1000000000000000000000000000001"),
        ("-5", "3", "-2"),
        ("5", "-5", "0"),
        (
            "99999999999999999999999999999999999999",
            "1",
            "100000000000000000000000000000000000000",
        ),
        ("-0.001", "-0.009", "-0.01"),
        ("0", "-7", "-7"),
        ("123.456", "0", "123.456"),
    ];
    for (a, b, sum) in sums {
        assert_eq!(
            must_number(a).add(&must_number(b)).map(|n| n.to_string()),
            Ok(sum.to_string())
        );
        assert_eq!(
            must_number(b).add(&must_number(a)).map(|n| n.to_string()),
            Ok(sum.to_string())
        );
        assert_eq!(
            must_number(sum).sub(&must_number(b)).map(|n| n.to_string()),
            Ok(must_number(a).to_string())
        );
    }
    let diffs = [
        ("1", "0.0001", "0.9999"),
        ("-1", "-1", "0"),
        ("0", "5", "-5"),
        ("1e-130", "1e-130", "0"),
    ];
    for (a, b, d) in diffs {
        assert_eq!(
            must_number(a).sub(&must_number(b)).map(|n| n.to_string()),
            Ok(d.to_string())
        );
    }
    let max = must_number("9.9999999999999999999999999999999999999e125");
    assert_eq!(max.add(&max).map_err(|e| e.0), Err(OVERFLOW.to_string()));
    assert_eq!(
        must_number("1e30")
            .add(&must_number("1e-30"))
            .map_err(|e| e.0),
        Err(TOO_PRECISE.to_string())
    );
    assert_eq!(Number::from(-42).to_string(), "-42");
    assert_eq!(must_number("1e3").to_i64(), Some(1000));
    assert_eq!(must_number("1.5").to_i64(), None);
}

#[test]
fn sets_are_validated() {
    let cases = [
        (json!({"SS": []}), "One or more parameter values were invalid: An string set  may not be empty"),
        (json!({"NS": []}), "One or more parameter values were invalid: An number set  may not be empty"),
        (json!({"BS": []}), "One or more parameter values were invalid: An binary set  may not be empty"),
        (json!({"SS": ["a", "a"]}), "One or more parameter values were invalid: Input collection [a, a] contains duplicates."),
        (json!({"NS": ["1", "1.0"]}), "One or more parameter values were invalid: Input collection [1, 1.0] contains duplicates."),
        (json!({"BS": ["AQ==", "AQ=="]}), "One or more parameter values were invalid: Input collection [AQ==, AQ==] contains duplicates."),
        (json!({"NS": ["1", "x"]}), "The parameter cannot be converted to a numeric value: x"),
        (json!({"N": "x"}), "The parameter cannot be converted to a numeric value: x"),
        (json!({"N": "1e126"}), OVERFLOW),
        (json!({"NULL": false}), "One or more parameter values were invalid: Null attribute value types must have the value of true"),
        (json!({}), "One or more parameter values were invalid: Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"),
        (json!({"S": "a", "N": "1"}), "One or more parameter values were invalid: Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"),
    ];
    for (v, message) in cases {
        assert_eq!(error_of(v.clone()), message, "{v}");
    }
    // Sets compare as sets.
    assert_eq!(
        must_value(json!({"SS": ["a", "b"]})),
        must_value(json!({"SS": ["b", "a"]}))
    );
    assert_eq!(
        must_value(json!({"NS": ["1", "2.0"]})),
        must_value(json!({"NS": ["2", "1"]}))
    );
    assert_ne!(
        must_value(json!({"SS": ["a"]})),
        must_value(json!({"SS": ["a", "b"]}))
    );
    // Empty strings and binaries are fine outside keys.
    assert_eq!(
        must_value(json!({"S": ""})),
        AttributeValue::S(String::new())
    );
    assert_eq!(must_value(json!({"B": ""})), AttributeValue::B(Vec::new()));
}

fn nested(kind: &str, levels: usize) -> Value {
    let mut v = json!({"S": "leaf"});
    for _ in 0..levels {
        v = if kind == "M" {
            json!({"M": {"k": v}})
        } else {
            json!({"L": [v]})
        };
    }
    v
}

#[test]
fn nesting_is_limited_to_32_levels() {
    for kind in ["M", "L"] {
        assert!(
            AttributeValue::from_json(&nested(kind, 32)).is_ok(),
            "{kind}"
        );
        assert_eq!(
            error_of(nested(kind, 33)),
            "Nesting Levels have exceeded supported limits"
        );
        let item = json!({"a": nested(kind, 33)});
        assert!(item_from_json(item.as_object().unwrap()).is_err());
    }
    // Far deeper than any limit: refused without recursing all the way.
    assert!(AttributeValue::from_json(&nested("M", 100)).is_err());
}

#[test]
fn json_round_trips() {
    let item = json!({
        "s": {"S": "héllo"},
        "n": {"N": "-12.5"},
        "b": {"B": "3q2+7w=="},
        "t": {"BOOL": true},
        "z": {"NULL": true},
        "m": {"M": {"x": {"L": [{"N": "1"}, {"S": ""}, {"M": {}}]}}},
        "ss": {"SS": ["b", "a"]},
        "ns": {"NS": ["10", "2"]},
        "bs": {"BS": ["AA==", "AQ=="]},
        "empty": {"L": []}
    });
    let parsed = item_from_json(item.as_object().unwrap()).unwrap();
    assert_eq!(item_to_json(&parsed), item);
    assert_eq!(
        item_from_json(item_to_json(&parsed).as_object().unwrap()).unwrap(),
        parsed
    );
    assert_eq!(parsed["b"], AttributeValue::B(vec![0xde, 0xad, 0xbe, 0xef]));
    // Numbers come back normalised.
    assert_eq!(
        must_value(json!({"N": "01.50"})).to_json(),
        json!({"N": "1.5"})
    );
    let names: Vec<&str> = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"].to_vec();
    let values = ["s", "n", "b", "t", "z", "m", "empty", "ss", "ns", "bs"];
    for (name, key) in names.iter().zip(values) {
        assert_eq!(parsed[key].type_name(), *name);
    }
}

#[test]
fn base64_is_standard() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
    }
    for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!", "@@@@"] {
        assert!(base64_decode(bad).is_err(), "{bad}");
    }
}

#[test]
fn sizes_follow_the_item_size_rules() {
    // CapacityUnitCalculations: strings by UTF-8 bytes, numbers one byte per
    // two significant digits plus one, binaries by raw length, BOOL/NULL one
    // byte, lists and maps three bytes of overhead (plus one per element).
    let cases = [
        (json!({"S": "hello"}), 5),
        (json!({"S": "é"}), 2),
        (json!({"S": ""}), 0),
        (json!({"N": "1"}), 2),
        (json!({"N": "123"}), 3),
        (json!({"N": "12345"}), 4),
        (json!({"N": "1000"}), 2),
        (json!({"N": "0.0012"}), 2),
        (json!({"N": "0"}), 1),
        (json!({"N": "12345678901234567890123456789012345678"}), 20),
        (json!({"B": "AAEC"}), 3),
        (json!({"BOOL": false}), 1),
        (json!({"NULL": true}), 1),
        (json!({"L": []}), 3),
        (json!({"M": {}}), 3),
        (json!({"L": [{"S": "ab"}]}), 6),
        (json!({"M": {"a": {"N": "1"}}}), 7),
        (json!({"SS": ["a", "bc"]}), 3),
        (json!({"NS": ["1", "22"]}), 4),
        (json!({"BS": ["AA==", "AAE="]}), 3),
    ];
    for (v, size) in cases {
        assert_eq!(must_value(v.clone()).size(), size, "{v}");
    }
    let item = json!({"id": {"S": "abc"}, "n": {"N": "10"}, "tags": {"L": [{"BOOL": true}]}});
    let item = item_from_json(item.as_object().unwrap()).unwrap();
    assert_eq!(item_size(&item), (2 + 3) + (1 + 2) + (4 + 3 + 1 + 1));
}

fn number_strategy() -> impl Strategy<Value = Number> {
    (any::<bool>(), "[0-9]{1,38}", -130i32..=125).prop_filter_map(
        "out of range",
        |(neg, digits, e)| {
            let sign = if neg { "-" } else { "" };
            Number::parse(&format!("{sign}0.{digits}e{e}")).ok()
        },
    )
}

fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet so that prefixes and shared prefixes are common.
    prop::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), Just(b'a'), any::<u8>()],
        0..6,
    )
}

fn key_strategy() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        "[ab\u{0}\u{e9}]{0,5}".prop_map(AttributeValue::S),
        any::<String>().prop_map(AttributeValue::S),
        bytes_strategy().prop_map(AttributeValue::B),
        number_strategy().prop_map(AttributeValue::N),
    ]
}

/// DynamoDB's order among values of one key type.
fn semantic(a: &AttributeValue, b: &AttributeValue) -> Option<Ordering> {
    match (a, b) {
        (AttributeValue::S(x), AttributeValue::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (AttributeValue::B(x), AttributeValue::B(y)) => Some(x.cmp(y)),
        (AttributeValue::N(x), AttributeValue::N(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[test]
fn key_bytes_examples() {
    let s = |x: &str| key_bytes(&AttributeValue::S(x.into())).unwrap();
    assert!(s("a") < s("ab"));
    assert!(s("a") < s("a\u{0}"));
    assert!(s("a\u{0}") < s("a\u{1}"));
    assert!(s("") < s("\u{0}"));
    let n = |x: &str| key_bytes(&AttributeValue::N(must_number(x))).unwrap();
    assert!(n("-10") < n("-9.99"));
    assert!(n("-1e-130") < n("0"));
    assert!(n("0") < n("1e-130"));
    assert!(n("1.2") < n("1.23"));
    assert!(n("-1.23") < n("-1.2"));
    assert!(n("9") < n("10"));
    assert_eq!(n("1.0"), n("1"));
    assert_eq!(key_bytes(&AttributeValue::Bool(true)), None);
    assert_eq!(key_bytes(&AttributeValue::Ss(vec!["a".into()])), None);
}

proptest! {
    #[test]
    fn key_bytes_order_is_dynamodb_order(a in key_strategy(), b in key_strategy()) {
        if let Some(expected) = semantic(&a, &b) {
            prop_assert_eq!(key_bytes(&a).unwrap().cmp(&key_bytes(&b).unwrap()), expected);
        }
    }

    #[test]
    fn key_bytes_concatenate_unambiguously(
        p1 in bytes_strategy(), s1 in number_strategy(),
        p2 in bytes_strategy(), s2 in number_strategy(),
        t1 in "[ab\u{0}]{0,4}", t2 in "[ab\u{0}]{0,4}",
    ) {
        let enc = |p: &[u8], t: &str, s: &Number| {
            let mut k = key_bytes(&AttributeValue::B(p.to_vec())).unwrap();
            k.extend(key_bytes(&AttributeValue::S(t.to_string())).unwrap());
            k.extend(key_bytes(&AttributeValue::N(s.clone())).unwrap());
            k
        };
        let expected = p1.cmp(&p2).then(t1.as_bytes().cmp(t2.as_bytes())).then(s1.cmp(&s2));
        prop_assert_eq!(enc(&p1, &t1, &s1).cmp(&enc(&p2, &t2, &s2)), expected);
    }

    #[test]
    fn numbers_round_trip_and_add_exactly(a in number_strategy(), b in number_strategy()) {
        prop_assert_eq!(&must_number(&a.to_string()), &a);
        if let Ok(sum) = a.add(&b) {
            prop_assert_eq!(sum.sub(&b).ok(), Some(a.clone()));
            prop_assert_eq!(sum.cmp(&a), b.cmp(&Number::zero()));
        }
    }

    #[test]
    fn base64_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        prop_assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn from_json_never_panics(v in arbitrary_json()) {
        if let Ok(parsed) = AttributeValue::from_json(&v) {
            prop_assert_eq!(AttributeValue::from_json(&parsed.to_json()).unwrap(), parsed);
        }
    }

    #[test]
    fn number_parse_never_panics(s in "[-+0-9.eE]{0,12}|\\PC{0,10}") {
        let _ = Number::parse(&s);
    }
}

/// JSON biased toward DynamoDB's wire shapes so that deep paths are reached.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("1".to_string()),
            Just("AA==".to_string()),
            Just("x".to_string()),
            "\\PC{0,4}",
            "[0-9.e-]{1,6}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let key = prop_oneof![
            Just("S"),
            Just("N"),
            Just("B"),
            Just("BOOL"),
            Just("NULL"),
            Just("M"),
            Just("L"),
            Just("SS"),
            Just("NS"),
            Just("BS"),
            Just("x"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..3).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}
