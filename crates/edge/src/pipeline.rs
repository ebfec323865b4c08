//! One request's path: read -> route -> authenticate (SigV4) -> resolve the
//! operation -> authorise (the IAM evaluator) -> dispatch -> encode -> audit.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, request, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;

use moat_iam::{AuthzRequest, Caller, CredentialError, Iam, LazyKeys};
use moat_policy::{ContextKeys, Decision};
use moat_sigv4::{AmzDate, PathRules, RequestParts};
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::{self, JwksSource};
use crate::audit::{AuditLog, AuditRecord};
use crate::codec::{self, Body, QueryParams};
use crate::error::{ApiError, ErrorKind, Outcome};
use crate::metrics::Metrics;
use crate::services::{Authorization, Operation, Service};

/// The path of the unauthenticated health check on the API port.
pub const HEALTH_PATH: &str = "/_moat/health";

/// Limits and settings of the API pipeline.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The regions this deployment serves; a signature scoped to another is refused.
    pub regions: Vec<String>,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a client may take to send its body.
    pub body_read_timeout: Duration,
}

/// The services the edge routes to.
pub struct Services {
    pub iam: Arc<Iam>,
    pub kms: Arc<moat_kms::Kms>,
    pub tables: Arc<moat_dynamodb::tables::Tables>,
    pub jwks: Arc<dyn JwksSource>,
}

/// Everything a request needs, shared by all connections.
pub struct Edge {
    config: EdgeConfig,
    iam: Arc<Iam>,
    kms: Arc<moat_kms::Kms>,
    tables: Arc<moat_dynamodb::tables::Tables>,
    jwks: Arc<dyn JwksSource>,
    audit: AuditLog,
    metrics: Metrics,
    rng: SystemRandom,
}

/// What is known about a request so far; it becomes the audit record.
#[derive(Default)]
struct Trail {
    service: Option<Service>,
    operation_name: Option<String>,
    operation: Option<Operation>,
    caller: Option<Caller>,
    access_key_id: Option<String>,
    resource: Option<String>,
    /// The policy statement that decided authorisation, when one did.
    decided_by: Option<String>,
}

