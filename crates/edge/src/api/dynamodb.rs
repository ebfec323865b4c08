//! DynamoDB (awsJson 1.0, `DynamoDB_20120810`): JSON in, JSON out.

use std::collections::BTreeMap;
use std::ops::Bound;

use moat_dynamodb::expr::{
    parse_condition, parse_key_condition, parse_projection, parse_update, Condition, Placeholders,
    Projection, SortCondition,
};
use moat_dynamodb::tables::{
    sort_key_range, DdbError, DdbErrorKind, KeyAttr, Table, TableMeta, Tables,
};
use moat_dynamodb::value::{
    item_from_json, item_size, item_to_json, key_bytes, AttributeValue, Item, ItemJson,
};
use moat_iam::AuthzRequest;
use moat_policy::{ContextKeys, Decision};
use serde_json::{json, Map, Value};

use super::dynamodb_legacy as legacy;
use super::{json_object as object, json_required as required, json_text as text, Ctx};
use crate::error::{ApiError, ErrorKind};
use crate::services::Operation;

/// A query or scan page holds at most this much data, as in DynamoDB.
const PAGE_BYTES: usize = 1024 * 1024;

/// A `BatchGetItem` answer holds at most this much, as in DynamoDB.
const BATCH_GET_BYTES: usize = 16 * 1024 * 1024;

impl From<DdbError> for ApiError {
    fn from(e: DdbError) -> ApiError {
        ApiError::new(
            ErrorKind::Service {
                code: e.kind.code(),
                status: e.kind.status(),
            },
            e.message,
        )
    }
}

fn validation(message: impl Into<String>) -> ApiError {
    DdbError::validation(message).into()
}

pub(crate) fn validation_error(message: impl Into<String>) -> ApiError {
    validation(message)
}

const EXPRESSION_PARAMS: &[&str] = &[
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
];

/// A condition from its expression parameter, or from the legacy one.
fn condition_or_legacy(
    input: &Map<String, Value>,
    ph: &Placeholders,
    expression: &str,
    legacy: &str,
    filter: bool,
) -> Result<Option<Condition>, ApiError> {
    if let Some(t) = legacy::expected(input, legacy)? {
        let parse = if filter {
            moat_dynamodb::expr::parse_filter
        } else {
            parse_condition
        };
        return parse(&t.expression, &t.placeholders)
            .map(Some)
            .map_err(expr_err);
    }
    match text(input, expression)? {
        Some(e) if filter => moat_dynamodb::expr::parse_filter(e, ph)
            .map(Some)
            .map_err(expr_err),
        Some(e) => parse_condition(e, ph).map(Some).map_err(expr_err),
        None => Ok(None),
    }
}

fn item_arg(input: &Map<String, Value>, name: &str) -> Result<Item, ApiError> {
    let map = object(input, name)?.ok_or_else(|| {
        validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            name.to_ascii_lowercase()
        ))
    })?;
    item_from_json(map).map_err(|e| validation(e.0))
}

