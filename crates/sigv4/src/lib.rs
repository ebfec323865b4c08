//! Verification of AWS Signature Version 4 (`AWS4-HMAC-SHA256`) requests.
//!
//! The edge hands this crate the parts of a received request; [`parse`] finds
//! the claimed credential (from the `Authorization` header or a presigned query
//! string) without any cryptography, so that the caller can look the access key
//! up, and [`verify`] then recomputes the signature with the secret and returns
//! a [`VerifiedRequest`], the only proof of authentication the rest of Moat
//! accepts. [`signature`] is the one signing primitive, with the verifier's
//! own key derivation: Moat's clients (the S3 object store, `moat-bench`)
//! sign with it.
//!
//! Architecture invariant: no I/O, no clock reads (the caller passes `now`), no
//! knowledge of services, accounts or wire protocols beyond SigV4 itself.

mod canonical;
mod time;

use std::fmt;

use http::HeaderMap;
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

pub use canonical::{canonical_query, canonical_uri};
pub use time::AmzDate;

/// The one algorithm this crate verifies.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's signing time may be from the server's clock (AWS: 15 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// The longest validity a presigned URL may claim (AWS: 7 days).
pub const MAX_PRESIGN_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// The parts of a received request that SigV4 covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as received on the wire (percent-encoded as the client sent it).
    pub path: &'a str,
    /// The raw query string without the leading `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// How the canonical URI is built from the received path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Remove `.` and `..` segments and repeated slashes (every service but S3).
    pub normalize: bool,
    /// URI-encode the already-encoded path once more, as the AWS SDKs do for
    /// every service but S3.
    pub double_encode: bool,
}

impl PathRules {
    /// What the AWS SDKs and CLI do for every non-S3 service.
    pub const AWS_SERVICES: PathRules = PathRules {
        normalize: true,
        double_encode: true,
    };
}

/// Where the signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLocation {
    Header,
    Query,
}

/// The credential scope: `AKID/YYYYMMDD/region/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl CredentialScope {
    /// `YYYYMMDD/region/service/aws4_request`.
    pub fn scope_string(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// A request's claimed signature, parsed but not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub location: AuthLocation,
    pub scope: CredentialScope,
    /// `SignedHeaders` as received, checked: lower-case names joined by
    /// `;` (see [`SignedRequest::signed_headers`]). Kept whole, it is the
    /// canonical request's list as it is.
    signed_headers: String,
    pub date: AmzDate,
    /// `X-Amz-Expires` of a presigned request, in seconds.
    pub expires: Option<i64>,
    pub security_token: Option<String>,
    signature: Vec<u8>,
}

impl SignedRequest {
    /// The names of the signed headers, in their order.
    pub fn signed_headers(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';')
    }
}

impl fmt::Debug for SignedRequest {
    // The signature is left out: it must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("location", &self.location)
            .field("scope", &self.scope)
            .field("signed_headers", &self.signed_headers)
            .field("date", &self.date)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Proof that a request carried a valid signature for `scope.access_key_id`.
///
/// Only [`verify`] makes one, so a handler holding one knows the caller proved
/// possession of the secret key. It borrows the request it proves: made
/// on every request, it copied nothing. Not comparable: it holds the
/// signature, which is only ever compared in constant time.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedRequest<'a> {
    signed: &'a SignedRequest,
}

impl<'a> VerifiedRequest<'a> {
    pub fn scope(&self) -> &'a CredentialScope {
        &self.signed.scope
    }
    pub fn access_key_id(&self) -> &'a str {
        &self.signed.scope.access_key_id
    }
    pub fn security_token(&self) -> Option<&'a str> {
        self.signed.security_token.as_deref()
    }
    pub fn location(&self) -> AuthLocation {
        self.signed.location
    }
}

/// Why a request failed SigV4. The messages are AWS's and carry no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The signature is absent or not well formed (`IncompleteSignature`).
    #[error("{0}")]
    Incomplete(String),
    /// The signing time is too far in the past.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        signed: AmzDate,
        earliest: AmzDate,
        now: AmzDate,
    },
    /// The signing time is too far in the future.
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent {
        signed: AmzDate,
        latest: AmzDate,
        now: AmzDate,
    },
    /// A presigned URL used after `X-Amz-Date + X-Amz-Expires`.
    #[error("Request has expired.")]
    PresignExpired,
    /// The scope's date is not the date of `X-Amz-Date`.
    #[error("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope}' != '{date}', from '{amz_date}'.")]
    ScopeDate {
        scope: String,
        date: String,
        amz_date: AmzDate,
    },
    /// `x-amz-content-sha256` does not hash the body that arrived.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadHash,
    /// The recomputed signature differs.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
}

