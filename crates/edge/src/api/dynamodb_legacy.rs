//! DynamoDB's legacy (pre-expression) parameters: `Expected`,
//! `AttributeUpdates`, `KeyConditions`, `QueryFilter` and `ScanFilter`,
//! translated into the expression language with generated placeholders, so
//! that one evaluator serves both forms.

use std::collections::BTreeMap;

use moat_dynamodb::expr::Placeholders;
use moat_dynamodb::value::AttributeValue;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// An expression and the placeholders it uses.
pub struct Translated {
    pub expression: String,
    pub placeholders: Placeholders,
}

#[derive(Default)]
struct Builder {
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
}

impl Builder {
    fn name(&mut self, n: &str) -> String {
        let key = format!("#l{}", self.names.len());
        self.names.insert(key.clone(), n.to_owned());
        key
    }

    fn value(&mut self, v: &Value) -> Result<String, ApiError> {
        let parsed =
            AttributeValue::from_json(v).map_err(|e| super::dynamodb::validation_error(e.0))?;
        let key = format!(":l{}", self.values.len());
        self.values.insert(key.clone(), parsed);
        Ok(key)
    }

    fn finish(self, expression: String) -> Translated {
        Translated {
            expression,
            placeholders: Placeholders::new(self.names, self.values),
        }
    }
}

/// The parameters of the request that are expression ones and legacy ones;
/// DynamoDB refuses a request that mixes them.
pub fn check_not_mixed(
    input: &Map<String, Value>,
    legacy: &[&str],
    expressions: &[&str],
) -> Result<(), ApiError> {
    let used_legacy: Vec<&str> = legacy
        .iter()
        .copied()
        .filter(|k| input.contains_key(*k))
        .collect();
    let used_expr: Vec<&str> = expressions
        .iter()
        .copied()
        .filter(|k| input.contains_key(*k))
        .collect();
    if !used_legacy.is_empty() && !used_expr.is_empty() {
        return Err(super::dynamodb::validation_error(format!(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
            used_legacy.join(", "),
            used_expr.join(", ")
        )));
    }
    Ok(())
}

fn comparison(b: &mut Builder, attr: &str, op: &str, values: &[Value]) -> Result<String, ApiError> {
    let n = b.name(attr);
    let want = |count: usize| -> Result<(), ApiError> {
        if values.len() == count {
            Ok(())
        } else {
            Err(super::dynamodb::validation_error(format!(
                "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
            )))
        }
    };
    Ok(match op {
        "EQ" | "NE" | "LE" | "LT" | "GE" | "GT" => {
            want(1)?;
            let v = b.value(&values[0])?;
            let sym = match op {
                "EQ" => "=",
                "NE" => "<>",
                "LE" => "<=",
                "LT" => "<",
                "GE" => ">=",
                _ => ">",
            };
            format!("{n} {sym} {v}")
        }
        "NOT_NULL" => {
            want(0)?;
            format!("attribute_exists({n})")
        }
        "NULL" => {
            want(0)?;
            format!("attribute_not_exists({n})")
        }
        "CONTAINS" | "NOT_CONTAINS" | "BEGINS_WITH" => {
            want(1)?;
            let v = b.value(&values[0])?;
            match op {
                "CONTAINS" => format!("contains({n}, {v})"),
                "NOT_CONTAINS" => format!("NOT contains({n}, {v})"),
                _ => format!("begins_with({n}, {v})"),
            }
        }
        "IN" => {
            if values.is_empty() {
                want(1)?;
            }
            let vs = values.iter().map(|v| b.value(v)).collect::<Result<Vec<_>, _>>()?;
            format!("{n} IN ({})", vs.join(", "))
        }
        "BETWEEN" => {
            want(2)?;
            let (lo, hi) = (b.value(&values[0])?, b.value(&values[1])?);
            format!("{n} BETWEEN {lo} AND {hi}")
        }
        other => {
            return Err(super::dynamodb::validation_error(format!(
                "1 validation error detected: Value '{other}' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
            )))
        }
    })
}