fn placeholders(input: &Map<String, Value>) -> Result<Placeholders, ApiError> {
    let names: BTreeMap<String, String> = match object(input, "ExpressionAttributeNames")? {
        Some(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::new(
                    ErrorKind::Serialization,
                    "ExpressionAttributeNames values must be strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        None => BTreeMap::new(),
    };
    let values: BTreeMap<String, AttributeValue> = match object(input, "ExpressionAttributeValues")?
    {
        Some(m) => m
            .iter()
            .map(|(k, v)| {
                AttributeValue::from_json(v)
                    .map(|a| (k.clone(), a))
                    .map_err(|e| validation(e.0))
            })
            .collect::<Result<_, _>>()?,
        None => BTreeMap::new(),
    };
    Ok(Placeholders::new(names, values))
}

fn expr_err(e: moat_dynamodb::expr::ExprError) -> ApiError {
    validation(e.0)
}

fn table_arn(ctx: &Ctx<'_>, name: &str) -> String {
    // Built on every item request; pushes are cheaper than `format!`.
    let account = ctx.iam.account().as_str();
    let mut arn = String::with_capacity(40 + ctx.region.len() + account.len() + name.len());
    for part in [
        "arn:aws:dynamodb:",
        ctx.region,
        ":",
        account,
        ":table/",
        name,
    ] {
        arn.push_str(part);
    }
    arn
}

/// The resource ARN an operation acts on, for authorisation and the audit log.
pub fn resource(op: Operation, ctx: &Ctx<'_>, input: &Map<String, Value>) -> String {
    match op {
        Operation::ListTables | Operation::DescribeLimits | Operation::DescribeEndpoints => {
            "*".to_owned()
        }
        Operation::DdbTagResource | Operation::DdbUntagResource | Operation::ListTagsOfResource => {
            input
                .get("ResourceArn")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned()
        }
        Operation::BatchGetItem | Operation::BatchWriteItem | Operation::ListBackups => {
            "*".to_owned()
        }
        Operation::ExportTableToPointInTime | Operation::ListExports | Operation::ListImports => {
            input
                .get("TableArn")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned()
        }
        Operation::DescribeExport => input
            .get("ExportArn")
            .and_then(Value::as_str)
            .unwrap_or("*")
            .to_owned(),
        Operation::DescribeImport => input
            .get("ImportArn")
            .and_then(Value::as_str)
            .unwrap_or("*")
            .to_owned(),
        Operation::ImportTable => match input
            .get("TableCreationParameters")
            .and_then(|p| p.get("TableName"))
            .and_then(Value::as_str)
        {
            Some(name) => table_arn(ctx, name),
            None => "*".to_owned(),
        },
        Operation::DescribeBackup | Operation::DeleteBackup | Operation::RestoreTableFromBackup => {
            input
                .get("BackupArn")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned()
        }
        _ => match input.get("TableName").and_then(Value::as_str) {
            Some(name) => table_arn(ctx, name),
            None => "*".to_owned(),
        },
    }
}

fn now_seconds(ctx: &Ctx<'_>) -> f64 {
    ctx.now as f64
}

fn describe(meta: &TableMeta, status: &str, stats: (i64, i64)) -> Value {
    let mut key_schema = vec![json!({"AttributeName": meta.hash.name, "KeyType": "HASH"})];
    if let Some(r) = &meta.range {
        key_schema.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
    }
    let defs: Vec<Value> = meta
        .attribute_definitions
        .iter()
        .map(|a| json!({"AttributeName": a.name, "AttributeType": a.kind}))
        .collect();
    let mut t = json!({
        "TableName": meta.name,
        "TableArn": meta.arn,
        "TableId": meta.id,
        "TableStatus": status,
        "CreationDateTime": meta.created,
        "KeySchema": key_schema,
        "AttributeDefinitions": defs,
        "ItemCount": stats.0,
        "TableSizeBytes": stats.1,
        "BillingModeSummary": {"BillingMode": meta.billing_mode},
        "ProvisionedThroughput": {
            "ReadCapacityUnits": meta.read_capacity,
            "WriteCapacityUnits": meta.write_capacity,
            "NumberOfDecreasesToday": 0
        },
        "DeletionProtectionEnabled": meta.deletion_protection,
        "TableClassSummary": {"TableClass": meta.table_class},
    });
    let index_json = |i: &moat_dynamodb::tables::IndexMeta| {
        let mut ks = vec![json!({"AttributeName": i.hash.name, "KeyType": "HASH"})];
        if let Some(r) = &i.range {
            ks.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
        }
        let mut projection = json!({"ProjectionType": i.projection});
        if i.projection == "INCLUDE" {
            projection["NonKeyAttributes"] = json!(i.non_key_attributes);
        }
        let mut v = json!({
            "IndexName": i.name, "KeySchema": ks, "Projection": projection,
            "IndexArn": format!("{}/index/{}", meta.arn, i.name),
        });
        if i.global {
            if i.backfilling {
                v["IndexStatus"] = json!("CREATING");
                v["Backfilling"] = json!(true);
            } else {
                v["IndexStatus"] = json!("ACTIVE");
            }
            v["ProvisionedThroughput"] = json!({"ReadCapacityUnits": i.read_capacity, "WriteCapacityUnits": i.write_capacity, "NumberOfDecreasesToday": 0});
        }
        v
    };
    let globals: Vec<Value> = meta
        .indexes
        .iter()
        .filter(|i| i.global)
        .map(index_json)
        .collect();
    let locals: Vec<Value> = meta
        .indexes
        .iter()
        .filter(|i| !i.global)
        .map(index_json)
        .collect();
    if !globals.is_empty() {
        t["GlobalSecondaryIndexes"] = Value::Array(globals);
    }
    if !locals.is_empty() {
        t["LocalSecondaryIndexes"] = Value::Array(locals);
    }
    if let Some(arn) = &meta.kms_key_arn {
        t["SSEDescription"] =
            json!({"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": arn});
    }
    t
}

/// `AttributeDefinitions`, when the request has them.
fn attribute_definitions(input: &Map<String, Value>) -> Result<Option<Vec<KeyAttr>>, ApiError> {
    let Some(list) = input.get("AttributeDefinitions").and_then(Value::as_array) else {
        return Ok(None);
    };
    list.iter()
        .map(|d| {
            let name = d
                .get("AttributeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let kind = key_attr_type(
                d.get("AttributeType")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )?;
            Ok(KeyAttr { name, kind })
        })
        .collect::<Result<_, ApiError>>()
        .map(Some)
}

/// `UpdateTable` with `GlobalSecondaryIndexUpdates`: AWS takes one index
/// creation or deletion per call.
fn update_global_indexes(
    ctx: &Ctx<'_>,
    tables: &std::sync::Arc<Tables>,
    name: &str,
    input: &Map<String, Value>,
    updates: &Value,
) -> Result<Value, ApiError> {
    let updates = updates
        .as_array()
        .ok_or_else(|| validation("GlobalSecondaryIndexUpdates must be a list"))?;
    if updates.len() != 1 {
        return Err(DdbError::new(
            DdbErrorKind::LimitExceeded,
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table",
        )
        .into());
    }
    let update = &updates[0];
    let meta = tables.meta(ctx.region, name)?;
    let meta = if let Some(create) = update.get("Create") {
        let mut defs = meta.attribute_definitions.clone();
        for d in attribute_definitions(input)?.unwrap_or_default() {
            match defs.iter().find(|e| e.name == d.name) {
                Some(e) if e.kind != d.kind => {
                    return Err(validation(format!("One or more parameter values were invalid: Attribute {} is already defined with a different type", d.name)));
                }
                Some(_) => {}
                None => defs.push(d),
            }
        }
        let mut wrapped = Map::new();
        wrapped.insert("GlobalSecondaryIndexes".into(), json!([create]));
        let index = index_args(&wrapped, &defs, &meta.hash)?
            .pop()
            .ok_or_else(|| validation("Create must name an index"))?;
        if meta.billing_mode == "PROVISIONED"
            && (index.read_capacity < 1 || index.write_capacity < 1)
        {
            return Err(validation("One or more parameter values were invalid: ProvisionedThroughput should not be null for index: ".to_owned() + &index.name));
        }
        tables.add_index(ctx.region, name, index, defs)?
    } else if let Some(delete) = update.get("Delete") {
        let index_name = delete
            .get("IndexName")
            .and_then(Value::as_str)
            .ok_or_else(|| validation("Delete must name an IndexName"))?;
        tables.delete_index(ctx.region, name, index_name)?
    } else if let Some(change) = update.get("Update") {
        let index_name = change
            .get("IndexName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let t = change
            .get("ProvisionedThroughput")
            .cloned()
            .unwrap_or(Value::Null);
        tables.update_meta(ctx.region, name, |m| {
            let i = m
                .indexes
                .iter_mut()
                .find(|i| i.global && i.name == index_name)
                .ok_or_else(|| {
                    DdbError::new(
                        DdbErrorKind::ResourceNotFound,
                        format!("Requested resource not found: Index: {index_name}"),
                    )
                })?;
            i.read_capacity = t
                .get("ReadCapacityUnits")
                .and_then(Value::as_i64)
                .unwrap_or(i.read_capacity);
            i.write_capacity = t
                .get("WriteCapacityUnits")
                .and_then(Value::as_i64)
                .unwrap_or(i.write_capacity);
            Ok(())
        })?
    } else {
        return Err(validation(
            "A GlobalSecondaryIndexUpdate must contain Create, Update or Delete",
        ));
    };
    let stats = tables.stats(ctx.region, name)?;
    Ok(json!({"TableDescription": describe(&meta, "UPDATING", (stats.items, stats.bytes))}))
}

/// `GlobalSecondaryIndexes` and `LocalSecondaryIndexes` of a `CreateTable`.
fn index_args(
    input: &Map<String, Value>,
    defs: &[KeyAttr],
    table_hash: &KeyAttr,
) -> Result<Vec<moat_dynamodb::tables::IndexMeta>, ApiError> {
    let mut out: Vec<moat_dynamodb::tables::IndexMeta> = Vec::new();
    for (param, global, max) in [
        ("GlobalSecondaryIndexes", true, 20),
        ("LocalSecondaryIndexes", false, 5),
    ] {
        let Some(list) = input.get(param).and_then(Value::as_array) else {
            continue;
        };
        if list.len() > max {
            return Err(DdbError::new(
                DdbErrorKind::LimitExceeded,
                format!("One or more parameter values were invalid: Number of {param} exceeds per-table limit of {max}"),
            )
            .into());
        }
        for index in list {
            let name = index
                .get("IndexName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if name.len() < 3 || name.len() > 255 {
                return Err(validation(format!("Invalid index name: {name}")));
            }
            if out.iter().any(|i| i.name == name) {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Duplicate index name: {name}"
                )));
            }
            let schema = index
                .get("KeySchema")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let find = |n: &str| {
                defs.iter().find(|d| d.name == n).cloned().ok_or_else(|| {
                    validation(format!(
                        "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{n}], AttributeDefinitions: [{}]",
                        defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })
            };
            let mut hash = None;
            let mut range = None;
            for (i, k) in schema.iter().enumerate() {
                let n = k
                    .get("AttributeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match (i, k.get("KeyType").and_then(Value::as_str)) {
                    (0, Some("HASH")) => hash = Some(find(n)?),
                    (1, Some("RANGE")) => range = Some(find(n)?),
                    _ => return Err(validation(format!("Invalid KeySchema for index {name}"))),
                }
            }
            let hash =
                hash.ok_or_else(|| validation(format!("Invalid KeySchema for index {name}")))?;
            if !global && (hash.name != table_hash.name || range.is_none()) {
                return Err(validation(
                    "One or more parameter values were invalid: Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex",
                ));
            }
            let projection = index
                .get("Projection")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let kind = projection
                .get("ProjectionType")
                .and_then(Value::as_str)
                .unwrap_or("ALL")
                .to_owned();
            if !matches!(kind.as_str(), "ALL" | "KEYS_ONLY" | "INCLUDE") {
                return Err(validation(format!("Invalid ProjectionType {kind}")));
            }
            let non_key: Vec<String> = projection
                .get("NonKeyAttributes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let throughput = index.get("ProvisionedThroughput");
            out.push(moat_dynamodb::tables::IndexMeta {
                name,
                global,
                backfilling: false,
                hash,
                range,
                projection: kind,
                non_key_attributes: non_key,
                read_capacity: throughput
                    .and_then(|t| t.get("ReadCapacityUnits"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                write_capacity: throughput
                    .and_then(|t| t.get("WriteCapacityUnits"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            });
        }
    }
    let projected: usize = out.iter().map(|i| i.non_key_attributes.len()).sum();
    if projected > 100 {
        return Err(validation("One or more parameter values were invalid: Number of projected attributes in all indexes exceeds limit of 100"));
    }
    Ok(out)
}

fn key_attr_type(t: &str) -> Result<String, ApiError> {
    match t {
        "S" | "N" | "B" => Ok(t.to_owned()),
        other => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
        ))),
    }
}

fn create_table(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let meta = tables.create(table_meta_arg(ctx, input)?)?;
    Ok(json!({"TableDescription": describe(&meta, "CREATING", (0, 0))}))
}

/// A new table's description from `CreateTable`'s parameters (also
/// `ImportTable`'s `TableCreationParameters`).
fn table_meta_arg(ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<TableMeta, ApiError> {
    let name = required(input, "TableName")?;
    if name.len() < 3 || name.len() > 255 {
        return Err(validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must have length {} {}",
            if name.len() < 3 { "greater than or equal to" } else { "less than or equal to" },
            if name.len() < 3 { 3 } else { 255 }
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    let defs = attribute_definitions(input)?.ok_or_else(|| validation("1 validation error detected: Value null at 'attributeDefinitions' failed to satisfy constraint: Member must not be null"))?;
    let schema = input
        .get("KeySchema")
        .and_then(Value::as_array)
        .ok_or_else(|| validation("1 validation error detected: Value null at 'keySchema' failed to satisfy constraint: Member must not be null"))?;
    if schema.is_empty() || schema.len() > 2 {
        return Err(validation("1 validation error detected: Value at 'keySchema' failed to satisfy constraint: Member must have length less than or equal to 2"));
    }
    let find = |n: &str| defs.iter().find(|d| d.name == n).cloned();
    let mut hash = None;
    let mut range = None;
    for (i, k) in schema.iter().enumerate() {
        let n = k
            .get("AttributeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = k.get("KeyType").and_then(Value::as_str).unwrap_or_default();
        let attr = find(n).ok_or_else(|| {
            validation(format!(
                "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{n}], AttributeDefinitions: [{}]",
                defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        match (i, kind) {
            (0, "HASH") => hash = Some(attr),
            (1, "RANGE") => range = Some(attr),
            _ => {
                return Err(validation(
                    "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
                ))
            }
        }
    }
    let hash = hash.ok_or_else(|| {
        validation("Invalid KeySchema: The first KeySchemaElement is not a HASH key type")
    })?;
    let indexes = index_args(input, &defs, &hash)?;
    let mut key_names: Vec<&str> = vec![hash.name.as_str()];
    key_names.extend(range.iter().map(|r| r.name.as_str()));
    for i in &indexes {
        key_names.push(&i.hash.name);
        key_names.extend(i.range.iter().map(|r| r.name.as_str()));
    }
    key_names.sort();
    key_names.dedup();
    if defs.len() != key_names.len() {
        return Err(validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let billing = text(input, "BillingMode")?
        .unwrap_or("PROVISIONED")
        .to_owned();
    let throughput = object(input, "ProvisionedThroughput")?;
    let (read, write) = match (billing.as_str(), throughput) {
        ("PROVISIONED", Some(t)) => (
            t.get("ReadCapacityUnits").and_then(Value::as_i64).unwrap_or(0),
            t.get("WriteCapacityUnits").and_then(Value::as_i64).unwrap_or(0),
        ),
        ("PROVISIONED", None) => return Err(validation("One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED")),
        ("PAY_PER_REQUEST", None) => (0, 0),
        ("PAY_PER_REQUEST", Some(_)) => return Err(validation("One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST")),
        (other, _) => return Err(validation(format!("1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"))),
    };
    if billing == "PROVISIONED" && (read < 1 || write < 1) {
        return Err(validation("One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be at least 1"));
    }
    let kms_key_arn = match object(input, "SSESpecification")? {
        Some(sse)
            if sse.get("Enabled").and_then(Value::as_bool).unwrap_or(false)
                && sse.get("SSEType").and_then(Value::as_str).unwrap_or("KMS") == "KMS" =>
        {
            match sse.get("KMSMasterKeyId").and_then(Value::as_str) {
                Some(id) => Some(
                    ctx.kms
                        .resolve(ctx.region, id)
                        .map_err(|_| validation(format!("KMSMasterKeyId {id} is not found")))?
                        .arn,
                ),
                None => None,
            }
        }
        _ => None,
    };
    let tags = tags_arg(input)?;
    let id = new_uuid(ctx);
    let meta = TableMeta {
        name: name.to_owned(),
        arn: table_arn(ctx, name),
        id,
        region: ctx.region.to_owned(),
        hash,
        range,
        attribute_definitions: defs,
        created: now_seconds(ctx),
        billing_mode: billing,
        read_capacity: read,
        write_capacity: write,
        deletion_protection: input
            .get("DeletionProtectionEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        table_class: text(input, "TableClass")?.unwrap_or("STANDARD").to_owned(),
        kms_key_arn,
        tags,
        ttl_attribute: None,
        pitr: None,
        indexes,
    };
    Ok(meta)
}

fn continuous_backups(meta: &TableMeta) -> Value {
    match &meta.pitr {
        Some(p) => json!({
            "ContinuousBackupsStatus": "ENABLED",
            "PointInTimeRecoveryDescription": {
                "PointInTimeRecoveryStatus": "ENABLED",
                "RecoveryPeriodInDays": p.recovery_days,
                "EarliestRestorableDateTime": p.earliest(moat_dynamodb::tables::now_micros()) as f64 / 1e6,
                "LatestRestorableDateTime": moat_dynamodb::tables::now_micros() as f64 / 1e6,
            }
        }),
        None => json!({
            "ContinuousBackupsStatus": "ENABLED",
            "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"}
        }),
    }
}

fn backup_details(b: &moat_dynamodb::backups::BackupMeta, status: &str) -> Value {
    json!({
        "BackupArn": b.arn, "BackupName": b.name, "BackupSizeBytes": b.size_bytes,
        "BackupStatus": status, "BackupType": b.backup_type, "BackupCreationDateTime": b.created
    })
}

fn backup_description(b: &moat_dynamodb::backups::BackupMeta, status: &str) -> Value {
    let table = describe(&b.table, "ACTIVE", (b.item_count, b.size_bytes));
    json!({
        "BackupDetails": backup_details(b, status),
        "SourceTableDetails": {
            "TableName": b.table.name, "TableId": b.table.id, "TableArn": b.table.arn,
            "TableSizeBytes": b.size_bytes, "KeySchema": table["KeySchema"],
            "TableCreationDateTime": b.table.created, "ProvisionedThroughput": {
                "ReadCapacityUnits": b.table.read_capacity, "WriteCapacityUnits": b.table.write_capacity
            },
            "ItemCount": b.item_count, "BillingMode": b.table.billing_mode
        },
        "SourceTableFeatureDetails": {}
    })
}

fn new_uuid(ctx: &Ctx<'_>) -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ctx.rng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn tags_arg(input: &Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    Ok(input
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("Key")?.as_str()?.to_owned(),
                        t.get("Value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

fn table_name_from_arn(ctx: &Ctx<'_>, arn: &str) -> Result<String, ApiError> {
    let prefix = format!(
        "arn:aws:dynamodb:{}:{}:table/",
        ctx.region,
        ctx.iam.account()
    );
    arn.strip_prefix(&prefix).map(str::to_owned).ok_or_else(|| {
        DdbError::new(
            DdbErrorKind::ResourceNotFound,
            format!("Requested resource not found: ResourceArn: {arn} not found"),
        )
        .into()
    })
}

/// Write units as DynamoDB counts them: 1 per KB, rounded up, at least 1.
fn write_units(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// Read units: 1 per 4 KB for a strongly consistent read, half that otherwise.
fn read_units(size: usize, consistent: bool) -> f64 {
    let units = size.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

fn wants_consumed(input: &Map<String, Value>) -> bool {
    matches!(
        input.get("ReturnConsumedCapacity").and_then(Value::as_str),
        Some("TOTAL") | Some("INDEXES")
    )
}

fn consumed(input: &Map<String, Value>, table: &str, units: f64) -> Option<Value> {
    wants_consumed(input).then(
        || json!({"TableName": table, "CapacityUnits": units, "Table": {"CapacityUnits": units}}),
    )
}

/// The `CancellationReasons` code of an action's failure.
fn cancellation_code(e: &DdbError) -> &'static str {
    match e.kind {
        DdbErrorKind::ConditionalCheckFailed => "ConditionalCheckFailed",
        DdbErrorKind::ItemCollectionSizeLimitExceeded => "ItemCollectionSizeLimitExceeded",
        DdbErrorKind::TransactionConflict => "TransactionConflict",
        _ => "ValidationError",
    }
}

/// `ConsumedCapacity` of a request over several tables: a list with one
/// entry per table, in the order the tables first appear.
fn consumed_per_table<'a>(
    input: &Map<String, Value>,
    units: impl Iterator<Item = (&'a str, f64)>,
) -> Option<Value> {
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for (table, u) in units {
        match totals.iter_mut().find(|(t, _)| *t == table) {
            Some((_, total)) => *total += u,
            None => totals.push((table, u)),
        }
    }
    let list: Vec<Value> = totals
        .into_iter()
        .filter_map(|(t, u)| consumed(input, t, u))
        .collect();
    (!list.is_empty()).then(|| json!(list))
}

fn projection_arg(
    input: &Map<String, Value>,
    ph: &Placeholders,
) -> Result<Option<Projection>, ApiError> {
    if let Some(e) = text(input, "ProjectionExpression")? {
        return parse_projection(e, ph).map(Some).map_err(expr_err);
    }
    if let Some(names) = input.get("AttributesToGet").and_then(Value::as_array) {
        let list: Vec<String> = names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let text = list
            .iter()
            .enumerate()
            .map(|(i, _)| format!("#legacy{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let legacy = Placeholders::new(
            list.iter()
                .enumerate()
                .map(|(i, n)| (format!("#legacy{i}"), n.clone()))
                .collect(),
            BTreeMap::new(),
        );
        return parse_projection(&text, &legacy).map(Some).map_err(expr_err);
    }
    Ok(None)
}

/// Inside a write: refuses it with `ConditionalCheckFailedException` when the
/// condition does not hold for the current item (empty when there is none).
fn check_condition(
    condition: Option<&Condition>,
    old: Option<&Item>,
    input: &Map<String, Value>,
) -> Result<(), DdbError> {
    let Some(c) = condition else { return Ok(()) };
    let empty = Item::new();
    if c.eval(old.unwrap_or(&empty))
        .map_err(|e| DdbError::validation(e.0))?
    {
        Ok(())
    } else {
        Err(conditional_failed(old, input))
    }
}

fn conditional_failed(old: Option<&Item>, input: &Map<String, Value>) -> DdbError {
    let mut e = DdbError::new(
        DdbErrorKind::ConditionalCheckFailed,
        "The conditional request failed",
    );
    if input
        .get("ReturnValuesOnConditionCheckFailure")
        .and_then(Value::as_str)
        == Some("ALL_OLD")
    {
        e.old_item = old.cloned();
    }
    e
}

async fn put_item(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let name = required(input, "TableName")?;
    let table = tables.table(ctx.region, name)?;
    let item = item_arg(input, "Item")?;
    let key = table.key_of(&item, true)?;
    legacy::check_not_mixed(
        input,
        &["Expected", "ConditionalOperator"],
        EXPRESSION_PARAMS,
    )?;
    let ph = placeholders(input)?;
    let condition = condition_or_legacy(input, &ph, "ConditionExpression", "Expected", false)?;
    ph.check_all_used().map_err(expr_err)?;
    let return_values = text(input, "ReturnValues")?.unwrap_or("NONE");
    let metrics = wants_collection_metrics(input)?;
    if !matches!(return_values, "NONE" | "ALL_OLD") {
        return Err(validation("Return values set to invalid value"));
    }
    let size = item_size(&item);
    let (old, _) = table
        .write_async(&key, |old| {
            check_condition(condition.as_ref(), old, input)?;
            Ok(Some(item))
        })
        .await
        .map_err(ddb_with_item)?;
    let mut out = json!({});
    if return_values == "ALL_OLD" {
        if let Some(old) = old {
            out["Attributes"] = item_to_json(&old);
        }
    }
    finish_write(out, input, &table, &key, size, metrics)
}

/// `ReturnItemCollectionMetrics`, checked before anything is written.
fn wants_collection_metrics(input: &Map<String, Value>) -> Result<bool, ApiError> {
    match text(input, "ReturnItemCollectionMetrics")? {
        None | Some("NONE") => Ok(false),
        Some("SIZE") => Ok(true),
        Some(other) => Err(validation(format!("1 validation error detected: Value '{other}' at 'returnItemCollectionMetrics' failed to satisfy constraint: Member must satisfy enum value set: [SIZE, NONE]"))),
    }
}

/// What every single-item write answers besides its attributes: consumed
/// capacity, and (for tables with local indexes, as DynamoDB) the item
/// collection's size as a range in GB.
fn finish_write(
    mut out: Value,
    input: &Map<String, Value>,
    table: &Table,
    key: &moat_dynamodb::tables::ItemKey,
    size: usize,
    metrics: bool,
) -> Result<Value, ApiError> {
    if let Some(c) = consumed(input, &table.meta.name, write_units(size)) {
        out["ConsumedCapacity"] = c;
    }
    let hash = &table.meta.hash.name;
    if metrics && table.meta.indexes.iter().any(|i| !i.global) {
        if let Some(value) = key.attributes.get(hash) {
            let gb = table.collection_bytes(key)? as f64 / (1024.0 * 1024.0 * 1024.0);
            let lower = gb.floor();
            let key_json = item_to_json(&Item::from([(hash.clone(), value.clone())]));
            out["ItemCollectionMetrics"] = json!({
                "ItemCollectionKey": key_json,
                "SizeEstimateRangeGB": [lower, lower + 1.0],
            });
        }
    }
    Ok(out)
}

/// A `ConditionalCheckFailedException` carries the old item when asked.
fn ddb_with_item(e: DdbError) -> ApiError {
    let item = e.old_item.clone();
    let mut api: ApiError = e.into();
    if let Some(item) = item {
        api.extra = Some(json!({"Item": item_to_json(&item)}));
    }
    api
}

/// `GetItem`, answered as the encoded body: without a projection the stored
/// item (kept as its DynamoDB JSON) goes into the answer as it is, never
/// decoded and encoded again.
fn get_item(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    let name = required(input, "TableName")?;
    let table = tables.table(ctx.region, name)?;
    let key = table.key_of(&item_arg(input, "Key")?, false)?;
    legacy::check_not_mixed(input, &["AttributesToGet"], EXPRESSION_PARAMS)?;
    let ph = placeholders(input)?;
    let projection = projection_arg(input, &ph)?;
    ph.check_all_used().map_err(expr_err)?;
    let consistent = input
        .get("ConsistentRead")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let stored = table.get_json(&key)?;
    let wants_capacity = wants_consumed(input);
    let item = match (&stored, &projection, wants_capacity) {
        (Some(json), Some(_), _) | (Some(json), None, true) => Some(Table::decode(json)?),
        _ => None,
    };
    let size = item.as_ref().map(item_size).unwrap_or(0);
    let capacity = consumed(input, name, read_units(size, consistent));
    let mut out = Vec::with_capacity(stored.as_ref().map_or(0, Vec::len) + 128);
    out.push(b'{');
    // Keys in the order serde_json writes an object's: sorted.
    if let Some(c) = capacity {
        out.extend_from_slice(b"\"ConsumedCapacity\":");
        out.extend_from_slice(c.to_string().as_bytes());
    }
    if let Some(json) = &stored {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"Item\":");
        let projected = projection.as_ref().zip(item.as_ref());
        push_item(&mut out, json, projected.map(|(p, item)| p.apply(item)));
    }
    out.push(b'}');
    Ok(out)
}

/// Writes an item into an answer's body: a projection of it encoded, or the
/// whole item as its stored JSON, copied (the bytes `ItemJson` wrote).
fn push_item(out: &mut Vec<u8>, stored: &[u8], projected: Option<Item>) {
    match projected {
        // Writing into a Vec cannot fail.
        Some(item) => {
            let _ = serde_json::to_writer(&mut *out, &ItemJson(&item));
        }
        None => out.extend_from_slice(stored),
    }
}

async fn delete_item(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let name = required(input, "TableName")?;
    let table = tables.table(ctx.region, name)?;
    let key = table.key_of(&item_arg(input, "Key")?, false)?;
    legacy::check_not_mixed(
        input,
        &["Expected", "ConditionalOperator"],
        EXPRESSION_PARAMS,
    )?;
    let ph = placeholders(input)?;
    let condition = condition_or_legacy(input, &ph, "ConditionExpression", "Expected", false)?;
    ph.check_all_used().map_err(expr_err)?;
    let return_values = text(input, "ReturnValues")?.unwrap_or("NONE");
    let metrics = wants_collection_metrics(input)?;
    if !matches!(return_values, "NONE" | "ALL_OLD") {
        return Err(validation("Return values set to invalid value"));
    }
    let (old, _) = table
        .write_async(&key, |old| {
            check_condition(condition.as_ref(), old, input)?;
            Ok(None)
        })
        .await
        .map_err(ddb_with_item)?;
    let size = old.as_ref().map(item_size).unwrap_or(0);
    let mut out = json!({});
    if return_values == "ALL_OLD" {
        if let Some(old) = old {
            out["Attributes"] = item_to_json(&old);
        }
    }
    finish_write(out, input, &table, &key, size, metrics)
}

async fn update_item(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let name = required(input, "TableName")?;
    let table = tables.table(ctx.region, name)?;
    let key_item = item_arg(input, "Key")?;
    let key = table.key_of(&key_item, false)?;
    legacy::check_not_mixed(
        input,
        &["Expected", "ConditionalOperator", "AttributeUpdates"],
        EXPRESSION_PARAMS,
    )?;
    let ph = placeholders(input)?;
    let update = match (
        text(input, "UpdateExpression")?,
        legacy::attribute_updates(input)?,
    ) {
        (Some(e), _) => Some(parse_update(e, &ph).map_err(expr_err)?),
        (None, Some(t)) => Some(parse_update(&t.expression, &t.placeholders).map_err(expr_err)?),
        (None, None) => None,
    };
    let condition = condition_or_legacy(input, &ph, "ConditionExpression", "Expected", false)?;
    ph.check_all_used().map_err(expr_err)?;
    if let Some(u) = &update {
        for n in u.top_level_names() {
            if key.attributes.contains_key(&n) {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Cannot update attribute {n}. This attribute is part of the key"
                )));
            }
        }
    }
    let return_values = text(input, "ReturnValues")?.unwrap_or("NONE").to_owned();
    let metrics = wants_collection_metrics(input)?;
    if !matches!(
        return_values.as_str(),
        "NONE" | "ALL_OLD" | "UPDATED_OLD" | "ALL_NEW" | "UPDATED_NEW"
    ) {
        return Err(validation("Return values set to invalid value"));
    }
    let mut changed: Vec<String> = Vec::new();
    let (old, new) = table
        .write_async(&key, |old| {
            check_condition(condition.as_ref(), old, input)?;
            let mut item = old.cloned().unwrap_or_else(|| key.attributes.clone());
            if let Some(u) = &update {
                changed = u.apply(&mut item).map_err(|e| DdbError::validation(e.0))?;
            }
            Ok(Some(item))
        })
        .await
        .map_err(ddb_with_item)?;
    let pick = |item: &Item| -> Item {
        item.iter()
            .filter(|(k, _)| changed.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut out = json!({});
    let attributes = match return_values.as_str() {
        "ALL_OLD" => old.clone(),
        "UPDATED_OLD" => old.as_ref().map(pick),
        "ALL_NEW" => new.clone(),
        "UPDATED_NEW" => new.as_ref().map(pick),
        _ => None,
    };
    if let Some(a) = attributes.filter(|a| !a.is_empty()) {
        out["Attributes"] = item_to_json(&a);
    }
    let size = new
        .as_ref()
        .map(item_size)
        .unwrap_or(0)
        .max(old.as_ref().map(item_size).unwrap_or(0));
    finish_write(out, input, &table, &key, size, metrics)
}

/// The key attributes of an item, as `LastEvaluatedKey`.
/// The key attributes of an item, as `LastEvaluatedKey`: the table's, and
/// the index's when reading one.
fn key_json(table: &Table, index: Option<&moat_dynamodb::tables::IndexMeta>, item: &Item) -> Value {
    let mut key = Item::new();
    let index_keys = index
        .into_iter()
        .flat_map(|i| std::iter::once(&i.hash).chain(i.range.iter()));
    for attr in std::iter::once(&table.meta.hash)
        .chain(table.meta.range.iter())
        .chain(index_keys)
    {
        if let Some(v) = item.get(&attr.name) {
            key.insert(attr.name.clone(), v.clone());
        }
    }
    item_to_json(&key)
}

fn begins_with(value: &AttributeValue, prefix: &AttributeValue) -> bool {
    match (value, prefix) {
        (AttributeValue::S(v), AttributeValue::S(p)) => v.starts_with(p.as_str()),
        (AttributeValue::B(v), AttributeValue::B(p)) => v.starts_with(p),
        _ => false,
    }
}

/// `Query` and `Scan`: evaluate items in key order, page by `Limit` and 1 MB,
/// and answer with the encoded body.
fn read_many(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
    query: bool,
) -> Result<Vec<u8>, ApiError> {
    let name = required(input, "TableName")?;
    let table = tables.table(ctx.region, name)?;
    let index = match text(input, "IndexName")? {
        Some(n) => Some(table.index(n)?.clone()),
        None => None,
    };
    let (hash_attr, range_attr) = match &index {
        Some(i) => (i.hash.clone(), i.range.clone()),
        None => (table.meta.hash.clone(), table.meta.range.clone()),
    };
    if let Some(i) = &index {
        if i.backfilling {
            return Err(validation(format!(
                "Cannot read from backfilling global secondary index: {}",
                i.name
            )));
        }
        if i.global && input.get("ConsistentRead").and_then(Value::as_bool) == Some(true) {
            return Err(validation(
                "Consistent reads are not supported on global secondary indexes",
            ));
        }
    }
    let legacy_filter = if query { "QueryFilter" } else { "ScanFilter" };
    legacy::check_not_mixed(
        input,
        &[
            "KeyConditions",
            legacy_filter,
            "ConditionalOperator",
            "AttributesToGet",
        ],
        EXPRESSION_PARAMS,
    )?;
    let ph = placeholders(input)?;
    let key_condition = if query {
        match (text(input, "KeyConditionExpression")?, legacy::key_conditions(input, &hash_attr.name)?) {
            (Some(e), _) => Some(parse_key_condition(e, &ph).map_err(expr_err)?.for_schema(&hash_attr.name)),
            (None, Some(t)) => Some(
                parse_key_condition(&t.expression, &t.placeholders)
                    .map_err(expr_err)?
                    .for_schema(&hash_attr.name),
            ),
            (None, None) => {
                return Err(validation(
                    "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
                ))
            }
        }
    } else {
        None
    };
    let filter = condition_or_legacy(input, &ph, "FilterExpression", legacy_filter, true)?;
    let projection = projection_arg(input, &ph)?;
    ph.check_all_used().map_err(expr_err)?;
    let select = text(input, "Select")?.unwrap_or("ALL_ATTRIBUTES");
    let limit = match input.get("Limit") {
        None | Some(Value::Null) => usize::MAX,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n as usize,
            _ => return Err(validation("1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1")),
        },
    };
    let forward = input
        .get("ScanIndexForward")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let (segment, total_segments) = match (input.get("Segment").and_then(Value::as_u64), input.get("TotalSegments").and_then(Value::as_u64)) {
        (Some(s), Some(t)) if (1..=1_000_000).contains(&t) && s < t => (s, t),
        (None, None) => (0, 1),
        _ => return Err(validation("The Segment parameter is required but was not present in the request when parameter TotalSegments is present")),
    };

    // The storage range to read.
    let (lower, upper, sort_cond) = match &key_condition {
        Some(kc) => {
            if kc.partition_name != hash_attr.name {
                return Err(validation(format!(
                    "Query condition missed key schema element: {}",
                    hash_attr.name
                )));
            }
            if kc.partition_value.type_name() != hash_attr.kind {
                return Err(validation("One or more parameter values were invalid: Condition parameter type does not match schema type"));
            }
            let (prefix, end) = table
                .partition_bounds(&kc.partition_value)
                .ok_or_else(|| validation("One or more parameter values were invalid: Condition parameter type does not match schema type"))?;
            let sort = match (&kc.sort, &range_attr) {
                (Some((n, _)), Some(r)) if *n != r.name => {
                    return Err(validation(format!(
                        "Query condition missed key schema element: {}",
                        r.name
                    )))
                }
                (Some(_), None) => return Err(validation("Query key condition not supported")),
                (s, _) => s.clone().map(|(_, c)| c),
            };
            // Only the keys the sort key condition can match are read.
            let (first, end) = sort_key_range(&prefix, end, sort.as_ref());
            (Bound::Included(first), end, sort)
        }
        None => (Bound::Unbounded, None, None),
    };
    // Where the previous page stopped: reading forward, the range starts
    // after it; backward, it ends before it.
    let start = match object(input, "ExclusiveStartKey")? {
        Some(start) => {
            let start_item = item_from_json(start).map_err(|e| validation(e.0))?;
            Some(table.position_of(index.as_ref(), &start_item)?)
        }
        None => None,
    };
    let (lower, upper) = match start {
        None => (lower, upper),
        Some(start) if forward => {
            let after_start = match &lower {
                Bound::Included(first) => start >= *first,
                _ => true,
            };
            (
                if after_start {
                    Bound::Excluded(start)
                } else {
                    lower
                },
                upper,
            )
        }
        Some(start) => {
            let before_end = upper.as_ref().is_none_or(|end| start < *end);
            (lower, if before_end { Some(start) } else { upper })
        }
    };
    let sort_name = range_attr.as_ref().map(|r| r.name.clone());
    // An index that does not keep every attribute cannot answer for others.
    if let Some(i) = &index {
        if i.projection != "ALL" {
            if input.get("Select").and_then(Value::as_str) == Some("ALL_ATTRIBUTES") {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index {} because its projection type is not ALL",
                    i.name
                )));
            }
            if let Some(p) = &projection {
                if let Some(missing) = p
                    .top_level_names()
                    .into_iter()
                    .find(|n| !i.projects(&table.meta, n))
                {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: Index {} does not project attribute {missing}",
                        i.name
                    )));
                }
            }
        }
    }
    let in_sort_range = |item: &Item, cond: &Option<SortCondition>| -> bool {
        let (Some(cond), Some(n)) = (cond, &sort_name) else {
            return true;
        };
        let Some(v) = item.get(n) else { return false };
        let cmp = |w: &AttributeValue| key_bytes(v).cmp(&key_bytes(w));
        use std::cmp::Ordering::*;
        match cond {
            SortCondition::Eq(w) => cmp(w) == Equal,
            SortCondition::Lt(w) => cmp(w) == Less,
            SortCondition::Le(w) => cmp(w) != Greater,
            SortCondition::Gt(w) => cmp(w) == Greater,
            SortCondition::Ge(w) => cmp(w) != Less,
            SortCondition::Between(a, b) => cmp(a) != Less && cmp(b) != Greater,
            SortCondition::BeginsWith(p) => begins_with(v, p),
        }
    };

    // Each item read, with its stored JSON.
    let mut evaluated: Vec<(Item, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    let visit = |k: &[u8], item: Item, stored: Vec<u8>| {
        if total_segments > 1 {
            let pk_len = u16::from_be_bytes([k[0], k[1]]) as usize;
            let h = k[..2 + pk_len].iter().fold(0u64, |h, b| {
                h.wrapping_mul(1_099_511_628_211)
                    .wrapping_add(u64::from(*b))
            });
            if h % total_segments != segment {
                return Ok(true);
            }
        }
        if !in_sort_range(&item, &sort_cond) {
            return Ok(true);
        }
        if evaluated.len() >= limit || bytes >= PAGE_BYTES {
            truncated = true;
            return Ok(false);
        }
        bytes += item_size(&item);
        evaluated.push((item, stored));
        Ok(true)
    };
    table.range_stored_in(index.as_ref(), lower, upper, forward, visit)?;

    let scanned = evaluated.len();
    // An item returned whole is its stored JSON, copied; a projection is
    // encoded; a COUNT encodes nothing. (Encoding every item again took 7%
    // of a Query's CPU: BENCHMARKS.md.)
    let mut count = 0;
    let mut items = b"[".to_vec();
    for (item, stored) in &evaluated {
        let keep = match &filter {
            Some(f) => f.eval(item).map_err(expr_err)?,
            None => true,
        };
        if !keep {
            continue;
        }
        count += 1;
        if select != "COUNT" {
            if items.len() > 1 {
                items.push(b',');
            }
            push_item(
                &mut items,
                stored,
                projection.as_ref().map(|p| p.apply(item)),
            );
        }
    }
    items.push(b']');
    let mut out = json!({"Count": count, "ScannedCount": scanned});
    if truncated {
        if let Some((last, _)) = evaluated.last() {
            out["LastEvaluatedKey"] = key_json(&table, index.as_ref(), last);
        }
    }
    let consistent = input
        .get("ConsistentRead")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(c) = consumed(input, name, read_units(bytes, consistent)) {
        out["ConsumedCapacity"] = c;
    }
    let mut body = crate::codec::json_body(&out);
    if select != "COUNT" {
        // The object's other members are written; the items go last.
        body.pop();
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"Items\":");
        body.extend_from_slice(&items);
        body.push(b'}');
    }
    Ok(body)
}

fn authorize_table(
    ctx: &Ctx<'_>,
    action: &str,
    table: &str,
    keys: ContextKeys,
) -> Result<(), ApiError> {
    authorize_resource(ctx, action, &table_arn(ctx, table), keys)
}

/// The objects an export writes or an import reads are S3 objects in AWS,
/// and the caller needs the S3 permissions for them there too: without
/// this, ImportTable would read any table's sealed export.
fn authorize_objects(
    ctx: &Ctx<'_>,
    action: &str,
    bucket: &str,
    prefix: Option<&str>,
) -> Result<(), ApiError> {
    let resource = format!("arn:aws:s3:::{bucket}/{}*", prefix.unwrap_or(""));
    authorize_resource(ctx, action, &resource, ctx.keys.layer())
}

fn authorize_resource(
    ctx: &Ctx<'_>,
    action: &str,
    resource: &str,
    keys: ContextKeys,
) -> Result<(), ApiError> {
    let Some(caller) = ctx.caller else {
        return Err(ApiError::missing_authentication());
    };
    let resource = resource.to_owned();
    let evaluation = ctx.iam.authorize(
        caller,
        AuthzRequest {
            action,
            resource: &resource,
            keys,
            lazy_keys: &[],
        },
    );
    if evaluation.decision != Decision::Allow {
        return Err(ApiError::new(
            ErrorKind::AccessDenied,
            moat_policy::denial_message(&caller.principal.arn(), action, &resource, &evaluation),
        ));
    }
    Ok(())
}

/// BatchGetItem's answer, encoded: like [`read_many`], an item returned
/// whole is its stored JSON, copied.
fn batch_get(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    let requests = object(input, "RequestItems")?
        .ok_or_else(|| validation("1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null"))?;
    let total: usize = requests
        .values()
        .map(|r| {
            r.get("Keys")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0)
        })
        .sum();
    if total == 0 || total > 100 {
        return Err(validation(
            "Too many items requested for the BatchGetItem call",
        ));
    }
    // A batch is refused whole if any table is not allowed, as in AWS.
    for (name, request) in requests {
        let keys = batch_keys(ctx, tables, name, request, false);
        authorize_table(ctx, "dynamodb:BatchGetItem", name, keys)?;
    }
    // Keys are checked first: a malformed batch changes nothing and reads nothing.
    let mut plan = Vec::new();
    for (name, request) in requests {
        let request = request.as_object().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Serialization,
                "RequestItems values must be objects",
            )
        })?;
        let table = tables.table(ctx.region, name)?;
        let ph = placeholders(request)?;
        let projection = projection_arg(request, &ph)?;
        ph.check_all_used().map_err(expr_err)?;
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        for k in request
            .get("Keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let map = k.as_object().ok_or_else(|| {
                ApiError::new(ErrorKind::Serialization, "a key must be an object")
            })?;
            let key = table.key_of(&item_from_json(map).map_err(|e| validation(e.0))?, false)?;
            if !seen.insert(key.storage.clone()) {
                return Err(validation("Provided list of item keys contains duplicates"));
            }
            keys.push((k.clone(), key));
        }
        plan.push((name.clone(), request.clone(), table, projection, keys));
    }
    // A response holds at most 16 MB; the rest is handed back as UnprocessedKeys.
    let mut body = b"{\"Responses\":{".to_vec();
    let mut unprocessed = Map::new();
    let mut bytes = 0usize;
    for (n, (name, request, table, projection, keys)) in plan.into_iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&crate::codec::json_body(&Value::String(name.clone())));
        body.extend_from_slice(b":[");
        let mut found = 0;
        let mut left = Vec::new();
        for (raw, key) in keys {
            if bytes >= BATCH_GET_BYTES {
                left.push(raw);
                continue;
            }
            let Some(stored) = table.get_json(&key)? else {
                continue;
            };
            let item = Table::decode(&stored)?;
            bytes += item_size(&item);
            if found > 0 {
                body.push(b',');
            }
            found += 1;
            push_item(
                &mut body,
                &stored,
                projection.as_ref().map(|p| p.apply(&item)),
            );
        }
        body.push(b']');
        if !left.is_empty() {
            let mut rest = request;
            rest.insert("Keys".into(), Value::Array(left));
            unprocessed.insert(name, Value::Object(rest));
        }
    }
    body.extend_from_slice(b"},\"UnprocessedKeys\":");
    body.extend_from_slice(&crate::codec::json_body(&Value::Object(unprocessed)));
    body.push(b'}');
    Ok(body)
}

/// The most item bytes a BatchWriteItem writes in place on a worker (most
/// batches: 25 items of 10 KB). Larger ones take a thread of their own.
const IN_PLACE_BATCH_BYTES: usize = 256 * 1024;

/// Whether this runs on the multi-threaded runtime (where
/// `block_in_place` may hand the worker's tasks to another thread).
pub(crate) fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

async fn batch_write(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let requests = object(input, "RequestItems")?
        .ok_or_else(|| validation("1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null"))?;
    let total: usize = requests
        .values()
        .map(|r| r.as_array().map(Vec::len).unwrap_or(0))
        .sum();
    if total == 0 || total > 25 {
        return Err(validation("1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]"));
    }
    for (name, request) in requests {
        let keys = batch_keys(ctx, tables, name, request, true);
        authorize_table(ctx, "dynamodb:BatchWriteItem", name, keys)?;
    }
    // Validate everything first: a bad request changes nothing.
    let mut plan: Vec<(
        std::sync::Arc<Table>,
        moat_dynamodb::tables::ItemKey,
        Option<Item>,
    )> = Vec::new();
    for (name, list) in requests {
        let table = tables.table(ctx.region, name)?;
        let mut seen = std::collections::HashSet::new();
        for r in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            let (key, item) = if let Some(put) = r
                .get("PutRequest")
                .and_then(|p| p.get("Item"))
                .and_then(Value::as_object)
            {
                let item = item_from_json(put).map_err(|e| validation(e.0))?;
                (table.key_of(&item, true)?, Some(item))
            } else if let Some(del) = r
                .get("DeleteRequest")
                .and_then(|p| p.get("Key"))
                .and_then(Value::as_object)
            {
                let key = item_from_json(del).map_err(|e| validation(e.0))?;
                (table.key_of(&key, false)?, None)
            } else {
                return Err(validation("Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"));
            };
            if !seen.insert(key.storage.clone()) {
                return Err(validation("Provided list of item keys contains duplicates"));
            }
            plan.push((table.clone(), key, item));
        }
    }
    // One transaction (one fsync) per table.
    let mut by_table: Vec<(std::sync::Arc<Table>, Vec<_>)> = Vec::new();
    for (table, key, item) in plan {
        match by_table
            .iter_mut()
            .find(|(t, _)| std::sync::Arc::ptr_eq(t, &table))
        {
            Some((_, writes)) => writes.push((key, item)),
            None => by_table.push((table, vec![(key, item)])),
        }
    }
    for (table, writes) in by_table {
        let bytes: usize = writes
            .iter()
            .filter_map(|(_, i)| i.as_ref())
            .map(item_size)
            .sum();
        if bytes > IN_PLACE_BATCH_BYTES && multi_thread() {
            // Encoding and sealing this much holds the writer too long to
            // do it on a worker in place: the worker's other tasks move
            // elsewhere meanwhile.
            tokio::task::block_in_place(|| table.write_batch(&writes))?;
        } else {
            table.write_batch_async(&writes).await?;
        }
    }
    Ok(json!({"UnprocessedItems": {}}))
}