impl Error {
    /// True for the errors AWS reports as an incomplete (malformed) signature.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Error::Incomplete(_))
    }
}

/// Finds the request's SigV4 signature, if it has one.
///
/// `Ok(None)` means the request carries no authentication at all (neither an
/// `Authorization` header nor `X-Amz-Algorithm` in the query).
pub fn parse(req: &RequestParts<'_>) -> Result<Option<SignedRequest>, Error> {
    let header = req.headers.get(http::header::AUTHORIZATION);
    let query_params = req.query.map(canonical::decode_query).unwrap_or_default();
    let query_algorithm = query_params.iter().find(|(k, _)| k == b"X-Amz-Algorithm");
    match (header, query_algorithm) {
        (Some(_), Some(_)) => Err(Error::Incomplete(
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
                .into(),
        )),
        (Some(value), None) => parse_header(value.as_bytes(), req.headers).map(Some),
        (None, Some(_)) => parse_query(&query_params).map(Some),
        (None, None) => Ok(None),
    }
}

/// Verifies `signed` against the request with the secret access key.
///
/// `now` is seconds since the Unix epoch. The signature is compared in constant time.
pub fn verify<'a>(
    req: &RequestParts<'_>,
    signed: &'a SignedRequest,
    secret_access_key: &[u8],
    now: i64,
    rules: PathRules,
) -> Result<VerifiedRequest<'a>, Error> {
    check_time(signed, now)?;
    let same_day = match signed.date.basic() {
        Some(basic) => basic[..8] == *signed.scope.date.as_bytes(),
        None => signed.scope.date == signed.date.date_stamp(),
    };
    if !same_day {
        return Err(Error::ScopeDate {
            scope: signed.scope.date.clone(),
            date: signed.date.date_stamp(),
            amz_date: signed.date,
        });
    }
    let payload_hash = payload_hash(req)?;
    let key = signing_key(secret_access_key, &signed.scope);

    let with_all_params = string_to_sign(req, signed, &payload_hash, rules, false);
    if signature_matches(&key, &with_all_params, &signed.signature) {
        return Ok(verified(signed));
    }
    // A presigning client may add the session token after signing (AWS's
    // "sts-header-after" case); the token still has to be valid for the key.
    if signed.location == AuthLocation::Query && signed.security_token.is_some() {
        let without_token = string_to_sign(req, signed, &payload_hash, rules, true);
        if signature_matches(&key, &without_token, &signed.signature) {
            return Ok(verified(signed));
        }
    }
    Err(Error::Mismatch)
}

/// The canonical request for `signed`, as the client must have built it.
///
/// Exposed so that tests can compare it with AWS's expected text.
pub fn canonical_request(
    req: &RequestParts<'_>,
    signed: &SignedRequest,
    rules: PathRules,
) -> Result<String, Error> {
    let payload_hash = payload_hash(req)?;
    Ok(build_canonical_request(
        req,
        signed,
        &payload_hash,
        rules,
        false,
    ))
}

fn verified(signed: &SignedRequest) -> VerifiedRequest<'_> {
    VerifiedRequest { signed }
}

fn check_time(signed: &SignedRequest, now: i64) -> Result<(), Error> {
    let signed_at = signed.date.unix_seconds();
    if signed_at > now + MAX_CLOCK_SKEW_SECS {
        return Err(Error::NotYetCurrent {
            signed: signed.date,
            latest: AmzDate::from_unix_seconds(now + MAX_CLOCK_SKEW_SECS),
            now: AmzDate::from_unix_seconds(now),
        });
    }
    match signed.expires {
        Some(expires) => {
            if now > signed_at + expires {
                return Err(Error::PresignExpired);
            }
        }
        None => {
            if signed_at < now - MAX_CLOCK_SKEW_SECS {
                return Err(Error::Expired {
                    signed: signed.date,
                    earliest: AmzDate::from_unix_seconds(now - MAX_CLOCK_SKEW_SECS),
                    now: AmzDate::from_unix_seconds(now),
                });
            }
        }
    }
    Ok(())
}

