//! DynamoDB's expression language, as tables of cases: conditions, updates,
//! projections, key conditions, placeholders, reserved words and syntax
//! errors; plus properties that no input makes a parser panic.

use std::collections::BTreeMap;

use moat_dynamodb::expr::{
    parse_condition, parse_filter, parse_key_condition, parse_projection, parse_update,
    KeyCondition, Placeholders, SortCondition,
};
use moat_dynamodb::value::{item_from_json, item_to_json, AttributeValue, Item};
use proptest::prelude::*;
use serde_json::{json, Value};

fn must_item(v: Value) -> Item {
    item_from_json(v.as_object().expect("an object")).expect("a valid item")
}

fn must_value(v: Value) -> AttributeValue {
    AttributeValue::from_json(&v).expect("a valid value")
}

/// The item every case runs against.
fn sample() -> Item {
    must_item(json!({
        "id": {"S": "abc"},
        "n": {"N": "5"},
        "s": {"S": "hello world"},
        "bin": {"B": "AQID"},
        "t": {"BOOL": true},
        "nul": {"NULL": true},
        "m": {"M": {"x": {"N": "1"}, "y": {"M": {"z": {"S": "deep"}}}}},
        "l": {"L": [{"S": "a"}, {"N": "2"}, {"L": [{"S": "in"}]}]},
        "ss": {"SS": ["red", "green"]},
        "ns": {"NS": ["1", "2", "3"]},
        "bs": {"BS": ["AQ=="]},
        "status": {"S": "active"}
    }))
}

/// Placeholders every case may use.
fn placeholders() -> Placeholders {
    let names = [("#s", "status"), ("#n", "n"), ("#dot", "a.b"), ("#m", "m")];
    let values = json!({
        ":one": {"N": "1"}, ":two": {"N": "2"}, ":three": {"N": "3"}, ":four": {"N": "4"},
        ":five": {"N": "5"}, ":six": {"N": "6"}, ":eleven": {"N": "11"},
        ":abc": {"S": "abc"}, ":hello": {"S": "hello"}, ":world": {"S": "world"},
        ":red": {"S": "red"}, ":a": {"S": "a"}, ":active": {"S": "active"}, ":deep": {"S": "deep"},
        ":b1": {"B": "AQ=="}, ":b12": {"B": "AQI="}, ":t": {"BOOL": true},
        ":S": {"S": "S"}, ":N": {"S": "N"}, ":SS": {"S": "SS"}, ":L": {"S": "L"}, ":bogus": {"S": "X"},
        ":list": {"L": [{"S": "a"}]}, ":in": {"L": [{"S": "in"}]}, ":empty": {"L": []},
        ":strs": {"SS": ["red", "blue"]}, ":rg": {"SS": ["green", "red"]}, ":nums": {"NS": ["4"]},
        ":map": {"M": {}}
    });
    let values = values
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), must_value(v.clone())))
        .collect();
    let names = names
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Placeholders::new(names, values)
}

const C: &str = "Invalid ConditionExpression: ";