/// Runs one operation and encodes its answer. `GetItem`, `Query`, `Scan`
/// and `BatchGetItem` write their bodies themselves, copying stored items
/// (see [`get_item`], [`read_many`], [`batch_get`]); the others are encoded
/// from their value.
pub fn handle(
    op: Operation,
    ctx: &Ctx<'_>,
    tables: &std::sync::Arc<Tables>,
    input: &Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    match op {
        Operation::GetItem => get_item(ctx, tables, input),
        Operation::Query => read_many(ctx, tables, input, true),
        Operation::Scan => read_many(ctx, tables, input, false),
        Operation::BatchGetItem => batch_get(ctx, tables, input),
        _ => answer(op, ctx, tables, input).map(|value| crate::codec::json_body(&value)),
    }
}

/// The operations that write items in group commits, each table's in one
/// ([`write_item`] answers them).
#[derive(Clone, Copy)]
pub enum ItemWrite {
    Put,
    Delete,
    Update,
    Batch,
}

impl ItemWrite {
    pub fn of(op: Operation) -> Option<ItemWrite> {
        match op {
            Operation::PutItem => Some(ItemWrite::Put),
            Operation::DeleteItem => Some(ItemWrite::Delete),
            Operation::UpdateItem => Some(ItemWrite::Update),
            Operation::BatchWriteItem => Some(ItemWrite::Batch),
            _ => None,
        }
    }
}