impl Edge {
    pub fn new(config: EdgeConfig, services: Services, audit: AuditLog) -> Edge {
        let Services {
            iam,
            kms,
            tables,
            jwks,
        } = services;
        Edge {
            config,
            iam,
            kms,
            tables,
            jwks,
            audit,
            metrics: Metrics::default(),
            rng: SystemRandom::new(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Answers one HTTP request. Never fails: every error becomes an AWS error response.
    /// `tls` says whether the request came over TLS (`aws:SecureTransport`).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.new_request_id();
        let (head, body) = req.into_parts();
        let mut trail = Trail::default();

        let (response, outcome, error_code) =
            if head.method == Method::GET && head.uri.path() == HEALTH_PATH {
                trail.operation_name = Some("Health".into());
                let body = b"{\"status\":\"ok\"}".to_vec();
                let resp = codec::respond(StatusCode::OK, "application/json", body, &request_id);
                (resp, Outcome::Allowed, None)
            } else {
                match self
                    .process(&head, body, &mut trail, &request_id, remote, tls)
                    .await
                {
                    Ok(resp) => (resp, Outcome::Allowed, None),
                    Err(err) => {
                        let mut resp = codec::error_response(trail.service, &err, &request_id);
                        if matches!(
                            err.kind,
                            ErrorKind::RequestEntityTooLarge | ErrorKind::RequestTimeout
                        ) {
                            // The unread rest of the body would be taken for the next request.
                            resp.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        let protocol = trail.service.map(Service::protocol);
                        let (_, code) =
                            err.wire(protocol.unwrap_or(crate::services::Protocol::AwsQuery));
                        (resp, err.outcome(), Some(code.to_owned()))
                    }
                }
            };
        let status = response.status();
        self.metrics.observe(
            trail
                .service
                .map(Service::signing_name)
                .unwrap_or("unknown"),
            trail.operation.map(Operation::name).unwrap_or(
                if trail.operation_name.as_deref() == Some("Health") {
                    "Health"
                } else {
                    "unknown"
                },
            ),
            outcome.as_str(),
            started.elapsed(),
        );
        let principal = trail.caller.as_ref().map(|c| c.principal.arn());
        let web_identity = trail
            .caller
            .as_ref()
            .and_then(|c| self.iam.web_identity_of(c));
        let user_agent = head
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        self.audit
            .record(&AuditRecord {
                time: SystemTime::now(),
                request_id: &request_id,
                source: remote,
                principal: principal.as_deref(),
                web_identity: web_identity.as_deref(),
                access_key_id: trail.access_key_id.as_deref(),
                service: trail.service.map(Service::signing_name),
                operation: trail.operation_name.as_deref(),
                resource: trail.resource.as_deref(),
                decided_by: trail.decided_by.as_deref(),
                outcome: outcome.as_str(),
                status: status.as_u16(),
                error_code: error_code.as_deref(),
                user_agent: user_agent.as_deref().map(|ua| truncated(ua, 256)),
            })
            .await;
        response
    }

    /// Audits what reached the TLS port as plain HTTP, then builds the answer.
    pub async fn plaintext_refusal(&self, remote: SocketAddr) -> Vec<u8> {
        let request_id = self
            .record_refusal(remote, 400, "HttpRequestOnHttpsPort")
            .await;
        let message = "This port speaks HTTPS only: send the request over TLS (https://).\n";
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nx-amzn-RequestId: {request_id}\r\nConnection: close\r\n\r\n{message}",
            message.len()
        )
        .into_bytes()
    }

    /// Audits a request refused below the API (bad HTTP, an oversized head, a
    /// slow client), which HTTP itself answered. Returns the request id used.
    pub async fn record_refusal(
        &self,
        remote: SocketAddr,
        status: u16,
        error_code: &str,
    ) -> String {
        let request_id = self.new_request_id();
        self.metrics.observe(
            "unknown",
            "unknown",
            Outcome::Malformed.as_str(),
            Duration::ZERO,
        );
        self.audit
            .record(&AuditRecord {
                time: SystemTime::now(),
                request_id: &request_id,
                source: remote,
                principal: None,
                web_identity: None,
                access_key_id: None,
                service: None,
                operation: None,
                resource: None,
                decided_by: None,
                outcome: Outcome::Malformed.as_str(),
                status,
                error_code: Some(error_code),
                user_agent: None,
            })
            .await;
        request_id
    }

    async fn process(
        &self,
        head: &request::Parts,
        body: Incoming,
        trail: &mut Trail,
        request_id: &str,
        remote: SocketAddr,
        tls: bool,
    ) -> Result<Response<Body>, ApiError> {
        let target = head
            .headers
            .get("x-amz-target")
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        // The service an unsigned or badly signed request was meant for, so that
        // even its error comes in the right format.
        trail.service = service_hint(target.as_deref(), &QueryParams::default());

        let body = self.read_body(head, body).await?;
        let params = match target {
            Some(_) => QueryParams::default(),
            None => {
                let mut params = QueryParams::decode(head.uri.query().unwrap_or("").as_bytes());
                if is_form(head) {
                    params.extend(QueryParams::decode(&body));
                }
                trail.service = service_hint(None, &params);
                params
            }
        };

        // Authentication: SigV4 is the only way in.
        let parts = RequestParts {
            method: head.method.as_str(),
            path: head.uri.path(),
            query: head.uri.query(),
            headers: &head.headers,
            body: &body,
        };
        let signed = moat_sigv4::parse(&parts)?;
        if let Some(signed) = &signed {
            trail.access_key_id = Some(truncate(&signed.scope.access_key_id, 128));
            let service = Service::from_signing_name(&signed.scope.service).ok_or_else(|| {
                let expected = trail.service.map(Service::signing_name).unwrap_or("sts");
                ApiError::new(
                    ErrorKind::SignatureDoesNotMatch,
                    format!("Credential should be scoped to correct service: '{expected}'. "),
                )
            })?;
            trail.service = Some(service);
        }
        let Some(service) = trail.service else {
            return Err(ApiError::missing_authentication());
        };

        let name = operation_name(service, target.as_deref(), &params)?;
        trail.operation_name = Some(truncate(&name, 128));
        let operation = Operation::resolve(service, &name);
        trail.operation = operation;

        let now = unix_now();
        // The caller lives in the trail (the audit line names it); what
        // follows borrows it from there.
        trail.caller = match &signed {
            None if operation.is_some_and(Operation::allows_anonymous) => None,
            None => return Err(ApiError::missing_authentication()),
            Some(signed) => {
                if !self.config.regions.contains(&signed.scope.region) {
                    return Err(ApiError::new(
                        ErrorKind::SignatureDoesNotMatch,
                        "Credential should be scoped to a valid region. ",
                    ));
                }
                let (secret, caller) = self
                    .iam
                    .resolve_key(
                        &signed.scope.access_key_id,
                        signed.security_token.as_deref(),
                        now,
                    )
                    .map_err(|e| match e {
                        CredentialError::Expired => ApiError::new(
                            ErrorKind::ExpiredToken,
                            "The security token included in the request is expired",
                        ),
                        _ => ApiError::invalid_client_token(),
                    })?;
                moat_sigv4::verify(
                    &parts,
                    signed,
                    secret.expose().as_bytes(),
                    now,
                    PathRules::AWS_SERVICES,
                )?;
                Some(caller)
            }
        };
        let caller = &trail.caller;

        let Some(operation) = operation else {
            let message = match service.api_version() {
                Some(version) if !service.protocol().is_json() => format!(
                    "Could not find operation {} for version {}",
                    truncate(&name, 128),
                    params.get("Version").unwrap_or(version)
                ),
                _ => "Unknown operation exception".to_owned(),
            };
            return Err(ApiError::new(ErrorKind::UnknownOperation, message));
        };

        // The request-level condition keys every policy may test, built
        // when a decision first needs them.
        let keys = api::RequestKeys::new(
            remote.ip(),
            now,
            tls,
            signed.as_ref().map(|s| s.scope.region.as_str()),
            head.headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        );

        let region = match (&signed, self.config.regions.first()) {
            (Some(signed), _) => signed.scope.region.as_str(),
            (None, Some(first)) => first.as_str(),
            (None, None) => "",
        };
        let json_input = if service.protocol().is_json() {
            codec::decode_json_object(&body)?
        } else {
            serde_json::Map::new()
        };
        let ctx = api::Ctx {
            iam: &self.iam,
            kms: &self.kms,
            region,
            caller: caller.as_ref(),
            params: &params,
            now,
            rng: &self.rng,
            keys: &keys,
            jwks: self.jwks.as_ref(),
        };
        trail.resource = match service {
            Service::Iam => Some(api::iam::resource(operation, &ctx, &self.iam.read())),
            Service::Sts => ctx.optional("RoleArn").map(str::to_owned),
            Service::Kms => Some(api::kms::resource(operation, &ctx, &json_input)),
            Service::DynamoDb => Some(api::dynamodb::resource(operation, &ctx, &json_input)),
            _ => None,
        };

        // Authorisation: the one evaluator decides, never the handler.
        if let (Authorization::Action(action), Some(caller)) =
            (operation.authorization(), caller.as_ref())
        {
            let resource = trail.resource.clone().unwrap_or_else(|| "*".to_owned());
            // The request's keys and the service's own, worked out only for
            // callers whose policies may read them.
            let request_keys = |into: &mut ContextKeys| into.set_base(keys.shared().clone());
            let service_keys = |into: &mut ContextKeys| {
                if service == Service::DynamoDb {
                    api::dynamodb::add_condition_keys(
                        operation,
                        &ctx,
                        &self.tables,
                        &json_input,
                        into,
                    );
                }
            };
            let lazy_keys = [
                LazyKeys {
                    prefix: "aws:",
                    add: &request_keys,
                },
                LazyKeys {
                    prefix: moat_iam::service_prefix(action),
                    add: &service_keys,
                },
            ];
            // Built again only to explain a denial.
            let request = || AuthzRequest {
                action,
                resource: &resource,
                keys: ContextKeys::new(),
                lazy_keys: &lazy_keys,
            };
            let evaluation = self.iam.authorize(caller, request());
            trail.decided_by = evaluation.deciding.as_ref().map(|d| match &d.sid {
                Some(sid) => format!("{} (Sid {sid})", d.source),
                None => format!("{} (statement {})", d.source, d.index + 1),
            });
            if evaluation.decision == Decision::ImplicitDeny {
                // The audit line names the condition that failed, where one did.
                trail.decided_by = self.iam.explain_denial(caller, request());
            }
            if evaluation.decision != Decision::Allow {
                return Err(ApiError::new(
                    ErrorKind::AccessDenied,
                    moat_policy::denial_message(
                        &caller.principal.arn(),
                        action,
                        &resource,
                        &evaluation,
                    ),
                ));
            }
        }

        let result = match service {
            Service::Sts => api::sts::handle(operation, &ctx)?,
            Service::Iam => api::iam::handle(operation, &ctx)?,
            Service::Kms => {
                let value = api::kms::handle(operation, &ctx, &json_input)?;
                return Ok(codec::json_response(service.protocol(), &value, request_id));
            }
            Service::DynamoDb => {
                // A single-item write or a BatchWriteItem waits for its
                // table's writer and group commit as a task. Other writes
                // block on their store (fsync, a lock held by a
                // transaction): on the multi-threaded runtime the worker's
                // other tasks move elsewhere meanwhile. Quick reads
                // (`Operation::is_quick_read`) run in place.
                let run = || api::dynamodb::handle(operation, &ctx, &self.tables, &json_input);
                let body = if let Some(write) = api::dynamodb::ItemWrite::of(operation) {
                    api::dynamodb::write_item(write, &ctx, &self.tables, &json_input).await?
                } else if !operation.is_quick_read() && api::dynamodb::multi_thread() {
                    tokio::task::block_in_place(run)?
                } else {
                    run()?
                };
                return Ok(codec::json_body_response(
                    service.protocol(),
                    body,
                    request_id,
                ));
            }
            _ => {
                return Err(ApiError::new(
                    ErrorKind::UnknownOperation,
                    "Unknown operation exception",
                ))
            }
        };
        Ok(codec::query_response(
            service,
            operation.name(),
            &result,
            request_id,
        ))
    }

    async fn read_body(&self, head: &request::Parts, body: Incoming) -> Result<Bytes, ApiError> {
        let too_large = || {
            ApiError::new(
                ErrorKind::RequestEntityTooLarge,
                format!(
                    "Request body is larger than the limit of {} bytes.",
                    self.config.max_body_bytes
                ),
            )
        };
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.max_body_bytes as u64) {
            return Err(too_large());
        }
        let limited = Limited::new(body, self.config.max_body_bytes);
        match tokio::time::timeout(self.config.body_read_timeout, limited.collect()).await {
            Err(_) => Err(ApiError::new(
                ErrorKind::RequestTimeout,
                "The request body was not received within the time allowed.",
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(_)) => Err(ApiError::new(
                ErrorKind::Serialization,
                "The request body could not be read.",
            )),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    fn new_request_id(&self) -> String {
        let mut b = [0u8; 16];
        random_bytes(&self.rng, &mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        // 8-4-4-4-12 hex digits, joined without the formatting machinery
        // (it showed in the profile of a GetItem).
        let h = moat_sigv4::hex(&b);
        let mut id = String::with_capacity(36);
        for (i, part) in [&h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                id.push('-');
            }
            id.push_str(part);
        }
        id
    }
}

/// Fills `out` from a per-thread buffer of system randomness, refilled 4 KiB
/// at a time: one system call per 256 request ids instead of one each.
fn random_bytes(rng: &SystemRandom, out: &mut [u8]) {
    use std::cell::RefCell;
    const BUFFER: usize = 4096;
    thread_local! {
        static POOL: RefCell<(Box<[u8; BUFFER]>, usize)> = RefCell::new((Box::new([0; BUFFER]), BUFFER));
    }
    POOL.with(|pool| {
        let (buf, used) = &mut *pool.borrow_mut();
        if *used + out.len() > BUFFER {
            // The system random source does not fail on Linux; a zero id is
            // still unique enough to log.
            let _ = rng.fill(&mut buf[..]);
            *used = 0;
        }
        out.copy_from_slice(&buf[*used..*used + out.len()]);
        // Each byte is handed out once.
        buf[*used..*used + out.len()].fill(0);
        *used += out.len();
    });
}

/// The service a request names without a signature: the `X-Amz-Target`
/// prefix of JSON services, or the `Version` of query services.
fn service_hint(target: Option<&str>, params: &QueryParams) -> Option<Service> {
    match target {
        Some(t) => t
            .split_once('.')
            .and_then(|(prefix, _)| Service::from_target_prefix(prefix)),
        None => params.get("Version").and_then(Service::from_api_version),
    }
}

/// The operation a request names: `X-Amz-Target` for JSON services, `Action` for query services.
fn operation_name(
    service: Service,
    target: Option<&str>,
    params: &QueryParams,
) -> Result<String, ApiError> {
    if service.protocol().is_json() {
        let unknown = || ApiError::new(ErrorKind::UnknownOperation, "Unknown operation exception");
        let target = target.ok_or_else(unknown)?;
        let (prefix, name) = target.split_once('.').ok_or_else(unknown)?;
        if Some(prefix) != service.target_prefix() {
            return Err(unknown());
        }
        Ok(name.to_owned())
    } else {
        match params.get("Action") {
            Some(action) if !action.is_empty() => Ok(action.to_owned()),
            _ => Err(ApiError::new(
                ErrorKind::MissingAction,
                "The request is missing an action or a required parameter.",
            )),
        }
    }
}

fn is_form(head: &request::Parts) -> bool {
    match head.headers.get(header::CONTENT_TYPE) {
        Some(ct) => ct
            .as_bytes()
            .get(..33)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")),
        None => head.method == Method::POST,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `unix` as ISO 8601 UTC (`2015-08-30T12:36:00Z`). Every request needs
/// the current second's text twice (`aws:CurrentTime`, the audit line's time): each
/// thread keeps the last one it made.
pub(crate) fn iso8601_seconds(unix: i64) -> String {
    with_iso8601_seconds(unix, str::to_owned)
}

/// Calls `f` with `unix` as ISO 8601 UTC, kept per thread as above.
pub(crate) fn with_iso8601_seconds<R>(unix: i64, f: impl FnOnce(&str) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != unix {
            *last = (unix, AmzDate::from_unix_seconds(unix).to_iso8601_extended());
        }
        f(&last.1)
    })
}

fn truncate(s: &str, max: usize) -> String {
    truncated(s, max).to_owned()
}

/// The first `max` characters of `s`, sliced at once: collected a
/// character at a time, a user agent's 100-odd characters showed in a
/// GetItem's profile.
fn truncated(s: &str, max: usize) -> &str {
    let end = s.char_indices().nth(max).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: &[Service] = &[
        Service::Sts,
        Service::Iam,
        Service::DynamoDb,
        Service::Kms,
        Service::Rds,
        Service::Redshift,
        Service::ElastiCache,
        Service::Ec2,
        Service::Sns,
    ];

    #[test]
    fn routing_table() {
        let q = |text: &str| QueryParams::decode(text.as_bytes());
        let cases: &[(Option<&str>, &str, Option<Service>)] = &[
            (
                Some("DynamoDB_20120810.GetItem"),
                "",
                Some(Service::DynamoDb),
            ),
            (Some("TrentService.Encrypt"), "", Some(Service::Kms)),
            (Some("DynamoDB_20120810"), "", None),
            (Some("Nope.GetItem"), "Version=2011-06-15", None),
            (
                None,
                "Action=GetCallerIdentity&Version=2011-06-15",
                Some(Service::Sts),
            ),
            (
                None,
                "Action=ListUsers&Version=2010-05-08",
                Some(Service::Iam),
            ),
            (
                None,
                "Action=DescribeVpcs&Version=2016-11-15",
                Some(Service::Ec2),
            ),
            (None, "Action=GetCallerIdentity", None),
        ];
        for (target, params, want) in cases {
            assert_eq!(
                service_hint(*target, &q(params)),
                *want,
                "{target:?} {params}"
            );
        }
        let name = |s, t, p: &str| operation_name(s, t, &q(p)).map_err(|e| e.kind);
        assert_eq!(
            name(Service::DynamoDb, Some("DynamoDB_20120810.PutItem"), ""),
            Ok("PutItem".into())
        );
        assert_eq!(
            name(Service::DynamoDb, Some("TrentService.Encrypt"), ""),
            Err(ErrorKind::UnknownOperation)
        );
        assert_eq!(
            name(Service::DynamoDb, None, "Action=PutItem"),
            Err(ErrorKind::UnknownOperation)
        );
        assert_eq!(
            name(Service::Sts, None, "Action=GetCallerIdentity"),
            Ok("GetCallerIdentity".into())
        );
        assert_eq!(
            name(Service::Sts, None, "Action="),
            Err(ErrorKind::MissingAction)
        );
        assert_eq!(
            name(Service::Sts, Some("X.Y"), ""),
            Err(ErrorKind::MissingAction)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn routing_never_panics(target in proptest::option::of("\\PC{0,80}"),
                                form in proptest::collection::vec(any::<u8>(), 0..400),
                                which in 0usize..9) {
            let params = QueryParams::decode(&form);
            let _ = service_hint(target.as_deref(), &params);
            let _ = operation_name(ALL[which], target.as_deref(), &params);
        }

        #[test]
        fn json_decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = codec::decode_json_object(&body);
        }

        #[test]
        fn json_shaped_input_never_panics(body in "[\\[\\]{}\":,0-9a-z\\\\ ]{0,300}") {
            let _ = codec::decode_json_object(body.as_bytes());
        }
    }
}
