//! STS (awsQuery 2011-06-15): parameters in, XML out.

use std::collections::BTreeMap;

use moat_iam::{IamError, IamErrorKind, WebIdentity};
use moat_policy::Decision;
use moat_sts::jwt::{self, JwtError};
use moat_sts::{AssumeRoleInput, AssumedRole, Credentials};

use super::{iso8601, Ctx, Xml};
use crate::error::{ApiError, ErrorKind};
use crate::services::Operation;

/// Seconds of clock difference allowed for a web identity token's times.
const TOKEN_SKEW_SECS: i64 = 300;

pub fn handle(op: Operation, ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let mut x = Xml::new();
    match op {
        Operation::GetCallerIdentity => {
            let caller = ctx.caller.ok_or_else(ApiError::missing_authentication)?;
            let id = moat_sts::get_caller_identity(&caller.principal);
            x.text("Arn", &id.arn)
                .text("UserId", &id.user_id)
                .text("Account", &id.account);
        }
        Operation::GetSessionToken => {
            let caller = ctx.caller.ok_or_else(ApiError::missing_authentication)?;
            let creds = moat_sts::get_session_token(
                ctx.iam,
                caller,
                ctx.integer("DurationSeconds")?,
                ctx.now,
                ctx.rng,
            )?;
            credentials_xml(&mut x, &creds);
        }
        Operation::AssumeRole => {
            let caller = ctx.caller.ok_or_else(ApiError::missing_authentication)?;
            let assumed = moat_sts::assume_role(
                ctx.iam,
                caller,
                assume_input(ctx)?,
                ctx.keys.layer(),
                ctx.now,
                ctx.rng,
            )?;
            assumed_xml(&mut x, &assumed);
        }
        Operation::AssumeRoleWithWebIdentity => {
            let (assumed, subject, issuer, audience) = web_identity(ctx)?;
            assumed_xml(&mut x, &assumed);
            x.text("SubjectFromWebIdentityToken", &subject)
                .text("Provider", &issuer)
                .text("Audience", &audience);
        }
        _ => {
            return Err(ApiError::new(
                ErrorKind::UnknownOperation,
                "not an STS operation",
            ))
        }
    }
    Ok(x.finish())
}

fn assume_input(ctx: &Ctx<'_>) -> Result<AssumeRoleInput, ApiError> {
    let policy_arns = ctx
        .structs("PolicyArns")
        .into_iter()
        .filter_map(|fields| fields.into_iter().find(|(k, _)| k == "arn").map(|(_, v)| v))
        .collect();
    Ok(AssumeRoleInput {
        role_arn: ctx.required("RoleArn")?.to_owned(),
        session_name: ctx.required("RoleSessionName")?.to_owned(),
        duration: ctx.integer("DurationSeconds")?,
        external_id: ctx.optional("ExternalId").map(str::to_owned),
        policy: ctx.optional("Policy").map(str::to_owned),
        policy_arns,
        tags: ctx.tags(),
    })
}

fn credentials_xml(x: &mut Xml, c: &Credentials) {
    x.open("Credentials")
        .text("AccessKeyId", &c.access_key_id)
        .text("SecretAccessKey", &c.secret_access_key)
        .text("SessionToken", &c.session_token)
        .text("Expiration", &iso8601(c.expiration))
        .close("Credentials");
}

fn assumed_xml(x: &mut Xml, a: &AssumedRole) {
    credentials_xml(x, &a.credentials);
    x.open("AssumedRoleUser")
        .text("AssumedRoleId", &a.assumed_role_id)
        .text("Arn", &a.arn)
        .close("AssumedRoleUser")
        .text("PackedPolicySize", &a.packed_policy_size.to_string());
}

fn idp_error(kind: IamErrorKind, message: impl Into<String>) -> ApiError {
    IamError::new(kind, message).into()
}