/// PutItem, DeleteItem, UpdateItem and BatchWriteItem, answered as the
/// encoded body. They wait for a table's writer and their group commit as
/// a task, without holding a thread (`Table::write_async`). BatchWriteItem
/// blocked a thread each while it waited: a bulk load ran on about 28
/// threads, and the allocator kept memory for each of them after it
/// (BENCHMARKS.md). A batch of more than [`IN_PLACE_BATCH_BYTES`] still
/// takes a thread of its own.
pub async fn write_item(
    write: ItemWrite,
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    let value = match write {
        ItemWrite::Put => put_item(ctx, tables, input).await,
        ItemWrite::Delete => delete_item(ctx, tables, input).await,
        ItemWrite::Update => update_item(ctx, tables, input).await,
        ItemWrite::Batch => batch_write(ctx, tables, input).await,
    }?;
    Ok(crate::codec::json_body(&value))
}

/// Every operation but the reads of [`handle`] and the writes of [`write_item`],
/// answered as a value.
fn answer(
    op: Operation,
    ctx: &Ctx<'_>,
    tables: &std::sync::Arc<Tables>,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    match op {
        Operation::CreateTable => create_table(ctx, tables, input),
        Operation::DescribeTable => {
            let name = required(input, "TableName")?;
            let meta = tables.meta(ctx.region, name)?;
            let stats = tables.stats(ctx.region, name)?;
            let mut table = describe(&meta, "ACTIVE", (stats.items, stats.bytes));
            for kind in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
                if let Some(list) = table.get_mut(kind).and_then(Value::as_array_mut) {
                    for index in list {
                        let index_name = index["IndexName"].as_str().unwrap_or_default().to_owned();
                        let s = tables.index_stats(ctx.region, name, &index_name)?;
                        index["ItemCount"] = json!(s.items);
                        index["IndexSizeBytes"] = json!(s.bytes);
                    }
                }
            }
            Ok(json!({ "Table": table }))
        }
        Operation::ListTables => {
            let limit = input
                .get("Limit")
                .and_then(Value::as_u64)
                .unwrap_or(100)
                .clamp(1, 100) as usize;
            let names = tables.list(
                ctx.region,
                text(input, "ExclusiveStartTableName")?,
                limit + 1,
            )?;
            let more = names.len() > limit;
            let page: Vec<String> = names.into_iter().take(limit).collect();
            let mut out = json!({"TableNames": page});
            if more {
                out["LastEvaluatedTableName"] = json!(page.last());
            }
            Ok(out)
        }
        Operation::DeleteTable => {
            let meta = tables.delete(ctx.region, required(input, "TableName")?)?;
            Ok(json!({"TableDescription": describe(&meta, "DELETING", (0, 0))}))
        }
        Operation::UpdateTable => {
            let name = required(input, "TableName")?;
            if let Some(updates) = input.get("GlobalSecondaryIndexUpdates") {
                return update_global_indexes(ctx, tables, name, input, updates);
            }
            let billing = text(input, "BillingMode")?.map(str::to_owned);
            let throughput = object(input, "ProvisionedThroughput")?.cloned();
            let protection = input
                .get("DeletionProtectionEnabled")
                .and_then(Value::as_bool);
            let meta = tables.update_meta(ctx.region, name, |m| {
                if let Some(b) = &billing {
                    if b != "PROVISIONED" && b != "PAY_PER_REQUEST" {
                        return Err(DdbError::validation(format!("Invalid BillingMode {b}")));
                    }
                    m.billing_mode = b.clone();
                    if b == "PAY_PER_REQUEST" {
                        m.read_capacity = 0;
                        m.write_capacity = 0;
                    }
                }
                if let Some(t) = &throughput {
                    if m.billing_mode == "PAY_PER_REQUEST" {
                        return Err(DdbError::validation("One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST"));
                    }
                    m.read_capacity = t.get("ReadCapacityUnits").and_then(Value::as_i64).unwrap_or(m.read_capacity);
                    m.write_capacity = t.get("WriteCapacityUnits").and_then(Value::as_i64).unwrap_or(m.write_capacity);
                }
                if m.billing_mode == "PROVISIONED" && (m.read_capacity < 1 || m.write_capacity < 1) {
                    return Err(DdbError::validation("One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED"));
                }
                if let Some(p) = protection {
                    m.deletion_protection = p;
                }
                Ok(())
            })?;
            let stats = tables.stats(ctx.region, name)?;
            Ok(json!({"TableDescription": describe(&meta, "ACTIVE", (stats.items, stats.bytes))}))
        }
        Operation::DdbTagResource => {
            let name = table_name_from_arn(ctx, required(input, "ResourceArn")?)?;
            let new = tags_arg(input)?;
            tables.update_meta(ctx.region, &name, |m| {
                for (k, v) in new {
                    m.tags.retain(|(e, _)| *e != k);
                    m.tags.push((k, v));
                }
                Ok(())
            })?;
            Ok(json!({}))
        }
        Operation::DdbUntagResource => {
            let name = table_name_from_arn(ctx, required(input, "ResourceArn")?)?;
            let keys: Vec<String> = input
                .get("TagKeys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            tables.update_meta(ctx.region, &name, |m| {
                m.tags.retain(|(k, _)| !keys.contains(k));
                Ok(())
            })?;
            Ok(json!({}))
        }
        Operation::ListTagsOfResource => {
            let name = table_name_from_arn(ctx, required(input, "ResourceArn")?)?;
            let meta = tables.meta(ctx.region, &name)?;
            let tags: Vec<Value> = meta
                .tags
                .iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect();
            Ok(json!({"Tags": tags}))
        }
        Operation::DescribeLimits => Ok(json!({
            "AccountMaxReadCapacityUnits": 80000, "AccountMaxWriteCapacityUnits": 80000,
            "TableMaxReadCapacityUnits": 40000, "TableMaxWriteCapacityUnits": 40000
        })),
        Operation::DescribeEndpoints => Ok(
            json!({"Endpoints": [{"Address": format!("dynamodb.{}.amazonaws.com", ctx.region), "CachePeriodInMinutes": 1440}]}),
        ),
        Operation::UpdateTimeToLive => {
            let name = required(input, "TableName")?;
            let spec = object(input, "TimeToLiveSpecification")?
                .ok_or_else(|| validation("1 validation error detected: Value null at 'timeToLiveSpecification' failed to satisfy constraint: Member must not be null"))?
                .clone();
            let enabled = spec
                .get("Enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let attr = spec
                .get("AttributeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            tables.update_meta(ctx.region, name, |m| {
                if enabled && m.ttl_attribute.is_some() {
                    return Err(DdbError::validation("TimeToLive is already enabled"));
                }
                if !enabled && m.ttl_attribute.is_none() {
                    return Err(DdbError::validation("TimeToLive is already disabled"));
                }
                m.ttl_attribute = enabled.then(|| attr.clone());
                Ok(())
            })?;
            Ok(json!({"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attr}}))
        }
        Operation::DescribeTimeToLive => {
            let meta = tables.meta(ctx.region, required(input, "TableName")?)?;
            Ok(match meta.ttl_attribute {
                Some(a) => {
                    json!({"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": a}})
                }
                None => json!({"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}),
            })
        }
        Operation::TransactWriteItems => transact_write(ctx, tables, input),
        Operation::TransactGetItems => transact_get(ctx, tables, input),
        Operation::CreateBackup => {
            let table = required(input, "TableName")?;
            let name = required(input, "BackupName")?;
            if name.len() < 3 || name.len() > 255 {
                return Err(validation(format!(
                    "1 validation error detected: Value '{name}' at 'backupName' failed to satisfy constraint: Member must have length between 3 and 255"
                )));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(validation(format!(
                    "1 validation error detected: Value '{name}' at 'backupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
                )));
            }
            let id = format!("{:013}-{}", ctx.now * 1000, &new_uuid(ctx)[..8]);
            let backup = tables.create_backup(
                ctx.region,
                table,
                name,
                &id,
                now_seconds(ctx),
                "USER",
                false,
            )?;
            Ok(json!({"BackupDetails": backup_details(&backup, "AVAILABLE")}))
        }
        Operation::DescribeBackup => {
            let backup = tables.backup(required(input, "BackupArn")?)?;
            Ok(json!({"BackupDescription": backup_description(&backup, "AVAILABLE")}))
        }
        Operation::DeleteBackup => {
            let backup = tables.delete_backup(required(input, "BackupArn")?)?;
            Ok(json!({"BackupDescription": backup_description(&backup, "DELETED")}))
        }
        Operation::ListBackups => {
            let filter = text(input, "TableName")?;
            let lower = input.get("TimeRangeLowerBound").and_then(Value::as_f64);
            let upper = input.get("TimeRangeUpperBound").and_then(Value::as_f64);
            let after = text(input, "ExclusiveStartBackupArn")?;
            let wanted = text(input, "BackupType")?.unwrap_or("USER");
            if !["USER", "SYSTEM", "AWS_BACKUP", "ALL"].contains(&wanted) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{wanted}' at 'backupType' failed to satisfy constraint: Member must satisfy enum value set: [USER, SYSTEM, AWS_BACKUP, ALL]"
                )));
            }
            let limit = input
                .get("Limit")
                .and_then(Value::as_u64)
                .unwrap_or(100)
                .clamp(1, 100) as usize;
            let mut all: Vec<_> = tables
                .backups()?
                .into_iter()
                .filter(|b| b.region == ctx.region)
                .filter(|b| filter.is_none_or(|t| b.table.name == t))
                .filter(|b| wanted == "ALL" || b.backup_type == wanted)
                .filter(|b| {
                    lower.is_none_or(|l| b.created >= l) && upper.is_none_or(|u| b.created <= u)
                })
                .collect();
            if let Some(after) = after {
                if let Some(pos) = all.iter().position(|b| b.arn == after) {
                    all.drain(..=pos);
                }
            }
            let more = all.len() > limit;
            all.truncate(limit);
            let summaries: Vec<Value> = all
                .iter()
                .map(|b| {
                    json!({
                        "TableName": b.table.name, "TableId": b.table.id, "TableArn": b.table.arn,
                        "BackupArn": b.arn, "BackupName": b.name, "BackupCreationDateTime": b.created,
                        "BackupStatus": "AVAILABLE", "BackupType": b.backup_type, "BackupSizeBytes": b.size_bytes
                    })
                })
                .collect();
            let mut out = json!({"BackupSummaries": summaries});
            if more {
                out["LastEvaluatedBackupArn"] = json!(all.last().map(|b| b.arn.clone()));
            }
            Ok(out)
        }
        Operation::UpdateContinuousBackups => {
            let name = required(input, "TableName")?;
            let spec = object(input, "PointInTimeRecoverySpecification")?.ok_or_else(|| {
                validation("1 validation error detected: Value null at 'pointInTimeRecoverySpecification' failed to satisfy constraint: Member must not be null")
            })?;
            let enabled = spec
                .get("PointInTimeRecoveryEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let days = spec
                .get("RecoveryPeriodInDays")
                .and_then(Value::as_u64)
                .unwrap_or(35);
            if !(1..=35).contains(&days) {
                return Err(validation("RecoveryPeriodInDays must be between 1 and 35"));
            }
            let meta = if enabled {
                tables.enable_pitr(ctx.region, name, days as u32)?
            } else {
                tables.disable_pitr(ctx.region, name)?
            };
            Ok(json!({"ContinuousBackupsDescription": continuous_backups(&meta)}))
        }
        Operation::DescribeContinuousBackups => {
            let meta = tables.meta(ctx.region, required(input, "TableName")?)?;
            Ok(json!({"ContinuousBackupsDescription": continuous_backups(&meta)}))
        }
        Operation::RestoreTableToPointInTime => {
            let target = required(input, "TargetTableName")?;
            let (source_region, source) = match (
                text(input, "SourceTableArn")?,
                text(input, "SourceTableName")?,
            ) {
                (Some(arn), _) => {
                    let parts: Vec<&str> = arn.splitn(6, ':').collect();
                    let name = parts.get(5).and_then(|r| r.strip_prefix("table/"));
                    match (parts.get(3), name) {
                        (Some(region), Some(name)) => (region.to_string(), name.to_owned()),
                        _ => return Err(validation(format!("Invalid SourceTableArn: {arn}"))),
                    }
                }
                (None, Some(name)) => (ctx.region.to_owned(), name.to_owned()),
                (None, None) => {
                    return Err(validation(
                        "Either SourceTableName or SourceTableArn must be specified",
                    ))
                }
            };
            let at = if input
                .get("UseLatestRestorableTime")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                moat_dynamodb::tables::now_micros()
            } else {
                let seconds = input
                    .get("RestoreDateTime")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| {
                        validation(
                            "Either RestoreDateTime or UseLatestRestorableTime must be specified",
                        )
                    })?;
                (seconds * 1e6) as u64
            };
            if tables.meta(ctx.region, target).is_ok() {
                return Err(DdbError::new(
                    DdbErrorKind::TableAlreadyExists,
                    format!("Table already exists: {target}"),
                )
                .into());
            }
            let source_meta = tables.meta(&source_region, &source)?;
            let mut meta = source_meta.clone();
            meta.name = target.to_owned();
            meta.id = new_uuid(ctx);
            meta.region = ctx.region.to_owned();
            meta.arn = table_arn(ctx, target);
            meta.created = now_seconds(ctx);
            meta.tags = Vec::new();
            meta.deletion_protection = false;
            meta.ttl_attribute = None;
            meta.pitr = None;
            if let Some(billing) = text(input, "BillingModeOverride")? {
                meta.billing_mode = billing.to_owned();
            }
            let meta = tables.restore_to_point_in_time(&source_region, &source, at, meta)?;
            let stats = tables.stats(ctx.region, &meta.name)?;
            let mut description = describe(&meta, "CREATING", (stats.items, stats.bytes));
            description["RestoreSummary"] = json!({
                "SourceTableArn": source_meta.arn, "RestoreDateTime": at as f64 / 1e6, "RestoreInProgress": false
            });
            Ok(json!({"TableDescription": description}))
        }
        Operation::RestoreTableFromBackup => {
            let arn = required(input, "BackupArn")?;
            let target = required(input, "TargetTableName")?;
            let backup = tables.backup(arn)?;
            if tables.meta(ctx.region, target).is_ok() {
                return Err(DdbError::new(
                    DdbErrorKind::TableAlreadyExists,
                    format!("Table already exists: {target}"),
                )
                .into());
            }
            let mut meta = backup.table.clone();
            meta.name = target.to_owned();
            meta.id = new_uuid(ctx);
            meta.region = ctx.region.to_owned();
            meta.arn = table_arn(ctx, target);
            meta.created = now_seconds(ctx);
            meta.tags = Vec::new();
            meta.deletion_protection = false;
            meta.ttl_attribute = None;
            meta.pitr = None;
            if let Some(billing) = text(input, "BillingModeOverride")? {
                meta.billing_mode = billing.to_owned();
                if billing == "PAY_PER_REQUEST" {
                    meta.read_capacity = 0;
                    meta.write_capacity = 0;
                }
            }
            if let Some(t) = object(input, "ProvisionedThroughputOverride")? {
                meta.read_capacity = t
                    .get("ReadCapacityUnits")
                    .and_then(Value::as_i64)
                    .unwrap_or(meta.read_capacity);
                meta.write_capacity = t
                    .get("WriteCapacityUnits")
                    .and_then(Value::as_i64)
                    .unwrap_or(meta.write_capacity);
            }
            if let Some(sse) = object(input, "SSESpecificationOverride")? {
                meta.kms_key_arn = match sse.get("KMSMasterKeyId").and_then(Value::as_str) {
                    Some(id) => Some(
                        ctx.kms
                            .resolve(ctx.region, id)
                            .map_err(|_| validation(format!("KMSMasterKeyId {id} is not found")))?
                            .arn,
                    ),
                    None => None,
                };
            }
            let overrides: Map<String, Value> = [
                ("GlobalSecondaryIndexOverride", "GlobalSecondaryIndexes"),
                ("LocalSecondaryIndexOverride", "LocalSecondaryIndexes"),
            ]
            .into_iter()
            .filter_map(|(from, to)| input.get(from).map(|v| (to.to_owned(), v.clone())))
            .collect();
            if !overrides.is_empty() {
                let mut indexes = index_args(&overrides, &meta.attribute_definitions, &meta.hash)?;
                // An override of one kind keeps the other kind as it was.
                for global in [true, false] {
                    let kind = if global {
                        "GlobalSecondaryIndexes"
                    } else {
                        "LocalSecondaryIndexes"
                    };
                    if !overrides.contains_key(kind) {
                        indexes.extend(meta.indexes.iter().filter(|i| i.global == global).cloned());
                    }
                }
                meta.indexes = indexes;
            }
            let meta = tables.restore_backup(arn, meta)?;
            let mut description =
                describe(&meta, "CREATING", (backup.item_count, backup.size_bytes));
            description["RestoreSummary"] = json!({
                "SourceBackupArn": backup.arn, "SourceTableArn": backup.table.arn,
                "RestoreDateTime": now_seconds(ctx), "RestoreInProgress": false
            });
            Ok(json!({"TableDescription": description}))
        }
        Operation::ExportTableToPointInTime => export_table(ctx, tables, input),
        Operation::DescribeExport => {
            let export = tables.describe_export(required(input, "ExportArn")?)?;
            Ok(json!({"ExportDescription": export_description(&export)}))
        }
        Operation::ListExports => listing(
            ctx,
            input,
            tables.exports()?,
            ("MaxResults", "ExportSummaries"),
            |e| (&e.arn, &e.table_arn),
            |e| json!({"ExportArn": e.arn, "ExportStatus": e.status, "ExportType": e.export_type}),
        ),
        Operation::ImportTable => import_table(ctx, tables, input),
        Operation::DescribeImport => {
            let import = tables.describe_import(required(input, "ImportArn")?)?;
            Ok(json!({"ImportTableDescription": import_description(&import)}))
        }
        Operation::ListImports => listing(
            ctx,
            input,
            tables.imports()?,
            ("PageSize", "ImportSummaryList"),
            |i| (&i.arn, &i.table_arn),
            |i| {
                json!({
                    "ImportArn": i.arn, "ImportStatus": i.status, "TableArn": i.table_arn,
                    "S3BucketSource": s3_source(i), "InputFormat": i.format,
                    "StartTime": i.start_time, "EndTime": i.end_time
                })
            },
        ),
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            "Unknown operation exception",
        )),
    }
}