/// Condition cases: expression, then "T", "F" or the error message.
const CONDITIONS: &[(&str, &str)] = &[
    // Comparators on numbers, strings, across types and on absent attributes.
    ("n = :five", "T"),
    ("n <> :five", "F"),
    ("n < :six", "T"),
    ("n <= :five", "T"),
    ("n > :four", "T"),
    ("n >= :six", "F"),
    ("id = :abc", "T"),
    ("id < :hello", "T"),
    ("bin > :b12", "T"),
    ("n = :abc", "F"),
    ("n <> :abc", "T"),
    ("n < :abc", "F"),
    ("absent = :five", "F"),
    ("absent <> :five", "T"),
    ("absent < :five", "F"),
    ("m.x = :one", "T"),
    ("m.y.z = :deep", "T"),
    ("l[1] = :two", "T"),
    ("l[0] = :a", "T"),
    ("#s = :active", "T"),
    ("#m.x = :one", "T"),
    ("n = #n", "T"),
    ("l[2] = :in", "T"),
    // BETWEEN and IN.
    ("n BETWEEN :four AND :six", "T"),
    ("n between :five and :five", "T"),
    ("n BETWEEN :six AND :six", "F"),
    ("id BETWEEN :four AND :six", "F"),
    ("absent BETWEEN :four AND :six", "F"),
    ("n IN (:four, :five)", "T"),
    ("n IN (:four, :six)", "F"),
    ("absent IN (:four)", "F"),
    ("id IN (:abc)", "T"),
    // Functions.
    ("attribute_exists(n)", "T"),
    ("attribute_exists(absent)", "F"),
    ("attribute_not_exists(absent)", "T"),
    ("attribute_not_exists(n)", "F"),
    ("attribute_exists(m.y.z)", "T"),
    ("attribute_exists(l[2][0])", "T"),
    ("attribute_exists(l[3])", "F"),
    ("attribute_exists(m.x.q)", "F"),
    ("attribute_exists(#dot)", "F"),
    ("attribute_type(n, :N)", "T"),
    ("attribute_type(ss, :SS)", "T"),
    ("attribute_type(n, :S)", "F"),
    ("attribute_type(l, :L)", "T"),
    ("attribute_type(absent, :N)", "F"),
    ("begins_with(s, :hello)", "T"),
    ("begins_with(s, :world)", "F"),
    ("begins_with(bin, :b12)", "T"),
    ("begins_with(absent, :hello)", "F"),
    ("contains(s, :world)", "T"),
    ("contains(ss, :red)", "T"),
    ("contains(ss, :hello)", "F"),
    ("contains(ns, :two)", "T"),
    ("contains(l, :two)", "T"),
    ("contains(l, :in)", "T"),
    ("contains(bs, :b1)", "T"),
    ("contains(n, :five)", "F"),
    ("size(s) = :eleven", "T"),
    ("size(ss) = :two", "T"),
    ("size(l) > :two", "T"),
    ("size(m) = :two", "T"),
    ("size(bin) = :three", "T"),
    ("size(n) = :one", "F"),
    ("size(absent) = :one", "F"),
    ("size(s) BETWEEN :two AND :eleven", "T"),
    // Precedence: NOT > AND > OR, parentheses first.
    ("n = :four OR n = :five AND id = :abc", "T"),
    ("(n = :four OR n = :five) AND id = :hello", "F"),
    ("n = :four AND n = :five OR id = :abc", "T"),
    ("n = :five OR n = :four AND id = :hello", "T"),
    ("NOT n = :four AND n = :five", "T"),
    ("NOT (n = :five OR n = :four)", "F"),
    ("NOT NOT n = :five", "T"),
    ("not attribute_exists(absent) and (((n = :five)))", "T"),
    ("n = :four OR n = :six OR id = :abc", "T"),
    // Errors.
    ("status = :active", "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"),
    ("n = :nope", "Invalid ConditionExpression: An expression attribute value used in expression is not defined; attribute value: :nope"),
    ("#nope = :five", "Invalid ConditionExpression: An expression attribute name used in the document path is not defined; attribute name: #nope"),
    ("n = = :five", "Invalid ConditionExpression: Syntax error; token: \"=\", near: \"= = :five\""),
    ("n = :five AND", "Invalid ConditionExpression: Syntax error; token: \"<EOF>\", near: \"AND\""),
    ("n = :five)", "Invalid ConditionExpression: Syntax error; token: \")\", near: \":five)\""),
    ("a-b = :five", "Invalid ConditionExpression: Syntax error; token: \"-\", near: \"a-b\""),
    ("n = :five $", "Invalid ConditionExpression: Syntax error; token: \"$\", near: \":five $\""),
    ("l[x] = :five", "Invalid ConditionExpression: Syntax error; token: \"x\", near: \"[x]\""),
    ("n", "Invalid ConditionExpression: Syntax error; token: \"<EOF>\", near: \"n\""),
    ("", "Invalid ConditionExpression: The expression can not be empty;"),
    ("   ", "Invalid ConditionExpression: The expression can not be empty;"),
    ("foo(n)", "Invalid ConditionExpression: Invalid function name; function: foo"),
    ("n = begins_with(s, :hello)", "Invalid ConditionExpression: The function is not allowed to be used this way in an expression; function: begins_with"),
    ("attribute_exists(n, s)", "Invalid ConditionExpression: Incorrect number of operands for operator or function; operator or function: attribute_exists, number of operands: 2"),
    ("attribute_exists(:five)", "Invalid ConditionExpression: Operator or function requires a document path; operator or function: attribute_exists"),
    ("begins_with(s, :five)", "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N"),
    ("n < :t", "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: <, operand type: BOOL"),
    ("n BETWEEN :six AND :four", "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {N:6}, upper bound operand: AttributeValue: {N:4}"),
    ("attribute_type(n, :bogus)", "Invalid ConditionExpression: Invalid attribute type name found; type: X, valid types: { B,BOOL,BS,L,M,N,NS,NULL,S,SS }"),
    ("attribute_type(n, :five)", "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: attribute_type, operand type: N"),
];

