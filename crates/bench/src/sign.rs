//! SigV4 for DynamoDB's JSON protocol, as the SDKs sign: `POST /` with the
//! content type, host, date and target headers signed, and the body hashed.
//! The key derivation and signature are `moat-sigv4`'s, the verifier's own.

use moat_sigv4::{hex, signature, AmzDate, CredentialScope};
use ring::digest::{digest, SHA256};

pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// The signed headers of one request (each line ending in CRLF).
pub fn headers(
    creds: &Credentials,
    region: &str,
    host: &str,
    operation: &str,
    body: &[u8],
    now_secs: u64,
) -> String {
    let date_time = AmzDate::from_unix_seconds(now_secs as i64).to_string();
    let scope = CredentialScope {
        access_key_id: creds.access_key_id.clone(),
        date: date_time[..8].to_owned(),
        region: region.to_owned(),
        service: "dynamodb".into(),
    };
    let target = format!("DynamoDB_20120810.{operation}");
    let payload = hex(digest(&SHA256, body).as_ref());
    let (token_canonical, token_name) = match &creds.session_token {
        Some(t) => (
            format!("x-amz-security-token:{t}\n"),
            ";x-amz-security-token",
        ),
        None => (String::new(), ""),
    };
    let signed = format!("content-type;host;x-amz-date{token_name};x-amz-target");
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/x-amz-json-1.0\nhost:{host}\nx-amz-date:{date_time}\n{token_canonical}x-amz-target:{target}\n\n{signed}\n{payload}"
    );
    let scope_text = scope.scope_string();
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope_text}\n{}",
        hex(digest(&SHA256, canonical.as_bytes()).as_ref())
    );
    let signature = signature(creds.secret_access_key.as_bytes(), &scope, &to_sign);
    let token_header = match &creds.session_token {
        Some(t) => format!("x-amz-security-token: {t}\r\n"),
        None => String::new(),
    };
    format!(
        "Content-Type: application/x-amz-json-1.0\r\nX-Amz-Date: {date_time}\r\nX-Amz-Target: {target}\r\n{token_header}Authorization: AWS4-HMAC-SHA256 Credential={}/{scope_text}, SignedHeaders={signed}, Signature={signature}\r\n",
        creds.access_key_id
    )
}