/// ListExports and ListImports: the records of the caller's region (of one
/// table with `TableArn`), one page of them; `NextToken` is the last ARN of
/// the page. `names`: the page-size parameter and the list's name.
fn listing<T>(
    ctx: &Ctx<'_>,
    input: &Map<String, Value>,
    all: Vec<T>,
    names: (&str, &str),
    arns: impl Fn(&T) -> (&String, &String),
    summary: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let table = text(input, "TableArn")?;
    let mine: Vec<T> = all
        .into_iter()
        .filter(|r| {
            let (arn, table_arn) = arns(r);
            arn.split(':').nth(3) == Some(ctx.region) && table.is_none_or(|t| table_arn == t)
        })
        .collect();
    let (page, next) = page_of(mine, input, names.0, |r| arns(r).0.clone())?;
    let mut out = json!({ names.1: page.iter().map(summary).collect::<Vec<Value>>() });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

/// One page of a listing: `NextToken` is the last ARN of the page.
fn page_of<T>(
    all: Vec<T>,
    input: &Map<String, Value>,
    size_param: &str,
    arn: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size = match input.get(size_param).and_then(Value::as_i64) {
        None => 25,
        Some(n) if (1..=25).contains(&n) => n as usize,
        Some(n) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{n}' at '{}' failed to satisfy constraint: Member must have value between 1 and 25",
                lower_first(size_param)
            )))
        }
    };
    let mut all = all;
    if let Some(token) = text(input, "NextToken")? {
        let pos = all
            .iter()
            .position(|t| arn(t) == token)
            .ok_or_else(|| validation(format!("Invalid NextToken: {token}")))?;
        all.drain(..=pos);
    }
    let next = (all.len() > size).then(|| arn(&all[size - 1]));
    all.truncate(size);
    Ok((all, next))
}

fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A time in seconds (the SDKs send epoch seconds with a fraction).
fn seconds_arg(input: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s >= 0.0 => Ok(Some((s * 1e6) as u64)),
            _ => Err(validation(format!("Invalid value for {name}"))),
        },
    }
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

/// A prefix the object store can hold keys under: no empty, `.` or `..`
/// segment (a trailing `/` is allowed).
fn valid_prefix(prefix: &str) -> bool {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    prefix.len() <= 1024
        && !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\0'))
}

/// How long a `ClientToken` names its request, as in DynamoDB.
const CLIENT_TOKEN_SECONDS: f64 = 8.0 * 3600.0;

/// The earlier request with this request's `ClientToken`, if one was made
/// within the last 8 hours, so that a retry gets it again; `conflict` if it
/// had other parameters. `token_of` gives a record's token, whether its
/// parameters match this request's, and when it started (seconds).
fn by_client_token<T>(
    input: &Map<String, Value>,
    records: Vec<T>,
    now: f64,
    token_of: impl Fn(&T) -> (Option<&str>, bool, f64),
    conflict: DdbErrorKind,
) -> Result<Option<T>, ApiError> {
    let Some(token) = text(input, "ClientToken")? else {
        return Ok(None);
    };
    let Some(earlier) = records.into_iter().find(|r| {
        let (t, _, started) = token_of(r);
        t == Some(token) && now - started < CLIENT_TOKEN_SECONDS
    }) else {
        return Ok(None);
    };
    if !token_of(&earlier).1 {
        return Err(DdbError::new(
            conflict,
            format!("The ClientToken {token} was used for a request with other parameters"),
        )
        .into());
    }
    Ok(Some(earlier))
}

fn export_id(ctx: &Ctx<'_>) -> String {
    format!("{:013}-{}", ctx.now * 1000, &new_uuid(ctx)[..8])
}

