//! The object store on an S3-compatible endpoint (AWS S3, MinIO, Ceph, moto):
//! path-style requests signed with SigV4, one connection per request over
//! plain HTTP or TLS. Only what the trait needs: PutObject, GetObject,
//! HeadObject, DeleteObject and ListObjectsV2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_sigv4::{hex, signature, AmzDate, CredentialScope};
use ring::digest::{digest, SHA256};

use crate::{ObjectError, ObjectStore};

/// Where and as whom.
#[derive(Clone)]
pub struct S3Config {
    /// `http://host:port` or `https://host[:port]`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Put before every key, e.g. `moat/` (may be empty).
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// CAs trusted for an https endpoint (PEM).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

pub struct S3Store {
    config: S3Config,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The largest response body read (a bound on memory).
const MAX_RESPONSE: usize = 512 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

fn remote(message: impl Into<String>) -> ObjectError {
    ObjectError::Remote(message.into())
}

/// SigV4's URI encoding: unreserved characters stay, the rest is %XX.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&amp;", "&")
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl S3Store {
    pub fn new(config: S3Config) -> Result<S3Store, ObjectError> {
        let (https, rest) = if let Some(r) = config.endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = config.endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(remote(
                "the S3 endpoint must start with http:// or https://",
            ));
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse()
                    .map_err(|_| remote(format!("bad port in {}", config.endpoint)))?,
            ),
            None => (authority.to_owned(), if https { 443 } else { 80 }),
        };
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            let pem = match &config.ca_pem {
                Some(p) => p.clone(),
                None => std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
            };
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| remote(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(client))
        } else {
            None
        };
        Ok(S3Store {
            config,
            host,
            port,
            tls,
        })
    }

    fn host_header(&self) -> String {
        let default = if self.tls.is_some() { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn object_path(&self, key: &str) -> String {
        format!(
            "/{}/{}",
            uri_encode(&self.config.bucket, false),
            uri_encode(&format!("{}{key}", self.config.prefix), true)
        )
    }

    /// One signed request; `path` is already URI-encoded.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ObjectError> {
        let mut query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let now = AmzDate::from_unix_seconds(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        )
        .to_string();
        let scope = CredentialScope {
            access_key_id: self.config.access_key_id.clone(),
            date: now[..8].to_owned(),
            region: self.config.region.clone(),
            service: "s3".into(),
        };
        let payload = hex(digest(&SHA256, body).as_ref());
        let host = self.host_header();
        let canonical = format!(
            "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{now}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
        );
        let scope_text = scope.scope_string();
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{now}\n{scope_text}\n{}",
            hex(digest(&SHA256, canonical.as_bytes()).as_ref())
        );
        let signature = signature(self.config.secret_access_key.as_bytes(), &scope, &to_sign);
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {now}\r\nx-amz-content-sha256: {payload}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={}/{scope_text}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.config.access_key_id,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let raw = self.exchange(&request)?;
        parse_response(&raw, method == "HEAD")
    }

    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, ObjectError> {
        let io = |e: std::io::Error| remote(format!("{}: {e}", self.config.endpoint));
        let stream = TcpStream::connect((self.host.as_str(), self.port)).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut out = Vec::new();
        let limit = MAX_RESPONSE as u64 + 64 * 1024;
        match &self.tls {
            None => {
                let mut stream = stream;
                stream.write_all(request).map_err(io)?;
                stream.take(limit).read_to_end(&mut out).map_err(io)?;
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| remote(e.to_string()))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| remote(e.to_string()))?;
                let mut tls = rustls::StreamOwned::new(conn, stream);
                tls.write_all(request).map_err(io)?;
                match tls.take(limit).read_to_end(&mut out) {
                    Ok(_) => {}
                    // Servers that close without close_notify: the body
                    // length decides whether anything is missing.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Ok(out)
    }

    fn check(&self, what: &str, response: Response) -> Result<Response, ObjectError> {
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        let body = String::from_utf8_lossy(&response.body);
        let code = xml_values(&body, "Code").first().copied().unwrap_or("");
        Err(remote(format!("{what}: HTTP {} {code}", response.status)))
    }

    /// Creates the bucket if it does not exist (for first use and tests).
    pub fn ensure_bucket(&self) -> Result<(), ObjectError> {
        let path = format!("/{}", uri_encode(&self.config.bucket, false));
        let response = self.send("PUT", &path, &[], b"")?;
        match response.status {
            200..=299 | 409 => Ok(()),
            _ => self.check("CreateBucket", response).map(|_| ()),
        }
    }
}

fn parse_response(raw: &[u8], head: bool) -> Result<Response, ObjectError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| remote("a truncated response"))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| remote("a malformed status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    if head {
        return Ok(Response {
            status,
            body: length
                .map(|l| l.to_string().into_bytes())
                .unwrap_or_default(),
        });
    }
    let body = if chunked {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| remote("a truncated chunk"))?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| remote("a malformed chunk"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            let chunk = rest
                .get(..size)
                .ok_or_else(|| remote("a truncated chunk"))?;
            body.extend_from_slice(chunk);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
        body
    } else {
        match length {
            Some(l) => rest
                .get(..l)
                .ok_or_else(|| remote("a truncated body"))?
                .to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body })
}

impl ObjectStore for S3Store {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ObjectError> {
        crate::check_key(key)?;
        let response = self.send("PUT", &self.object_path(key), &[], bytes)?;
        self.check("PutObject", response).map(|_| ())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        crate::check_key(key)?;
        let response = self.send("GET", &self.object_path(key), &[], b"")?;
        if response.status == 404 {
            return Ok(None);
        }
        Ok(Some(self.check("GetObject", response)?.body))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let full = format!("{}{prefix}", self.config.prefix);
        let path = format!("/{}", uri_encode(&self.config.bucket, false));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", full.as_str())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let response = self.send("GET", &path, &query, b"")?;
            let body = self.check("ListObjectsV2", response)?.body;
            let xml = String::from_utf8_lossy(&body);
            for key in xml_values(&xml, "Key") {
                let key = xml_unescape(key);
                if let Some(k) = key.strip_prefix(&self.config.prefix) {
                    out.push(k.to_owned());
                }
            }
            let truncated = xml_values(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_values(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        crate::check_key(key)?;
        let response = self.send("DELETE", &self.object_path(key), &[], b"")?;
        if response.status == 404 {
            return Ok(());
        }
        self.check("DeleteObject", response).map(|_| ())
    }

    fn size(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        crate::check_key(key)?;
        let response = self.send("HEAD", &self.object_path(key), &[], b"")?;
        if response.status == 404 {
            return Ok(None);
        }
        let body = self.check("HeadObject", response)?.body;
        Ok(String::from_utf8_lossy(&body).parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(xml_unescape("a&amp;lt;b"), "a&lt;b");
    }

    #[test]
    fn responses_with_length_or_chunks() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", false).is_err());
        assert!(parse_response(b"garbage", false).is_err());
    }
}
