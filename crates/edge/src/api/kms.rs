//! KMS (awsJson 1.1, `TrentService`): JSON in, JSON out.

use std::collections::BTreeMap;

use moat_iam::AuthzRequest;
use moat_kms::{KeyRecord, KeyState, KmsError};
use moat_policy::Decision;
use serde_json::{json, Map, Value};

use super::{json_required as required, json_text as text, Ctx};
use crate::codec::{base64_decode, base64_encode};
use crate::error::{ApiError, ErrorKind};
use crate::services::Operation;

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> ApiError {
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
    ApiError::new(
        ErrorKind::Service {
            code: "ValidationException",
            status: 400,
        },
        message,
    )
}

fn blob(input: &Map<String, Value>, name: &str) -> Result<Vec<u8>, ApiError> {
    base64_decode(required(input, name)?).ok_or_else(|| {
        ApiError::new(
            ErrorKind::Serialization,
            format!("{name} is not valid base64"),
        )
    })
}

fn context(input: &Map<String, Value>, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::new(
                    ErrorKind::Serialization,
                    "encryption context values must be strings",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::new(
            ErrorKind::Serialization,
            format!("{name} must be an object"),
        )),
    }
}

fn tags(input: &Map<String, Value>) -> Vec<(String, String)> {
    input
        .get("Tags")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("TagKey")?.as_str()?.to_owned(),
                        t.get("TagValue")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn metadata(ctx: &Ctx<'_>, r: &KeyRecord) -> Value {
    let mut m = json!({
        "AWSAccountId": ctx.kms.account(),
        "KeyId": r.id,
        "Arn": r.arn,
        "CreationDate": r.created,
        "Enabled": r.state == KeyState::Enabled,
        "Description": r.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": r.state.as_str(),
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(d) = r.deletion_date {
        m["DeletionDate"] = json!(d);
        m["PendingDeletionWindowInDays"] = json!((d - ctx.now + 86_399) / 86_400);
    }
    m
}

/// The resource ARN a KMS request acts on, for authorisation and the audit log.
pub fn resource(op: Operation, ctx: &Ctx<'_>, input: &Map<String, Value>) -> String {
    let account = ctx.kms.account();
    let region = ctx.region;
    let key_arn = |id: &str| match ctx.kms.resolve(region, id) {
        Ok(r) => r.arn,
        Err(_) => format!("arn:aws:kms:{region}:{account}:key/{id}"),
    };
    match op {
        Operation::CreateKey | Operation::ListKeys | Operation::ListAliases => "*".to_owned(),
        Operation::CreateAlias | Operation::DeleteAlias => {
            let alias = input.get("AliasName").and_then(Value::as_str).unwrap_or("");
            format!("arn:aws:kms:{region}:{account}:{alias}")
        }
        Operation::Decrypt if !input.contains_key("KeyId") => input
            .get("CiphertextBlob")
            .and_then(Value::as_str)
            .and_then(base64_decode)
            .and_then(|b| {
                b.get(4..40)
                    .map(|id| String::from_utf8_lossy(id).into_owned())
            })
            .map(|id| key_arn(&id))
            .unwrap_or_else(|| "*".to_owned()),
        _ => match input.get("KeyId").and_then(Value::as_str) {
            Some(id) => key_arn(id),
            None => "*".to_owned(),
        },
    }
}

pub fn handle(op: Operation, ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<Value, ApiError> {
    let kms = ctx.kms;
    let region = ctx.region;
    let out = match op {
        Operation::CreateKey => {
            if let Some(spec) = text(input, "KeySpec")?.or(text(input, "CustomerMasterKeySpec")?) {
                if spec != "SYMMETRIC_DEFAULT" {
                    return Err(validation(format!(
                        "KeySpec {spec} is not supported; use SYMMETRIC_DEFAULT"
                    )));
                }
            }
            if let Some(usage) = text(input, "KeyUsage")? {
                if usage != "ENCRYPT_DECRYPT" {
                    return Err(validation(format!(
                        "KeyUsage {usage} is not supported for SYMMETRIC_DEFAULT keys"
                    )));
                }
            }
            let r = kms.create_key(
                region,
                text(input, "Description")?.unwrap_or(""),
                tags(input),
                ctx.now,
            )?;
            json!({"KeyMetadata": metadata(ctx, &r)})
        }
        Operation::DescribeKey => {
            let r = kms.resolve(region, required(input, "KeyId")?)?;
            json!({"KeyMetadata": metadata(ctx, &r)})
        }
        Operation::ListKeys => {
            let keys: Vec<Value> = kms
                .list_keys(region)?
                .iter()
                .map(|r| json!({"KeyId": r.id, "KeyArn": r.arn}))
                .collect();
            json!({"Keys": keys, "Truncated": false})
        }
        Operation::CreateAlias => {
            kms.create_alias(
                region,
                required(input, "AliasName")?,
                required(input, "TargetKeyId")?,
            )?;
            json!({})
        }
        Operation::DeleteAlias => {
            kms.delete_alias(region, required(input, "AliasName")?)?;
            json!({})
        }
        Operation::ListAliases => {
            let filter = match text(input, "KeyId")? {
                Some(k) => Some(kms.resolve(region, k)?.id),
                None => None,
            };
            let aliases: Vec<Value> = kms
                .list_aliases(region)?
                .into_iter()
                .filter(|(_, target)| filter.as_ref().is_none_or(|f| f == target))
                .map(|(name, target)| {
                    json!({
                        "AliasName": name,
                        "AliasArn": format!("arn:aws:kms:{region}:{}:{name}", kms.account()),
                        "TargetKeyId": target,
                    })
                })
                .collect();
            json!({"Aliases": aliases, "Truncated": false})
        }
        Operation::Encrypt => {
            let plaintext = blob(input, "Plaintext")?;
            let (ciphertext, arn) = kms.encrypt(
                region,
                required(input, "KeyId")?,
                &plaintext,
                &context(input, "EncryptionContext")?,
            )?;
            json!({"CiphertextBlob": base64_encode(&ciphertext), "KeyId": arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        }
        Operation::Decrypt => {
            let ciphertext = blob(input, "CiphertextBlob")?;
            let (plaintext, arn) = kms.decrypt(
                region,
                &ciphertext,
                text(input, "KeyId")?,
                &context(input, "EncryptionContext")?,
            )?;
            json!({"Plaintext": base64_encode(&plaintext), "KeyId": arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        }
        Operation::GenerateDataKey | Operation::GenerateDataKeyWithoutPlaintext => {
            let bytes = match (
                input.get("NumberOfBytes").and_then(Value::as_u64),
                text(input, "KeySpec")?,
            ) {
                (Some(n), None) => n as usize,
                (None, Some("AES_256")) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(other)) => {
                    return Err(validation(format!("KeySpec {other} is not valid")))
                }
                (None, None) => {
                    return Err(validation(
                        "Please specify either number of bytes or key spec.",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(validation(
                        "Please specify either number of bytes or key spec, not both.",
                    ))
                }
            };
            let (plain, ciphertext, arn) = kms.generate_data_key(
                region,
                required(input, "KeyId")?,
                bytes,
                &context(input, "EncryptionContext")?,
            )?;
            if op == Operation::GenerateDataKey {
                json!({"CiphertextBlob": base64_encode(&ciphertext), "Plaintext": base64_encode(&plain), "KeyId": arn})
            } else {
                json!({"CiphertextBlob": base64_encode(&ciphertext), "KeyId": arn})
            }
        }
        Operation::ReEncrypt => {
            let ciphertext = blob(input, "CiphertextBlob")?;
            let source_ctx = context(input, "SourceEncryptionContext")?;
            let dest_ctx = context(input, "DestinationEncryptionContext")?;
            let dest = required(input, "DestinationKeyId")?;
            let source_arn = resource(Operation::Decrypt, ctx, &{
                let mut m = Map::new();
                m.insert(
                    "CiphertextBlob".into(),
                    input.get("CiphertextBlob").cloned().unwrap_or(Value::Null),
                );
                if let Some(k) = input.get("SourceKeyId") {
                    m.insert("KeyId".into(), k.clone());
                }
                m
            });
            let dest_arn = resource(Operation::Encrypt, ctx, &{
                let mut m = Map::new();
                m.insert("KeyId".into(), Value::String(dest.to_owned()));
                m
            });
            authorize_both(
                ctx,
                &[
                    ("kms:ReEncryptFrom", &source_arn),
                    ("kms:ReEncryptTo", &dest_arn),
                ],
            )?;
            let (plain, from) = kms.decrypt(
                region,
                &ciphertext,
                text(input, "SourceKeyId")?,
                &source_ctx,
            )?;
            let (new_blob, to) = kms.encrypt(region, dest, &plain, &dest_ctx)?;
            json!({"CiphertextBlob": base64_encode(&new_blob), "SourceKeyId": from, "KeyId": to,
                   "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        }
        Operation::EnableKey | Operation::DisableKey => {
            kms.set_enabled(
                region,
                required(input, "KeyId")?,
                op == Operation::EnableKey,
            )?;
            json!({})
        }
        Operation::EnableKeyRotation | Operation::DisableKeyRotation => {
            let period = input
                .get("RotationPeriodInDays")
                .and_then(Value::as_u64)
                .map(|d| d as u32);
            kms.set_rotation(
                region,
                required(input, "KeyId")?,
                op == Operation::EnableKeyRotation,
                period,
                ctx.now,
            )?;
            json!({})
        }
        Operation::GetKeyRotationStatus => {
            let r = kms.resolve(region, required(input, "KeyId")?)?;
            let mut v = json!({"KeyRotationEnabled": r.rotation_enabled, "KeyId": r.arn,
                               "RotationPeriodInDays": r.rotation_period_days});
            if let Some(next) = r.next_rotation {
                v["NextRotationDate"] = json!(next);
            }
            v
        }
        Operation::RotateKeyOnDemand => {
            let r = kms.rotate_now(region, required(input, "KeyId")?)?;
            json!({"KeyId": r.arn})
        }
        Operation::ScheduleKeyDeletion => {
            let days = input
                .get("PendingWindowInDays")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            let r = kms.schedule_deletion(region, required(input, "KeyId")?, days, ctx.now)?;
            json!({"KeyId": r.arn, "DeletionDate": r.deletion_date, "KeyState": r.state.as_str(), "PendingWindowInDays": days})
        }
        Operation::CancelKeyDeletion => {
            let r = kms.cancel_deletion(region, required(input, "KeyId")?)?;
            json!({"KeyId": r.arn})
        }
        Operation::TagResource => {
            kms.tag(region, required(input, "KeyId")?, tags(input))?;
            json!({})
        }
        Operation::UntagResource => {
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
            kms.untag(region, required(input, "KeyId")?, &keys)?;
            json!({})
        }
        Operation::ListResourceTags => {
            let r = kms.resolve(region, required(input, "KeyId")?)?;
            let tags: Vec<Value> = r
                .tags
                .iter()
                .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
                .collect();
            json!({"Tags": tags, "Truncated": false})
        }
        _ => {
            return Err(ApiError::new(
                ErrorKind::UnknownOperation,
                "Unknown operation exception",
            ))
        }
    };
    Ok(out)
}

/// `ReEncrypt` needs two permissions; the one evaluator decides each.
fn authorize_both(ctx: &Ctx<'_>, checks: &[(&str, &str)]) -> Result<(), ApiError> {
    let Some(caller) = ctx.caller else {
        return Err(ApiError::missing_authentication());
    };
    for (action, resource) in checks {
        let evaluation = ctx.iam.authorize(
            caller,
            AuthzRequest {
                action,
                resource,
                keys: ctx.keys.layer(),
                lazy_keys: &[],
            },
        );
        if evaluation.decision != Decision::Allow {
            return Err(ApiError::new(
                ErrorKind::AccessDenied,
                moat_policy::denial_message(&caller.principal.arn(), action, resource, &evaluation),
            ));
        }
    }
    Ok(())
}