/// `Expected` (with `ConditionalOperator`) as a condition expression.
pub fn expected(input: &Map<String, Value>, param: &str) -> Result<Option<Translated>, ApiError> {
    let Some(map) = input.get(param).and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut b = Builder::default();
    let mut parts = Vec::new();
    for (attr, spec) in map {
        let spec = spec.as_object().cloned().unwrap_or_default();
        let values: Vec<Value> = spec
            .get("AttributeValueList")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let part = if let Some(op) = spec.get("ComparisonOperator").and_then(Value::as_str) {
            comparison(&mut b, attr, op, &values)?
        } else {
            match (spec.get("Exists").and_then(Value::as_bool), spec.get("Value")) {
                (Some(false), None) => {
                    let n = b.name(attr);
                    format!("attribute_not_exists({n})")
                }
                (Some(false), Some(_)) => {
                    return Err(super::dynamodb::validation_error(
                        "One or more parameter values were invalid: Value cannot be used when Exists is false for Attribute: ".to_owned() + attr,
                    ))
                }
                (_, Some(v)) => {
                    let n = b.name(attr);
                    let v = b.value(v)?;
                    format!("{n} = {v}")
                }
                (_, None) => {
                    return Err(super::dynamodb::validation_error(
                        "One or more parameter values were invalid: Value must be provided when Exists is true for Attribute: ".to_owned() + attr,
                    ))
                }
            }
        };
        parts.push(format!("({part})"));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let joiner = match input.get("ConditionalOperator").and_then(Value::as_str) {
        Some("OR") => " OR ",
        _ => " AND ",
    };
    Ok(Some(b.finish(parts.join(joiner))))
}

/// `AttributeUpdates` as an update expression.
pub fn attribute_updates(input: &Map<String, Value>) -> Result<Option<Translated>, ApiError> {
    let Some(map) = input.get("AttributeUpdates").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut b = Builder::default();
    let (mut set, mut remove, mut add, mut delete) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (attr, spec) in map {
        let action = spec.get("Action").and_then(Value::as_str).unwrap_or("PUT");
        let value = spec.get("Value");
        let n = b.name(attr);
        match (action, value) {
            ("PUT", Some(v)) => set.push(format!("{n} = {}", b.value(v)?)),
            ("DELETE", None) => remove.push(n),
            ("DELETE", Some(v)) => delete.push(format!("{n} {}", b.value(v)?)),
            ("ADD", Some(v)) => add.push(format!("{n} {}", b.value(v)?)),
            _ => {
                return Err(super::dynamodb::validation_error(format!(
                    "One or more parameter values were invalid: Action {action} is not valid for attribute {attr}"
                )))
            }
        }
    }
    let mut clauses = Vec::new();
    for (word, items) in [
        ("SET", set),
        ("REMOVE", remove),
        ("ADD", add),
        ("DELETE", delete),
    ] {
        if !items.is_empty() {
            clauses.push(format!("{word} {}", items.join(", ")));
        }
    }
    if clauses.is_empty() {
        return Ok(None);
    }
    Ok(Some(b.finish(clauses.join(" "))))
}

/// `KeyConditions` as a key condition expression (the partition key first).
pub fn key_conditions(
    input: &Map<String, Value>,
    hash_key: &str,
) -> Result<Option<Translated>, ApiError> {
    let Some(map) = input.get("KeyConditions").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut b = Builder::default();
    let mut parts = Vec::new();
    for (attr, spec) in map {
        let op = spec
            .get("ComparisonOperator")
            .and_then(Value::as_str)
            .unwrap_or("");
        let values: Vec<Value> = spec
            .get("AttributeValueList")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        parts.push((attr != hash_key, comparison(&mut b, attr, op, &values)?));
    }
    parts.sort_by_key(|(not_hash, _)| *not_hash);
    let text: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
    Ok(Some(b.finish(text.join(" AND "))))
}