/// `AssumeRoleWithWebIdentity`: verify the token against its registered
/// provider's keys, then let the role's trust policy decide with the claims.
fn web_identity(ctx: &Ctx<'_>) -> Result<(AssumedRole, String, String, String), ApiError> {
    let input = assume_input(ctx)?;
    moat_sts::validate_session_name(&input.session_name)?;
    let token = ctx.required("WebIdentityToken")?;
    let invalid = |m: &str| idp_error(IamErrorKind::InvalidIdentityToken, m);
    let decoded = jwt::decode(token).map_err(|e| invalid(&e.to_string()))?;
    let issuer = decoded.claims.iss.clone();
    let provider = {
        let s = ctx.iam.read();
        s.oidc_provider_for_issuer(&issuer).cloned()
    }
    .ok_or_else(|| {
        invalid(&format!(
            "No OpenIDConnect provider found in your account for {issuer}"
        ))
    })?;

    let kid_known = |keys: &serde_json::Value| {
        decoded.header.kid.as_ref().is_none_or(|kid| {
            keys.get("keys")
                .and_then(|k| k.as_array())
                .is_some_and(|a| {
                    a.iter()
                        .any(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid))
                })
        })
    };
    let fetch = |refresh| {
        ctx.jwks.key_set(&provider.url, refresh).map_err(|e| {
            idp_error(
                IamErrorKind::IdpCommunicationError,
                format!("Couldn't retrieve verification key from your identity provider: {e}"),
            )
        })
    };
    let mut keys = fetch(false)?;
    if !kid_known(&keys) {
        // A key the cache does not know: the provider may have rotated its keys.
        keys = fetch(true)?;
    }
    let claims = decoded
        .verify(&keys, ctx.now, TOKEN_SKEW_SECS)
        .map_err(|e| match e {
            JwtError::Expired => ApiError::new(
                ErrorKind::Service {
                    code: "ExpiredTokenException",
                    status: 400,
                },
                "Token expired: current date/time must be before the expiration date/time.",
            ),
            other => invalid(&other.to_string()),
        })?;

    let audience = claims
        .aud
        .iter()
        .chain(claims.azp.iter())
        .find(|a| provider.client_ids.contains(a))
        .cloned()
        .ok_or_else(|| invalid("Incorrect token audience"))?;

    let host = provider.key_prefix().to_owned();
    let mut key_values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    key_values.insert(format!("{host}:aud"), vec![audience.clone()]);
    key_values.insert(format!("{host}:sub"), vec![claims.sub.clone()]);
    key_values.insert(format!("{host}:iss"), vec![claims.iss.clone()]);
    let amr = claims.amr();
    if !amr.is_empty() {
        key_values.insert(format!("{host}:amr"), amr);
    }
    key_values.insert(format!("{host}:oaud"), claims.aud.clone());
    // The well-known providers' user-id keys, as AWS names them.
    match host.as_str() {
        "www.amazon.com" => {
            key_values.insert("www.amazon.com:user_id".into(), vec![claims.sub.clone()]);
            key_values.insert("www.amazon.com:app_id".into(), vec![audience.clone()]);
        }
        "graph.facebook.com" => {
            key_values.insert("graph.facebook.com:id".into(), vec![claims.sub.clone()]);
            key_values.insert("graph.facebook.com:app_id".into(), vec![audience.clone()]);
        }
        _ => {}
    }
    let mut condition_keys = ctx.keys.layer();
    for (k, v) in &key_values {
        condition_keys.set_multi(k, v.clone());
    }

    let denied = || {
        idp_error(
            IamErrorKind::AccessDenied,
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )
    };
    let role = {
        let s = ctx.iam.read();
        s.role_by_arn(&input.role_arn)
            .map_err(|_| denied())?
            .clone()
    };
    let evaluation = ctx
        .iam
        .authorize_web_identity(&role, &host, &provider.arn, &condition_keys);
    if evaluation.decision != Decision::Allow {
        return Err(denied());
    }
    let duration = input.duration.unwrap_or(3600);
    if !(900..=role.max_session_duration).contains(&duration) {
        return Err(IamError::validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        )
        .into());
    }
    let subject = claims.sub.clone();
    let web = WebIdentity {
        provider_arn: provider.arn.clone(),
        key_prefix: host,
        subject: subject.clone(),
        audience: audience.clone(),
        keys: key_values,
    };
    let assumed = moat_sts::issue_role_session(
        ctx.iam,
        &role.name,
        &role.id,
        input,
        duration,
        Some(web),
        ctx.now,
        ctx.rng,
    )?;
    Ok((assumed, subject, issuer, audience))
}