fn payload_hash(req: &RequestParts<'_>) -> Result<String, Error> {
    let computed = hex(digest::digest(&digest::SHA256, req.body).as_ref());
    match req.headers.get("x-amz-content-sha256") {
        None => Ok(computed),
        Some(claimed) => {
            // Outside S3 the body is always signed, so the claimed hash must be the real one.
            if claimed.as_bytes().eq_ignore_ascii_case(computed.as_bytes()) {
                Ok(String::from_utf8_lossy(claimed.as_bytes()).into_owned())
            } else {
                Err(Error::PayloadHash)
            }
        }
    }
}

fn string_to_sign(
    req: &RequestParts<'_>,
    signed: &SignedRequest,
    payload_hash: &str,
    rules: PathRules,
    omit_query_token: bool,
) -> String {
    let canonical = build_canonical_request(req, signed, payload_hash, rules, omit_query_token);
    let hashed = digest::digest(&digest::SHA256, canonical.as_bytes());
    // Pushed piece by piece: through `format!` this was a fifth of the
    // signature check.
    let scope = &signed.scope;
    let mut out = String::with_capacity(
        ALGORITHM.len() + scope.date.len() + scope.region.len() + scope.service.len() + 100,
    );
    out.push_str(ALGORITHM);
    out.push('\n');
    signed.date.push_basic(&mut out);
    out.push('\n');
    for part in [&scope.date, &scope.region, &scope.service] {
        out.push_str(part);
        out.push('/');
    }
    out.push_str("aws4_request\n");
    push_hex(&mut out, hashed.as_ref());
    out
}

fn build_canonical_request(
    req: &RequestParts<'_>,
    signed: &SignedRequest,
    payload_hash: &str,
    rules: PathRules,
    omit_query_token: bool,
) -> String {
    let uri = canonical_uri(req.path, rules);
    let query = canonical_query(req.query.unwrap_or(""), |name| {
        name == b"X-Amz-Signature" || (omit_query_token && name == b"X-Amz-Security-Token")
    });
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&uri);
    out.push('\n');
    out.push_str(&query);
    out.push('\n');
    for name in signed.signed_headers() {
        out.push_str(name);
        out.push(':');
        canonical::push_header_value(&mut out, req.headers, name);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.signed_headers);
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// The derived key of `secret` for `scope`, from a small cache: a key
/// signs requests all day in one region and service, and deriving it takes
/// five HMACs. Entries are found by a digest of the secret and the scope,
/// so no secret is a map key.
fn signing_key(secret: &[u8], scope: &CredentialScope) -> hmac::Key {
    type Derived = std::collections::HashMap<[u8; 32], hmac::Key>;
    static DERIVED: std::sync::OnceLock<std::sync::Mutex<Derived>> = std::sync::OnceLock::new();
    const MOST: usize = 1024;
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [
        secret,
        scope.date.as_bytes(),
        scope.region.as_bytes(),
        scope.service.as_bytes(),
    ] {
        // Lengths first, so that no two different inputs run together.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    let cache = DERIVED.get_or_init(Default::default);
    if let Some(key) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return key.clone();
    }
    let key = derive_signing_key(secret, scope);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MOST {
        cache.clear();
    }
    cache.insert(id, key.clone());
    key
}