fn export_table(
    ctx: &Ctx<'_>,
    tables: &std::sync::Arc<Tables>,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let table_arn = required(input, "TableArn")?;
    let name = table_name_from_arn(ctx, table_arn)?;
    let meta = tables.meta(ctx.region, &name)?;
    let bucket = required(input, "S3Bucket")?;
    if !valid_bucket(bucket) {
        return Err(validation(format!("Invalid S3Bucket: {bucket}")));
    }
    let prefix = text(input, "S3Prefix")?;
    if prefix.is_some_and(|p| !valid_prefix(p)) {
        return Err(validation("Invalid S3Prefix"));
    }
    authorize_objects(ctx, "s3:PutObject", bucket, prefix)?;
    match text(input, "ExportFormat")?.unwrap_or("DYNAMODB_JSON") {
        "DYNAMODB_JSON" => {}
        "ION" => return Err(validation("ExportFormat ION is not supported by Moat; use DYNAMODB_JSON")),
        other => return Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'exportFormat' failed to satisfy constraint: Member must satisfy enum value set: [DYNAMODB_JSON, ION]"
        ))),
    }
    let now = moat_dynamodb::tables::now_micros();
    let export_type = text(input, "ExportType")?.unwrap_or("FULL_EXPORT");
    let incremental = match export_type {
        "FULL_EXPORT" => None,
        "INCREMENTAL_EXPORT" => {
            let spec = object(input, "IncrementalExportSpecification")?.ok_or_else(|| {
                validation("IncrementalExportSpecification is required for an INCREMENTAL_EXPORT")
            })?;
            let from = seconds_arg(spec, "ExportFromTime")?
                .ok_or_else(|| validation("ExportFromTime is required for an INCREMENTAL_EXPORT"))?;
            let to = seconds_arg(spec, "ExportToTime")?.unwrap_or(now);
            if from >= to {
                return Err(DdbError::new(
                    DdbErrorKind::InvalidExportTime,
                    "ExportFromTime must be before ExportToTime",
                )
                .into());
            }
            if to - from > 24 * 3600 * 1_000_000 {
                return Err(DdbError::new(
                    DdbErrorKind::InvalidExportTime,
                    "The incremental export period must not be longer than 24 hours",
                )
                .into());
            }
            let view = text(spec, "ExportViewType")?.unwrap_or("NEW_AND_OLD_IMAGES");
            if !["NEW_IMAGE", "NEW_AND_OLD_IMAGES"].contains(&view) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{view}' at 'exportViewType' failed to satisfy constraint: Member must satisfy enum value set: [NEW_IMAGE, NEW_AND_OLD_IMAGES]"
                )));
            }
            Some((from, to, view.to_owned()))
        }
        other => return Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'exportType' failed to satisfy constraint: Member must satisfy enum value set: [FULL_EXPORT, INCREMENTAL_EXPORT]"
        ))),
    };
    let at = seconds_arg(input, "ExportTime")?.unwrap_or(now);
    // From the token's check until the export's record is saved: two
    // requests with one token at once start one export.
    static EXPORT_TOKENS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _checking = EXPORT_TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    let retried = by_client_token(
        input,
        tables.exports()?,
        now_seconds(ctx),
        |e| {
            (
                e.client_token.as_deref(),
                e.table_arn == meta.arn
                    && e.bucket == bucket
                    && e.prefix.as_deref() == prefix
                    && e.export_type == export_type,
                e.start_time,
            )
        },
        DdbErrorKind::ExportConflict,
    )?;
    if let Some(done) = retried {
        return Ok(json!({"ExportDescription": export_description(&done)}));
    }
    let export = tables.export(
        &meta,
        moat_dynamodb::exports::ExportRequest {
            id: export_id(ctx),
            bucket: bucket.to_owned(),
            prefix: prefix.map(str::to_owned),
            incremental,
            at,
            now: now_seconds(ctx),
            client_token: text(input, "ClientToken")?.map(str::to_owned),
        },
    )?;
    Ok(json!({"ExportDescription": export_description(&export)}))
}

fn export_description(e: &moat_dynamodb::exports::ExportMeta) -> Value {
    let mut out = json!({
        "ExportArn": e.arn, "ExportStatus": e.status, "StartTime": e.start_time,
        "ExportManifest": e.manifest, "TableArn": e.table_arn,
        "TableId": e.table_id, "ExportTime": e.export_time, "S3Bucket": e.bucket,
        "S3SseAlgorithm": "AES256", "ExportFormat": e.format, "ExportType": e.export_type
    });
    // Known once the export is over.
    if e.status != "IN_PROGRESS" {
        out["EndTime"] = json!(e.end_time);
    }
    if e.status == "COMPLETED" {
        out["BilledSizeBytes"] = json!(e.billed_bytes);
        out["ItemCount"] = json!(e.item_count);
    }
    if let Some(code) = &e.failure_code {
        out["FailureCode"] = json!(code);
    }
    if let Some(message) = &e.failure_message {
        out["FailureMessage"] = json!(message);
    }
    if let Some(p) = &e.prefix {
        out["S3Prefix"] = json!(p);
    }
    if let Some(t) = &e.client_token {
        out["ClientToken"] = json!(t);
    }
    if let (Some(from), Some(to), Some(view)) = (e.from_time, e.to_time, &e.view_type) {
        out["IncrementalExportSpecification"] =
            json!({"ExportFromTime": from, "ExportToTime": to, "ExportViewType": view});
    }
    out
}

fn s3_source(i: &moat_dynamodb::exports::ImportMeta) -> Value {
    let mut out = json!({"S3Bucket": i.bucket});
    if let Some(p) = &i.key_prefix {
        out["S3KeyPrefix"] = json!(p);
    }
    out
}

fn import_description(i: &moat_dynamodb::exports::ImportMeta) -> Value {
    let mut out = json!({
        "ImportArn": i.arn, "ImportStatus": i.status, "TableArn": i.table_arn,
        "TableId": i.table_id, "S3BucketSource": s3_source(i), "ErrorCount": i.errors,
        "InputFormat": i.format, "InputCompressionType": i.compression,
        "TableCreationParameters": i.creation, "StartTime": i.start_time,
        "EndTime": i.end_time, "ProcessedSizeBytes": i.processed_bytes,
        "ProcessedItemCount": i.processed_items, "ImportedItemCount": i.imported_items
    });
    if let Some(t) = &i.client_token {
        out["ClientToken"] = json!(t);
    }
    if let (Some(code), Some(message)) = (&i.failure_code, &i.failure_message) {
        out["FailureCode"] = json!(code);
        out["FailureMessage"] = json!(message);
    }
    out
}

fn import_table(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let source = object(input, "S3BucketSource")?.ok_or_else(|| {
        validation("1 validation error detected: Value null at 's3BucketSource' failed to satisfy constraint: Member must not be null")
    })?;
    let bucket = required(source, "S3Bucket")?;
    if !valid_bucket(bucket) {
        return Err(validation(format!("Invalid S3Bucket: {bucket}")));
    }
    let key_prefix = text(source, "S3KeyPrefix")?;
    if key_prefix.is_some_and(|p| !valid_prefix(p)) {
        return Err(validation("Invalid S3KeyPrefix"));
    }
    authorize_objects(ctx, "s3:GetObject", bucket, key_prefix)?;
    let format = required(input, "InputFormat")?;
    match format {
        "DYNAMODB_JSON" | "CSV" => {}
        "ION" => return Err(validation("InputFormat ION is not supported by Moat; use DYNAMODB_JSON or CSV")),
        other => return Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'inputFormat' failed to satisfy constraint: Member must satisfy enum value set: [DYNAMODB_JSON, ION, CSV]"
        ))),
    }
    let compression = text(input, "InputCompressionType")?.unwrap_or("NONE");
    match compression {
        "NONE" | "GZIP" => {}
        "ZSTD" => return Err(validation("InputCompressionType ZSTD is not supported by Moat; use GZIP or NONE")),
        other => return Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'inputCompressionType' failed to satisfy constraint: Member must satisfy enum value set: [GZIP, ZSTD, NONE]"
        ))),
    }
    let csv = object(input, "InputFormatOptions")?
        .and_then(|o| o.get("Csv"))
        .and_then(Value::as_object);
    let delimiter = match csv.and_then(|c| c.get("Delimiter")).and_then(Value::as_str) {
        None => ',',
        Some(d) if d.chars().count() == 1 && ",\t:;| ".contains(d) => {
            d.chars().next().unwrap_or(',')
        }
        Some(d) => return Err(validation(format!("Invalid CSV delimiter: {d}"))),
    };
    let header = csv
        .and_then(|c| c.get("HeaderList"))
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    let creation = object(input, "TableCreationParameters")?.ok_or_else(|| {
        validation("1 validation error detected: Value null at 'tableCreationParameters' failed to satisfy constraint: Member must not be null")
    })?;
    let meta = table_meta_arg(ctx, creation)?;
    let retried = by_client_token(
        input,
        tables.imports()?,
        now_seconds(ctx),
        |i| {
            (
                i.client_token.as_deref(),
                i.table_arn == meta.arn && i.bucket == bucket,
                i.start_time,
            )
        },
        DdbErrorKind::ImportConflict,
    )?;
    if let Some(done) = retried {
        return Ok(json!({"ImportTableDescription": import_description(&done)}));
    }
    let import = tables.import(
        meta,
        moat_dynamodb::exports::ImportRequest {
            id: export_id(ctx),
            bucket: bucket.to_owned(),
            key_prefix: key_prefix.map(str::to_owned),
            format: format.to_owned(),
            compression: compression.to_owned(),
            csv_delimiter: delimiter,
            csv_header: header,
            now: now_seconds(ctx),
            client_token: text(input, "ClientToken")?.map(str::to_owned),
            creation: Value::Object(creation.clone()),
        },
    )?;
    Ok(json!({"ImportTableDescription": import_description(&import)}))
}

/// How a key value appears in `dynamodb:LeadingKeys`.
fn key_text(v: &AttributeValue) -> Option<String> {
    match v {
        AttributeValue::S(s) => Some(s.clone()),
        AttributeValue::N(n) => Some(n.to_string()),
        AttributeValue::B(b) => Some(crate::codec::base64_encode(b)),
        _ => None,
    }
}

/// The DynamoDB condition keys of one table's part of a request.
#[derive(Default)]
struct RequestKeys {
    leading: Vec<String>,
    attributes: Vec<String>,
    select: Option<String>,
}

impl RequestKeys {
    fn attribute(&mut self, name: &str) {
        if !self.attributes.iter().any(|a| a == name) {
            self.attributes.push(name.to_owned());
        }
    }

    fn leading_of(&mut self, meta: &TableMeta, item: Option<&Map<String, Value>>) {
        let value = item
            .and_then(|m| m.get(&meta.hash.name))
            .and_then(|v| AttributeValue::from_json(v).ok())
            .and_then(|v| key_text(&v));
        if let Some(v) = value {
            if !self.leading.contains(&v) {
                self.leading.push(v);
            }
        }
    }

    fn names_of(&mut self, item: Option<&Map<String, Value>>) {
        for name in item.into_iter().flat_map(|m| m.keys()) {
            self.attribute(name);
        }
    }

    /// The attributes named by a request's expressions (and legacy parameters).
    fn expressions(&mut self, input: &Map<String, Value>) {
        let Ok(ph) = placeholders(input) else { return };
        for param in ["ConditionExpression", "FilterExpression"] {
            if let Some(Ok(c)) = text(input, param)
                .ok()
                .flatten()
                .map(|e| parse_condition(e, &ph))
            {
                c.top_level_names().iter().for_each(|n| self.attribute(n));
            }
        }
        if let Some(Ok(u)) = text(input, "UpdateExpression")
            .ok()
            .flatten()
            .map(|e| parse_update(e, &ph))
        {
            u.top_level_names().iter().for_each(|n| self.attribute(n));
        }
        if let Some(Ok(p)) = text(input, "ProjectionExpression")
            .ok()
            .flatten()
            .map(|e| parse_projection(e, &ph))
        {
            p.top_level_names().iter().for_each(|n| self.attribute(n));
        }
        if let Some(Ok(k)) = text(input, "KeyConditionExpression")
            .ok()
            .flatten()
            .map(|e| parse_key_condition(e, &ph))
        {
            self.attribute(&k.partition_name);
            if let Some((name, _)) = &k.sort {
                self.attribute(name);
            }
        }
        for legacy in ["AttributesToGet"] {
            for name in input
                .get(legacy)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                self.attribute(name);
            }
        }
        for legacy in [
            "Expected",
            "AttributeUpdates",
            "KeyConditions",
            "QueryFilter",
            "ScanFilter",
        ] {
            for name in input
                .get(legacy)
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
            {
                self.attribute(name);
            }
        }
    }

    fn select_of(&mut self, input: &Map<String, Value>) {
        let specific =
            input.contains_key("ProjectionExpression") || input.contains_key("AttributesToGet");
        self.select = Some(match input.get("Select").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None if specific => "SPECIFIC_ATTRIBUTES".to_owned(),
            None => "ALL_ATTRIBUTES".to_owned(),
        });
    }

    fn apply(self, input: &Map<String, Value>, keys: &mut ContextKeys) {
        if !self.leading.is_empty() {
            keys.set_multi("dynamodb:LeadingKeys", self.leading);
        }
        if !self.attributes.is_empty() {
            keys.set_multi("dynamodb:Attributes", self.attributes);
        }
        if let Some(s) = self.select {
            keys.set("dynamodb:Select", s);
        }
        for (param, key) in [
            ("ReturnValues", "dynamodb:ReturnValues"),
            ("ReturnConsumedCapacity", "dynamodb:ReturnConsumedCapacity"),
        ] {
            if let Some(v) = input.get(param).and_then(Value::as_str) {
                keys.set(key, v.to_owned());
            }
        }
    }
}