#[test]
fn conditions() {
    let ph = placeholders();
    let item = sample();
    for (text, expected) in CONDITIONS {
        let got = match parse_condition(text, &ph) {
            Ok(c) => match c.eval(&item) {
                Ok(true) => "T".to_string(),
                Ok(false) => "F".to_string(),
                Err(e) => e.0,
            },
            Err(e) => e.0,
        };
        assert_eq!(&got, expected, "{text}");
    }
    // A absent item behaves as an empty one.
    let c = parse_condition("attribute_not_exists(id)", &ph).unwrap();
    assert!(c.eval(&Item::new()).unwrap());
}

#[test]
fn condition_limits() {
    let ph = placeholders();
    let many = vec![":five"; 101].join(", ");
    assert_eq!(
        parse_condition(&format!("n IN ({many})"), &ph)
            .unwrap_err()
            .0,
        format!("{C}The IN operator is provided with too many operands; number of operands: 101")
    );
    let hundred = vec![":five"; 100].join(", ");
    assert!(parse_condition(&format!("n IN ({hundred})"), &ph).is_ok());
    // Deep nesting is an error, never a stack overflow.
    let deep = format!("{}n = :five{}", "(".repeat(2000), ")".repeat(2000));
    assert!(parse_condition(&deep, &ph)
        .unwrap_err()
        .0
        .contains("too many nested levels"));
    let nots = format!("{}n = :five", "NOT ".repeat(1000));
    assert!(parse_condition(&nots, &ph).is_err());
    let calls = format!("{}n{}", "size(".repeat(1000), ")".repeat(1000));
    assert!(parse_condition(&calls, &ph).is_err());
    // 50 levels of parentheses are fine.
    let fifty = format!("{}n = :five{}", "(".repeat(50), ")".repeat(50));
    assert!(parse_condition(&fifty, &ph)
        .unwrap()
        .eval(&sample())
        .unwrap());
    // Expression length and document path depth.
    let long = format!("n = :five{}", " OR n = :five".repeat(400));
    assert!(long.len() > 4096);
    assert!(parse_condition(&long, &ph)
        .unwrap_err()
        .0
        .contains("Expression size has exceeded"));
    let path32 = format!("a{}", ".b".repeat(31));
    assert!(parse_condition(&format!("attribute_exists({path32})"), &ph).is_ok());
    let path33 = format!("a{}", ".b".repeat(32));
    assert_eq!(
        parse_condition(&format!("attribute_exists({path33})"), &ph)
            .unwrap_err()
            .0,
        format!("{C}The document path has too many nesting levels; nesting levels: 33")
    );
    // Filters name themselves in errors.
    assert_eq!(
        parse_filter("n = = :five", &ph).unwrap_err().0,
        "Invalid FilterExpression: Syntax error; token: \"=\", near: \"= = :five\""
    );
}