fn derive_signing_key(secret: &[u8], scope: &CredentialScope) -> hmac::Key {
    let mut k_secret = Vec::with_capacity(secret.len() + 4);
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret);
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, &k_secret);
    for part in [
        scope.date.as_bytes(),
        scope.region.as_bytes(),
        scope.service.as_bytes(),
        b"aws4_request",
    ] {
        let tag = hmac::sign(&key, part);
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

/// The hex signature of `string_to_sign` under `secret` for `scope`: what a
/// client puts in its `Authorization` header.
pub fn signature(secret: &[u8], scope: &CredentialScope, string_to_sign: &str) -> String {
    hex(hmac::sign(&signing_key(secret, scope), string_to_sign.as_bytes()).as_ref())
}

fn signature_matches(key: &hmac::Key, string_to_sign: &str, claimed: &[u8]) -> bool {
    let tag = hmac::sign(key, string_to_sign.as_bytes());
    tag.as_ref().ct_eq(claimed).into()
}

fn parse_header(value: &[u8], headers: &HeaderMap) -> Result<SignedRequest, Error> {
    let value = std::str::from_utf8(value)
        .map_err(|_| Error::Incomplete("Authorization header is not valid text.".into()))?;
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'.",
            truncate(algorithm, 64)
        )));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for component in rest.split(',') {
        let component = component.trim();
        if component.is_empty() {
            continue;
        }
        let Some((name, val)) = component.split_once('=') else {
            return Err(Error::Incomplete(
                "Authorization header components must be of the form name=value.".into(),
            ));
        };
        match name.trim() {
            "Credential" => credential = Some(val.trim()),
            "SignedHeaders" => signed_headers = Some(val.trim()),
            "Signature" => signature = Some(val.trim()),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    if credential.is_none() {
        missing.push("Authorization header requires 'Credential' parameter.");
    }
    if signature.is_none() {
        missing.push("Authorization header requires 'Signature' parameter.");
    }
    if signed_headers.is_none() {
        missing.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    let date = headers.get("x-amz-date");
    if date.is_none() {
        missing.push(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    }
    if !missing.is_empty() {
        return Err(Error::Incomplete(missing.join(" ")));
    }
    let date = date.map(|d| d.as_bytes()).unwrap_or_default();
    let security_token = headers
        .get("x-amz-security-token")
        .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned());
    build(
        AuthLocation::Header,
        credential.unwrap_or_default().as_bytes(),
        signed_headers.unwrap_or_default().as_bytes(),
        signature.unwrap_or_default().as_bytes(),
        date,
        None,
        security_token,
    )
}

fn parse_query(params: &[(Vec<u8>, Vec<u8>)]) -> Result<SignedRequest, Error> {
    let get = |name: &[u8]| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    let algorithm = get(b"X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM.as_bytes() {
        return Err(Error::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'.",
            truncate(&String::from_utf8_lossy(algorithm), 64)
        )));
    }
    let mut missing = Vec::new();
    for name in [
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(name.as_bytes()).is_none() {
            missing.push(format!(
                "AWS query-string parameters must include '{name}'."
            ));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Incomplete(missing.join(" ")));
    }
    let expires = match get(b"X-Amz-Expires") {
        None => None,
        Some(raw) => {
            let secs = std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|s| (0..=MAX_PRESIGN_EXPIRES_SECS).contains(s))
                .ok_or_else(|| {
                    Error::Incomplete(format!(
                        "X-Amz-Expires must be a whole number of seconds from 0 to {MAX_PRESIGN_EXPIRES_SECS}."
                    ))
                })?;
            Some(secs)
        }
    };
    let security_token =
        get(b"X-Amz-Security-Token").map(|t| String::from_utf8_lossy(t).into_owned());
    build(
        AuthLocation::Query,
        get(b"X-Amz-Credential").unwrap_or_default(),
        get(b"X-Amz-SignedHeaders").unwrap_or_default(),
        get(b"X-Amz-Signature").unwrap_or_default(),
        get(b"X-Amz-Date").unwrap_or_default(),
        expires,
        security_token,
    )
}

fn build(
    location: AuthLocation,
    credential: &[u8],
    signed_headers: &[u8],
    signature: &[u8],
    date: &[u8],
    expires: Option<i64>,
    security_token: Option<String>,
) -> Result<SignedRequest, Error> {
    let scope = parse_scope(credential)?;
    let signed_headers = std::str::from_utf8(signed_headers)
        .ok()
        .filter(|names| {
            names.split(';').all(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
            })
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Incomplete(
                "SignedHeaders must be lower-case header names separated by ';'.".into(),
            )
        })?;
    if !signed_headers.split(';').any(|h| h == "host") {
        return Err(Error::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let signature = decode_hex(signature)
        .filter(|s| s.len() == 32)
        .ok_or_else(|| Error::Incomplete("Signature must be 64 hexadecimal characters.".into()))?;
    let date = std::str::from_utf8(date)
        .ok()
        .and_then(AmzDate::parse)
        .ok_or_else(|| {
            Error::Incomplete(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\".".into(),
            )
        })?;
    Ok(SignedRequest {
        location,
        scope,
        signed_headers,
        date,
        expires,
        security_token,
        signature,
    })
}

fn parse_scope(credential: &[u8]) -> Result<CredentialScope, Error> {
    let bad = || {
        Error::Incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term.".into(),
        )
    };
    let text = std::str::from_utf8(credential).map_err(|_| bad())?;
    let mut parts = text.split('/');
    let (Some(key), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    if key.is_empty() || region.is_empty() || service.is_empty() {
        return Err(bad());
    }
    if terminator != "aws4_request" {
        return Err(Error::Incomplete(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            truncate(terminator, 64)
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Incomplete(
            "Credential scope date must be in the format yyyyMMdd.".into(),
        ));
    }
    Ok(CredentialScope {
        access_key_id: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 2);
    for pair in text.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some(out)
}