/// Adds the condition keys DynamoDB supplies for a single-table request:
/// `dynamodb:LeadingKeys` (the partition keys it touches; none for a Scan),
/// `dynamodb:Attributes` (the attributes it reads or writes, keys included),
/// `dynamodb:Select`, `dynamodb:ReturnValues` and `dynamodb:ReturnConsumedCapacity`.
pub fn add_condition_keys(
    op: Operation,
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
    keys: &mut ContextKeys,
) {
    let Some(name) = input.get("TableName").and_then(Value::as_str) else {
        return;
    };
    let Some(meta) = table_meta(ctx, tables, name) else {
        return;
    };
    let meta = &*meta;
    let mut rk = RequestKeys::default();
    match op {
        Operation::GetItem | Operation::DeleteItem | Operation::UpdateItem => {
            let key = input.get("Key").and_then(Value::as_object);
            rk.leading_of(meta, key);
            rk.names_of(key);
            rk.expressions(input);
            if op == Operation::GetItem {
                rk.select_of(input);
            }
        }
        Operation::PutItem => {
            let item = input.get("Item").and_then(Value::as_object);
            rk.leading_of(meta, item);
            rk.names_of(item);
            rk.expressions(input);
        }
        Operation::Query => {
            rk.expressions(input);
            let partition = placeholders(input).ok().and_then(|ph| {
                let e = text(input, "KeyConditionExpression").ok().flatten()?;
                parse_key_condition(e, &ph)
                    .ok()
                    .map(|k| k.for_schema(&meta.hash.name))
            });
            let legacy = input
                .get("KeyConditions")
                .and_then(|k| k.get(&meta.hash.name))
                .and_then(|c| c.get("AttributeValueList"))
                .and_then(|l| l.get(0))
                .and_then(|v| AttributeValue::from_json(v).ok());
            let value = partition
                .filter(|k| k.partition_name == meta.hash.name)
                .map(|k| k.partition_value)
                .or(legacy);
            if let Some(v) = value.as_ref().and_then(key_text) {
                rk.leading.push(v);
            }
            rk.select_of(input);
        }
        Operation::Scan => {
            rk.expressions(input);
            rk.select_of(input);
        }
        _ => return,
    }
    rk.apply(input, keys);
}

/// A table's description for its condition keys: the open handle's, since
/// reading the catalog would cost every item request a second store read;
/// the catalog's if the table's store cannot be opened, so that the keys
/// (and the decision) never depend on the store's health.
enum Described {
    Open(std::sync::Arc<Table>),
    Catalog(Box<TableMeta>),
}

impl std::ops::Deref for Described {
    type Target = TableMeta;
    fn deref(&self) -> &TableMeta {
        match self {
            Described::Open(table) => &table.meta,
            Described::Catalog(meta) => meta,
        }
    }
}

fn table_meta(ctx: &Ctx<'_>, tables: &Tables, name: &str) -> Option<Described> {
    match tables.table(ctx.region, name) {
        Ok(open) => Some(Described::Open(open)),
        Err(_) => tables
            .meta(ctx.region, name)
            .ok()
            .map(|m| Described::Catalog(Box::new(m))),
    }
}

/// The condition keys of one table's part of a batch.
fn batch_keys(
    ctx: &Ctx<'_>,
    tables: &Tables,
    table: &str,
    request: &Value,
    write: bool,
) -> ContextKeys {
    let mut keys = ctx.keys.layer();
    let Some(meta) = table_meta(ctx, tables, table) else {
        return keys;
    };
    let meta = &*meta;
    let mut rk = RequestKeys::default();
    if write {
        for r in request.as_array().into_iter().flatten() {
            let item = r
                .get("PutRequest")
                .and_then(|p| p.get("Item"))
                .or_else(|| r.get("DeleteRequest").and_then(|d| d.get("Key")))
                .and_then(Value::as_object);
            rk.leading_of(meta, item);
            rk.names_of(item);
        }
    } else if let Some(request) = request.as_object() {
        for k in request
            .get("Keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = k.as_object();
            rk.leading_of(meta, key);
            rk.names_of(key);
        }
        rk.expressions(request);
        rk.select_of(request);
    }
    let empty = Map::new();
    rk.apply(&empty, &mut keys);
    keys
}

/// One `TransactItems` entry: its kind, and the request it carries.
fn transact_entry(entry: &Value) -> Result<(&'static str, &Map<String, Value>), ApiError> {
    for kind in ["Put", "Update", "Delete", "ConditionCheck", "Get"] {
        if let Some(body) = entry.get(kind).and_then(Value::as_object) {
            return Ok((kind, body));
        }
    }
    Err(validation(
        "A TransactItem must have exactly one of Put, Update, Delete or ConditionCheck",
    ))
}

/// Authorises one action of a transaction as AWS does: its own action on
/// its table, with `dynamodb:EnclosingOperation` naming the transaction.
fn authorize_transact_action(
    ctx: &Ctx<'_>,
    tables: &Tables,
    enclosing: &str,
    kind: &str,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    let (action, op) = match kind {
        "Put" => ("dynamodb:PutItem", Operation::PutItem),
        "Update" => ("dynamodb:UpdateItem", Operation::UpdateItem),
        "Delete" => ("dynamodb:DeleteItem", Operation::DeleteItem),
        "Get" => ("dynamodb:GetItem", Operation::GetItem),
        _ => ("dynamodb:ConditionCheckItem", Operation::DeleteItem),
    };
    let table = required(body, "TableName")?;
    let mut keys = ctx.keys.layer();
    add_condition_keys(op, ctx, tables, body, &mut keys);
    if kind == "ConditionCheck" {
        keys.remove("dynamodb:ReturnValues");
    }
    keys.set("dynamodb:EnclosingOperation", enclosing);
    authorize_table(ctx, action, table, keys)
}

fn transact_write(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let items = input
        .get("TransactItems")
        .and_then(Value::as_array)
        .ok_or_else(|| validation("1 validation error detected: Value null at 'transactItems' failed to satisfy constraint: Member must not be null"))?;
    if items.is_empty() || items.len() > 100 {
        return Err(validation("1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to 100"));
    }
    // Idempotency: the same token with the same request answers as before,
    // for ten minutes; with another request it is refused.
    let token = text(input, "ClientRequestToken")?.map(str::to_owned);
    let fingerprint = serde_json::to_string(items).unwrap_or_default();
    let now = moat_dynamodb::tables::now_micros();
    if let Some(t) = &token {
        let mut seen = tables.idempotency.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (at, _, _)| now.saturating_sub(*at) < 600_000_000);
        if let Some((_, print, answer)) = seen.get(t) {
            if *print == fingerprint {
                return Ok(answer.clone());
            }
            return Err(ApiError::new(
                ErrorKind::Service {
                    code: "IdempotentParameterMismatchException",
                    status: 400,
                },
                "The request uses the same client token as a previous, but non-identical request.",
            ));
        }
    }
    let mut actions = Vec::with_capacity(items.len());
    let mut seen_items = std::collections::HashSet::new();
    let mut return_old_on_failure = Vec::new();
    for entry in items {
        let (kind, body) = transact_entry(entry)?;
        if kind == "Get" {
            return Err(validation("TransactWriteItems cannot contain a Get"));
        }
        authorize_transact_action(ctx, tables, "TransactWriteItems", kind, body)?;
        let table = tables.table(ctx.region, required(body, "TableName")?)?;
        let (key, item) = if kind == "Put" {
            let item = item_arg(body, "Item")?;
            (table.key_of(&item, true)?, Some(item))
        } else {
            (table.key_of(&item_arg(body, "Key")?, false)?, None)
        };
        if !seen_items.insert((table.meta.arn.clone(), key.storage.clone())) {
            return Err(validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        let ph = placeholders(body)?;
        let condition = match text(body, "ConditionExpression")? {
            Some(e) => Some(parse_condition(e, &ph).map_err(expr_err)?),
            None if kind == "ConditionCheck" => {
                return Err(validation(
                    "A ConditionCheck must have a ConditionExpression",
                ))
            }
            None => None,
        };
        let update = match (kind, text(body, "UpdateExpression")?) {
            ("Update", Some(e)) => Some(parse_update(e, &ph).map_err(expr_err)?),
            ("Update", None) => return Err(validation("An Update must have an UpdateExpression")),
            _ => None,
        };
        ph.check_all_used().map_err(expr_err)?;
        if let Some(u) = &update {
            for n in u.top_level_names() {
                if key.attributes.contains_key(&n) {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: Cannot update attribute {n}. This attribute is part of the key"
                    )));
                }
            }
        }
        return_old_on_failure.push(
            body.get("ReturnValuesOnConditionCheckFailure")
                .and_then(Value::as_str)
                == Some("ALL_OLD"),
        );
        let key_attributes = key.attributes.clone();
        let decide =
            move |old: Option<&Item>| -> Result<moat_dynamodb::tables::TxEffect, DdbError> {
                use moat_dynamodb::tables::TxEffect;
                if let Some(c) = &condition {
                    let empty = Item::new();
                    if !c
                        .eval(old.unwrap_or(&empty))
                        .map_err(|e| DdbError::validation(e.0))?
                    {
                        let mut e = DdbError::new(
                            DdbErrorKind::ConditionalCheckFailed,
                            "The conditional request failed",
                        );
                        e.old_item = old.cloned();
                        return Err(e);
                    }
                }
                Ok(match kind {
                    "Put" => TxEffect::Write(item),
                    "Delete" => TxEffect::Write(None),
                    "Update" => {
                        let mut next = old.cloned().unwrap_or(key_attributes);
                        if let Some(u) = &update {
                            u.apply(&mut next).map_err(|e| DdbError::validation(e.0))?;
                        }
                        TxEffect::Write(Some(next))
                    }
                    _ => TxEffect::Check,
                })
            };
        actions.push(moat_dynamodb::tables::TxAction {
            table,
            key,
            decide: Box::new(decide),
        });
    }
    match tables.transact_write(actions) {
        Ok(sizes) => {
            let answer = json!({});
            if let Some(t) = token {
                tables
                    .idempotency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(t, (now, fingerprint, answer.clone()));
            }
            let mut answer = answer;
            // A transaction reads and writes every item twice, and is
            // charged so: two write units per KB.
            let units = sizes
                .iter()
                .map(|(t, size)| (t.as_str(), 2.0 * write_units(*size)));
            if let Some(c) = consumed_per_table(input, units) {
                answer["ConsumedCapacity"] = c;
            }
            Ok(answer)
        }
        Err(Ok(cancelled)) => {
            let codes: Vec<&str> = cancelled
                .reasons
                .iter()
                .map(|r| r.as_ref().map(cancellation_code).unwrap_or("None"))
                .collect();
            let reasons: Vec<Value> = cancelled
                .reasons
                .iter()
                .zip(return_old_on_failure)
                .map(|(r, want_old)| match r {
                    None => json!({"Code": "None"}),
                    Some(e) => {
                        let mut v = json!({"Code": cancellation_code(e), "Message": e.message});
                        if let (true, Some(item)) = (want_old, &e.old_item) {
                            v["Item"] = item_to_json(item);
                        }
                        v
                    }
                })
                .collect();
            let mut err = ApiError::new(
                ErrorKind::Service { code: "TransactionCanceledException", status: 400 },
                format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
            );
            err.extra = Some(json!({"CancellationReasons": reasons}));
            Err(err)
        }
        Err(Err(e)) => Err(e.into()),
    }
}

fn transact_get(
    ctx: &Ctx<'_>,
    tables: &Tables,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let items = input
        .get("TransactItems")
        .and_then(Value::as_array)
        .ok_or_else(|| validation("1 validation error detected: Value null at 'transactItems' failed to satisfy constraint: Member must not be null"))?;
    if items.is_empty() || items.len() > 100 {
        return Err(validation("1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to 100"));
    }
    let mut reads = Vec::new();
    let mut projections = Vec::new();
    for entry in items {
        let (kind, body) = transact_entry(entry)?;
        if kind != "Get" {
            return Err(validation("TransactGetItems can only contain Get actions"));
        }
        authorize_transact_action(ctx, tables, "TransactGetItems", kind, body)?;
        let table = tables.table(ctx.region, required(body, "TableName")?)?;
        let key = table.key_of(&item_arg(body, "Key")?, false)?;
        let ph = placeholders(body)?;
        projections.push(projection_arg(body, &ph)?);
        ph.check_all_used().map_err(expr_err)?;
        reads.push((table, key));
    }
    let found = tables.transact_get(&reads)?;
    // Two read units per 4 KB of each item, as for every transactional read.
    let units: Vec<(String, f64)> = reads
        .iter()
        .zip(&found)
        .map(|((table, _), item)| {
            let size = item.as_ref().map(item_size).unwrap_or(0);
            (table.meta.name.clone(), 2.0 * read_units(size, true))
        })
        .collect();
    let capacity = consumed_per_table(input, units.iter().map(|(t, u)| (t.as_str(), *u)));
    let responses: Vec<Value> = found
        .into_iter()
        .zip(projections)
        .map(|(item, projection)| match item {
            Some(item) => json!({"Item": item_to_json(&match &projection {
                Some(p) => p.apply(&item),
                None => item,
            })}),
            None => json!({}),
        })
        .collect();
    let mut out = json!({ "Responses": responses });
    if let Some(c) = capacity {
        out["ConsumedCapacity"] = c;
    }
    Ok(out)
}