/// Update cases: expression, then the attributes expected afterwards as JSON
/// (`null` for removed), or "ERR:" and the message.
const UPDATES: &[(&str, &str)] = &[
    ("SET n = :six", r#"{"n": {"N": "6"}}"#),
    ("set n = :six", r#"{"n": {"N": "6"}}"#),
    ("SET n = n + :two", r#"{"n": {"N": "7"}}"#),
    ("SET n = n - :two", r#"{"n": {"N": "3"}}"#),
    ("SET n = :two - n", r#"{"n": {"N": "-3"}}"#),
    ("SET c = m.x + n", r#"{"c": {"N": "6"}}"#),
    ("SET newattr = :abc", r#"{"newattr": {"S": "abc"}}"#),
    ("SET n = :six, id = n", r#"{"n": {"N": "6"}, "id": {"N": "5"}}"#),
    ("SET x = if_not_exists(absent, :five)", r#"{"x": {"N": "5"}}"#),
    ("SET x = if_not_exists(n, :six)", r#"{"x": {"N": "5"}}"#),
    ("SET n = if_not_exists(n, :six) + :one", r#"{"n": {"N": "6"}}"#),
    ("SET l = list_append(l, :list)", r#"{"l": {"L": [{"S": "a"}, {"N": "2"}, {"L": [{"S": "in"}]}, {"S": "a"}]}}"#),
    ("SET l = list_append(:list, l)", r#"{"l": {"L": [{"S": "a"}, {"S": "a"}, {"N": "2"}, {"L": [{"S": "in"}]}]}}"#),
    ("SET z = list_append(if_not_exists(z, :empty), :list)", r#"{"z": {"L": [{"S": "a"}]}}"#),
    ("SET m.x = :six", r#"{"m": {"M": {"x": {"N": "6"}, "y": {"M": {"z": {"S": "deep"}}}}}}"#),
    ("SET m.y.w = :six", r#"{"m": {"M": {"x": {"N": "1"}, "y": {"M": {"z": {"S": "deep"}, "w": {"N": "6"}}}}}}"#),
    ("SET l[1] = :abc", r#"{"l": {"L": [{"S": "a"}, {"S": "abc"}, {"L": [{"S": "in"}]}]}}"#),
    ("SET l[10] = :abc", r#"{"l": {"L": [{"S": "a"}, {"N": "2"}, {"L": [{"S": "in"}]}, {"S": "abc"}]}}"#),
    ("SET l[2][0] = :abc", r#"{"l": {"L": [{"S": "a"}, {"N": "2"}, {"L": [{"S": "abc"}]}]}}"#),
    ("SET #s = :abc", r#"{"status": {"S": "abc"}}"#),
    ("SET #dot = :abc", r#"{"a.b": {"S": "abc"}}"#),
    ("SET mm = :map", r#"{"mm": {"M": {}}}"#),
    ("REMOVE s, absent", r#"{"s": null, "absent": null}"#),
    ("REMOVE l[0], l[2]", r#"{"l": {"L": [{"N": "2"}]}}"#),
    ("REMOVE l[2], l[0]", r#"{"l": {"L": [{"N": "2"}]}}"#),
    ("REMOVE m.y", r#"{"m": {"M": {"x": {"N": "1"}}}}"#),
    ("REMOVE l[9], m.q", r#"{"l": {"L": [{"S": "a"}, {"N": "2"}, {"L": [{"S": "in"}]}]}, "m": {"M": {"x": {"N": "1"}, "y": {"M": {"z": {"S": "deep"}}}}}}"#),
    ("SET l[1] = :abc REMOVE l[0]", r#"{"l": {"L": [{"S": "abc"}, {"L": [{"S": "in"}]}]}}"#),
    ("ADD n :two", r#"{"n": {"N": "7"}}"#),
    ("ADD newn :two", r#"{"newn": {"N": "2"}}"#),
    ("ADD ss :strs", r#"{"ss": {"SS": ["red", "green", "blue"]}}"#),
    ("ADD ns :nums", r#"{"ns": {"NS": ["1", "2", "3", "4"]}}"#),
    ("ADD newset :strs", r#"{"newset": {"SS": ["red", "blue"]}}"#),
    ("ADD m.x :two", r#"{"m": {"M": {"x": {"N": "3"}, "y": {"M": {"z": {"S": "deep"}}}}}}"#),
    ("DELETE ss :strs", r#"{"ss": {"SS": ["green"]}}"#),
    ("DELETE ss :rg", r#"{"ss": null}"#),
    ("DELETE absent :strs", r#"{"absent": null}"#),
    ("SET n = :five REMOVE s ADD c :two DELETE ss :strs", r#"{"n": {"N": "5"}, "s": null, "c": {"N": "2"}, "ss": {"SS": ["green"]}}"#),
    ("REMOVE s SET n = :one", r#"{"n": {"N": "1"}, "s": null}"#),
    // Errors at apply time.
    ("SET n = absent", "ERR:The provided expression refers to an attribute that does not exist in the item"),
    ("SET n = id + :two", "ERR:An operand in the update expression has an incorrect data type"),
    ("SET l = list_append(n, :list)", "ERR:An operand in the update expression has an incorrect data type"),
    ("ADD id :two", "ERR:An operand in the update expression has an incorrect data type"),
    ("ADD ns :strs", "ERR:An operand in the update expression has an incorrect data type"),
    ("DELETE ns :strs", "ERR:An operand in the update expression has an incorrect data type"),
    ("SET absent.x = :two", "ERR:The document path provided in the update expression is invalid for update"),
    ("SET n.x = :two", "ERR:The document path provided in the update expression is invalid for update"),
    ("SET n[0] = :two", "ERR:The document path provided in the update expression is invalid for update"),
    ("ADD absent.x :two", "ERR:The document path provided in the update expression is invalid for update"),
    // Errors at parse time.
    ("SET a = :two, a = :six", "ERR:Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]"),
    ("SET m = :two REMOVE m.x", "ERR:Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [m], path two: [m, x]"),
    ("SET l[0] = :two REMOVE l.x", "ERR:Invalid UpdateExpression: Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [l, [0]], path two: [l, x]"),
    ("ADD m.y.z :two DELETE m.y :strs", "ERR:Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [m, y, z], path two: [m, y]"),
    ("SET n = :two SET s = :two", "ERR:Invalid UpdateExpression: The \"SET\" section can only be used once in an update expression;"),
    ("REMOVE n remove s", "ERR:Invalid UpdateExpression: The \"REMOVE\" section can only be used once in an update expression;"),
    ("ADD n :abc", "ERR:Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: STRING"),
    ("ADD n :list", "ERR:Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: LIST"),
    ("DELETE ss :two", "ERR:Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER"),
    ("SET n = n + :abc", "ERR:Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: +, operand type: S"),
    ("SET l = list_append(l, :abc)", "ERR:Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: S"),
    ("SET n = size(s)", "ERR:Invalid UpdateExpression: The function is not allowed in an update expression; function: size"),
    ("SET n = foo(s)", "ERR:Invalid UpdateExpression: Invalid function name; function: foo"),
    ("SET n = if_not_exists(:two, :two)", "ERR:Invalid UpdateExpression: Operator or function requires a document path; operator or function: if_not_exists"),
    ("SET n :two", "ERR:Invalid UpdateExpression: Syntax error; token: \":two\", near: \"n :two\""),
    ("SET", "ERR:Invalid UpdateExpression: Syntax error; token: \"<EOF>\", near: \"SET\""),
    ("SET n = :two,", "ERR:Invalid UpdateExpression: Syntax error; token: \"<EOF>\", near: \",\""),
    ("UPSERT n = :two", "ERR:Invalid UpdateExpression: Syntax error; token: \"UPSERT\", near: \"UPSERT n\""),
    ("SET n = :two extra", "ERR:Invalid UpdateExpression: Syntax error; token: \"extra\", near: \":two extra\""),
    ("ADD n n", "ERR:Invalid UpdateExpression: Syntax error; token: \"n\", near: \"n n\""),
    ("SET n = n + :two + :two", "ERR:Invalid UpdateExpression: Syntax error; token: \"+\", near: \":two + :two\""),
    ("REMOVE #nope", "ERR:Invalid UpdateExpression: An expression attribute name used in the document path is not defined; attribute name: #nope"),
    ("SET #s = :nope", "ERR:Invalid UpdateExpression: An expression attribute value used in expression is not defined; attribute value: :nope"),
    ("SET name = :two", "ERR:Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: name"),
    ("", "ERR:Invalid UpdateExpression: The expression can not be empty;"),
];

#[test]
fn updates() {
    let ph = placeholders();
    for (text, expected) in UPDATES {
        let mut item = sample();
        let result = parse_update(text, &ph).and_then(|u| u.apply(&mut item));
        if let Some(message) = expected.strip_prefix("ERR:") {
            assert_eq!(result.map_err(|e| e.0), Err(message.to_string()), "{text}");
            assert_eq!(
                item,
                sample(),
                "{text}: a failed update must not change the item"
            );
            continue;
        }
        if let Err(e) = result {
            panic!("{text}: {e}");
        }
        let expected: Value = serde_json::from_str(expected).unwrap();
        let got = item_to_json(&item);
        for (name, want) in expected.as_object().unwrap() {
            if want.is_null() {
                assert!(!item.contains_key(name), "{text}: {name} should be absent");
            } else {
                assert_eq!(
                    item.get(name),
                    Some(&must_value(want.clone())),
                    "{text}: {name} in {got}"
                );
            }
        }
        // Everything else is untouched.
        for (name, value) in sample() {
            if expected.get(&name).is_none() {
                assert_eq!(item.get(&name), Some(&value), "{text}: {name} changed");
            }
        }
    }
}

#[test]
fn update_reports_touched_names() {
    let ph = placeholders();
    let u = parse_update(
        "SET m.x = :two, n = :six REMOVE l[0], m.y ADD ss :strs",
        &ph,
    )
    .unwrap();
    assert_eq!(u.top_level_names(), ["m", "n", "l", "ss"]);
    let mut item = sample();
    assert_eq!(u.apply(&mut item).unwrap(), ["m", "n", "l", "ss"]);
}

#[test]
fn updates_keep_nesting_within_32_levels() {
    let mut deep = AttributeValue::S("leaf".into());
    for _ in 0..32 {
        deep = AttributeValue::M([("k".to_string(), deep)].into_iter().collect());
    }
    let ph = Placeholders::new(
        BTreeMap::new(),
        [(":d".to_string(), deep)].into_iter().collect(),
    );
    let mut item = sample();
    parse_update("SET a = :d", &ph)
        .unwrap()
        .apply(&mut item)
        .unwrap();
    let err = parse_update("SET m.x2 = :d", &ph)
        .unwrap()
        .apply(&mut item)
        .unwrap_err();
    assert_eq!(err.0, "Nesting Levels have exceeded supported limits");
    assert!(!item["m"].to_json()["M"]
        .as_object()
        .unwrap()
        .contains_key("x2"));
}

/// Projection cases: expression, then the projected item as JSON, or "ERR:".
const PROJECTIONS: &[(&str, &str)] = &[
    ("id, n", r#"{"id": {"S": "abc"}, "n": {"N": "5"}}"#),
    ("m.y.z", r#"{"m": {"M": {"y": {"M": {"z": {"S": "deep"}}}}}}"#),
    ("m.x, m.y.z", r#"{"m": {"M": {"x": {"N": "1"}, "y": {"M": {"z": {"S": "deep"}}}}}}"#),
    ("l[2][0], l[0]", r#"{"l": {"L": [{"S": "a"}, {"L": [{"S": "in"}]}]}}"#),
    ("l[1]", r#"{"l": {"L": [{"N": "2"}]}}"#),
    ("l[7], m.q, absent, n.x", r#"{}"#),
    ("#s, #m.x", r#"{"status": {"S": "active"}, "m": {"M": {"x": {"N": "1"}}}}"#),
    ("ss", r#"{"ss": {"SS": ["red", "green"]}}"#),
    ("id, id", "ERR:Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [id], path two: [id]"),
    ("m, m.x", "ERR:Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [m], path two: [m, x]"),
    ("l[0], l.x", "ERR:Invalid ProjectionExpression: Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [l, [0]], path two: [l, x]"),
    ("id,", "ERR:Invalid ProjectionExpression: Syntax error; token: \"<EOF>\", near: \",\""),
    ("id n", "ERR:Invalid ProjectionExpression: Syntax error; token: \"n\", near: \"id n\""),
    ("size", "ERR:Invalid ProjectionExpression: Attribute name is a reserved keyword; reserved keyword: size"),
    ("#nope", "ERR:Invalid ProjectionExpression: An expression attribute name used in the document path is not defined; attribute name: #nope"),
];

#[test]
fn projections() {
    let ph = placeholders();
    let item = sample();
    for (text, expected) in PROJECTIONS {
        match (parse_projection(text, &ph), expected.strip_prefix("ERR:")) {
            (Err(e), Some(message)) => assert_eq!(e.0, message, "{text}"),
            (Ok(p), None) => {
                let want: Value = serde_json::from_str(expected).unwrap();
                assert_eq!(item_to_json(&p.apply(&item)), want, "{text}");
            }
            (got, _) => panic!("{text}: {got:?}"),
        }
    }
    let p = parse_projection("m.x, id, m.y", &ph).unwrap();
    assert_eq!(p.top_level_names(), ["m", "id"]);
}

fn kc(partition: &str, value: &str, sort: Option<(&str, SortCondition)>) -> KeyCondition {
    KeyCondition {
        partition_name: partition.into(),
        partition_value: AttributeValue::S(value.into()),
        sort: sort.map(|(n, c)| (n.to_string(), c)),
    }
}

#[test]
fn key_conditions() {
    let ph = placeholders();
    let n = |s: &str| AttributeValue::N(moat_dynamodb::value::Number::parse(s).unwrap());
    let s = |x: &str| AttributeValue::S(x.into());
    let ok = [
        ("pk = :abc", kc("pk", "abc", None)),
        (
            "pk = :abc AND sk = :five",
            kc("pk", "abc", Some(("sk", SortCondition::Eq(n("5"))))),
        ),
        (
            "pk = :abc AND sk < :five",
            kc("pk", "abc", Some(("sk", SortCondition::Lt(n("5"))))),
        ),
        (
            "pk = :abc AND sk <= :five",
            kc("pk", "abc", Some(("sk", SortCondition::Le(n("5"))))),
        ),
        (
            "pk = :abc AND sk > :five",
            kc("pk", "abc", Some(("sk", SortCondition::Gt(n("5"))))),
        ),
        (
            "pk = :abc and sk >= :five",
            kc("pk", "abc", Some(("sk", SortCondition::Ge(n("5"))))),
        ),
        (
            "pk = :abc AND sk BETWEEN :four AND :six",
            kc(
                "pk",
                "abc",
                Some(("sk", SortCondition::Between(n("4"), n("6")))),
            ),
        ),
        (
            "pk = :abc AND begins_with(sk, :hello)",
            kc(
                "pk",
                "abc",
                Some(("sk", SortCondition::BeginsWith(s("hello")))),
            ),
        ),
        (
            "begins_with(sk, :hello) AND pk = :abc",
            kc(
                "pk",
                "abc",
                Some(("sk", SortCondition::BeginsWith(s("hello")))),
            ),
        ),
        (
            "sk > :four AND pk = :abc",
            kc("pk", "abc", Some(("sk", SortCondition::Gt(n("4"))))),
        ),
        ("#s = :abc", kc("status", "abc", None)),
        (
            "(pk = :abc) AND (sk > :four)",
            kc("pk", "abc", Some(("sk", SortCondition::Gt(n("4"))))),
        ),
    ];
    for (text, want) in ok {
        assert_eq!(parse_key_condition(text, &ph), Ok(want), "{text}");
    }
    let k = "Invalid KeyConditionExpression: ";
    let errors = [
        ("pk = :abc OR sk = :five", "Invalid operator used in KeyConditionExpression: OR".to_string()),
        ("pk <> :abc", "Invalid operator used in KeyConditionExpression: <>".into()),
        ("pk IN (:abc)", "Invalid operator used in KeyConditionExpression: IN".into()),
        ("NOT pk = :abc", "Invalid operator used in KeyConditionExpression: NOT".into()),
        ("pk = :abc AND contains(sk, :hello)", "Invalid operator used in KeyConditionExpression: contains".into()),
        ("pk = :abc AND attribute_exists(sk)", "Invalid operator used in KeyConditionExpression: attribute_exists".into()),
        ("pk = :abc AND sk = :five AND x = :four", "KeyConditionExpressions must only contain one condition per key".into()),
        ("pk = :abc AND pk = :abc", "KeyConditionExpressions must only contain one condition per key".into()),
        ("pk > :abc", "Query key condition not supported".into()),
        ("pk.x = :abc", "KeyConditionExpressions cannot have conditions on nested attributes".into()),
        ("pk = :abc AND begins_with(sk, :five)", format!("{k}Incorrect operand type for operator or function; operator or function: begins_with, operand type: N")),
        ("pk = :abc AND sk BETWEEN :six AND :four", format!("{k}The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {{N:6}}, upper bound operand: AttributeValue: {{N:4}}")),
        ("pk = ", format!("{k}Syntax error; token: \"<EOF>\", near: \"=\"")),
        ("pk = :nope", format!("{k}An expression attribute value used in expression is not defined; attribute value: :nope")),
        ("key = :abc", format!("{k}Attribute name is a reserved keyword; reserved keyword: key")),
        ("", format!("{k}The expression can not be empty;")),
    ];
    for (text, message) in errors {
        assert_eq!(
            parse_key_condition(text, &ph).map_err(|e| e.0),
            Err(message),
            "{text}"
        );
    }
    // Two equalities: the schema decides which is the partition key.
    let both = parse_key_condition("sk = :hello AND pk = :abc", &ph).unwrap();
    assert_eq!(both.partition_name, "sk");
    let fixed = both.for_schema("pk");
    assert_eq!(fixed.partition_name, "pk");
    assert_eq!(
        fixed.sort,
        Some(("sk".to_string(), SortCondition::Eq(s("hello"))))
    );
    // Sort conditions evaluate with DynamoDB's ordering.
    assert!(SortCondition::Between(n("4"), n("6")).matches(&n("5")));
    assert!(!SortCondition::Lt(n("5")).matches(&s("1")));
    assert!(SortCondition::BeginsWith(s("ab")).matches(&s("abc")));
}

#[test]
fn placeholders_must_all_be_used() {
    let names: BTreeMap<String, String> = [("#a", "a"), ("#unused", "u")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let values: BTreeMap<String, AttributeValue> = [":v", ":w", ":x"]
        .iter()
        .map(|k| (k.to_string(), AttributeValue::Bool(true)))
        .collect();
    let ph = Placeholders::new(names.clone(), values.clone());
    parse_condition("#a = :v", &ph).unwrap();
    assert_eq!(
        ph.check_all_used().unwrap_err().0,
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#unused}"
    );
    parse_projection("#unused", &ph).unwrap();
    assert_eq!(
        ph.check_all_used().unwrap_err().0,
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w, :x}"
    );
    parse_update("SET #a = :w, b = :x", &ph).unwrap();
    assert_eq!(ph.check_all_used(), Ok(()));
    // A placeholder referred to in a failed parse still counts as seen, but
    // an undefined one is an error of its own.
    let ph = Placeholders::new(BTreeMap::new(), BTreeMap::new());
    assert!(parse_condition("a = :v", &ph).is_err());
    assert_eq!(ph.check_all_used(), Ok(()));
}

#[test]
fn reserved_words_are_refused_as_bare_names() {
    let ph = Placeholders::new(
        [("#w".to_string(), "status".to_string())]
            .into_iter()
            .collect(),
        [(":v".to_string(), AttributeValue::Null)]
            .into_iter()
            .collect(),
    );
    let reserved = [
        "NAME",
        "status",
        "Data",
        "size",
        "KEY",
        "value",
        "DATE",
        "count",
        "USER",
        "timestamp",
        "YEAR",
        "comment",
        "ORDER",
        "group",
        "TTL",
        "zone",
        "abort",
    ];
    for word in reserved {
        assert_eq!(
            parse_condition(&format!("{word} = :v"), &ph).unwrap_err().0,
            format!("{C}Attribute name is a reserved keyword; reserved keyword: {word}")
        );
        assert!(
            parse_projection(&format!("a.{word}"), &ph).is_err(),
            "{word}"
        );
    }
    for fine in ["id", "n", "foo_bar", "_x", "statuses", "names1", "Item2"] {
        assert!(
            parse_condition(&format!("{fine} = :v"), &ph).is_ok(),
            "{fine}"
        );
    }
    assert!(parse_condition("#w = :v", &ph).is_ok());
}

/// Inputs built from the language's own tokens, so that parsers get deep.
fn expression_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just(","),
        Just("."),
        Just("="),
        Just("<>"),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">="),
        Just("+"),
        Just("-"),
        Just(" AND "),
        Just(" OR "),
        Just("NOT "),
        Just(" BETWEEN "),
        Just(" IN "),
        Just("SET "),
        Just("REMOVE "),
        Just("ADD "),
        Just("DELETE "),
        Just("size"),
        Just("begins_with"),
        Just("contains"),
        Just("attribute_exists"),
        Just("attribute_type"),
        Just("if_not_exists"),
        Just("list_append"),
        Just("n"),
        Just("l"),
        Just("m"),
        Just("x"),
        Just("#s"),
        Just("#m"),
        Just("#nope"),
        Just(":five"),
        Just(":list"),
        Just(":strs"),
        Just(":S"),
        Just(":nope"),
        Just("0"),
        Just("2"),
        Just(" "),
        Just("status"),
        Just("$"),
        Just("\u{e9}"),
    ];
    prop_oneof![
        prop::collection::vec(token, 0..30).prop_map(|t| t.concat()),
        "\\PC{0,40}",
    ]
}

/// Valid conditions from the table with their truth, combined with NOT,
/// AND, OR and parentheses (operands parenthesised, so the truth of the whole
/// is known).
fn combined_condition() -> impl Strategy<Value = (String, bool)> {
    let valid: Vec<(String, bool)> = CONDITIONS
        .iter()
        .filter(|(_, want)| want.len() == 1)
        .map(|(text, want)| (text.to_string(), *want == "T"))
        .collect();
    prop::sample::select(valid).prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|(c, v)| (format!("NOT ({c})"), !v)),
            inner.clone().prop_map(|(c, v)| (format!("({c})"), v)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a}) AND ({b})"), x && y)),
            (inner.clone(), inner).prop_map(|((a, x), (b, y))| (format!("({a}) or ({b})"), x || y)),
        ]
    })
}

proptest! {
    #[test]
    fn combined_conditions_evaluate_as_their_parts((text, want) in combined_condition()) {
        let ph = placeholders();
        let c = parse_condition(&text, &ph);
        prop_assert!(c.is_ok(), "{}: {:?}", text, c);
        prop_assert_eq!(c.unwrap().eval(&sample()), Ok(want), "{}", text);
    }

    #[test]
    fn parsers_never_panic(text in expression_text()) {
        let ph = placeholders();
        let item = sample();
        if let Ok(c) = parse_condition(&text, &ph) {
            let _ = c.eval(&item);
        }
        if let Ok(u) = parse_update(&text, &ph) {
            let mut copy = item.clone();
            let _ = u.apply(&mut copy);
        }
        if let Ok(p) = parse_projection(&text, &ph) {
            let _ = p.apply(&item);
        }
        let _ = parse_key_condition(&text, &ph);
        let _ = parse_filter(&text, &ph);
        let _ = ph.check_all_used();
    }
}
