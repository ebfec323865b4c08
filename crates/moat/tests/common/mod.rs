//! Shared test harness: the real `moat` binary on port 0 with a temporary
//! data directory, a raw TLS requester that signs with AWS's own SigV4
//! implementation (`aws-sigv4`), and helpers. Helpers that panic start with `must_`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("moat-test-{tag}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `moat serve`.
pub struct Moat {
    child: Option<Child>,
    pub endpoint: String,
    pub port: u16,
    pub metrics: Option<String>,
    pub data_dir: PathBuf,
    pub account: String,
}

/// Debian's libfaketime (scripts/test installs it).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

impl Moat {
    pub fn must_start(data_dir: &Path) -> Moat {
        Moat::must_start_with(data_dir, &[], &[])
    }

    /// Moat with its clock `shift` ahead, in libfaketime's `FAKETIME`
    /// syntax (`+2d`, `+9h`); its monotonic clock stays real.
    pub fn must_start_shifted(data_dir: &Path, shift: &str) -> Moat {
        Moat::must_start_with(
            data_dir,
            &[],
            &[
                ("LD_PRELOAD", LIBFAKETIME),
                ("FAKETIME", shift),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        )
    }

    /// A DynamoDB request as root, signed `offset` from now: for a Moat
    /// whose clock is shifted, which the SDK's clock would not match.
    pub fn dynamodb_at(&self, offset: Duration, operation: &str, body: &str) -> RawResponse {
        let (id, secret) = self.root_credentials();
        let signer = Signer {
            time: SystemTime::now() + offset,
            ..Signer::new(&id, &secret, "dynamodb")
        };
        RawRequest::dynamodb(self.port, operation, body)
            .signed(&signer)
            .send(self.port, &self.ca_pem())
    }

    // The child moves into the returned `Moat`, whose `Drop` kills and waits for it.
    #[allow(clippy::zombie_processes)]
    pub fn must_start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Moat {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moat"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env_remove("RUST_LOG")
            .env("MOAT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start moat");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        loop {
            let line = lines
                .next()
                .expect("moat exited before serving")
                .expect("read moat's output");
            if let Some(rest) = line.strip_prefix("moat: metrics at ") {
                metrics = Some(rest.trim_end_matches("/metrics").to_owned());
            }
            if let Some(rest) = line.strip_prefix("moat: serving ") {
                let endpoint = rest.split(' ').next().unwrap().to_owned();
                let account = rest
                    .split("account ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_owned();
                let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
                // Keep draining stdout so that moat never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Moat {
                    child: Some(child),
                    endpoint,
                    port,
                    metrics,
                    data_dir: data_dir.to_owned(),
                    account,
                };
            }
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("tls/ca.pem")).unwrap()
    }

    /// The root credentials from the `moat` profile Moat wrote.
    pub fn root_credentials(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.data_dir.join("aws/credentials")).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap()
                .to_owned()
        };
        (field("aws_access_key_id"), field("aws_secret_access_key"))
    }

    /// Sends SIGTERM and returns once Moat exits, with whether it exited cleanly.
    pub fn must_stop(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_exit(&mut child, Duration::from_secs(40))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The audit log's lines, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.data_dir.join("audit/audit.log")).unwrap_or_default();
        // The writer may be in the middle of a line: only whole lines count.
        let whole = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the audit log has a line that `matches` (the writer is
    /// asynchronous, and gathers records for a moment under load).
    pub fn must_find_audit_where(
        &self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        for _ in 0..100 {
            if let Some(line) = self.audit_lines().into_iter().find(|l| matches(l)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no audit line for {what}");
    }

    /// Waits until the audit log has a line for `request_id` (the writer is asynchronous).
    pub fn must_find_audit(&self, request_id: &str) -> serde_json::Value {
        self.must_find_audit_where(&format!("request {request_id}"), |l| {
            l["request_id"] == request_id
        })
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("moat did not exit within {limit:?} of SIGTERM");
}

/// A raw HTTP/1.1 request, signed or not, sent over its own TLS connection.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn request_id(&self) -> String {
        self.header("x-amzn-requestid")
            .expect("x-amzn-RequestId")
            .to_owned()
    }
    /// The `<Code>` of a query error, or the `__type` suffix of a JSON error.
    pub fn error_code(&self) -> String {
        if let Some(start) = self.body.find("<Code>") {
            let rest = &self.body[start + 6..];
            return rest[..rest.find("</Code>").unwrap()].to_owned();
        }
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON error");
        let t = v["__type"].as_str().unwrap();
        t.rsplit('#').next().unwrap().to_owned()
    }
}

impl RawRequest {
    /// An STS query request, `Action=GetCallerIdentity` in a form body.
    pub fn sts_get_caller_identity(port: u16) -> RawRequest {
        RawRequest {
            method: "POST".into(),
            target: "/".into(),
            headers: vec![
                ("host".into(), format!("127.0.0.1:{port}")),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
            ],
            body: b"Action=GetCallerIdentity&Version=2011-06-15".to_vec(),
        }
    }

    /// A DynamoDB JSON request.
    pub fn dynamodb(port: u16, operation: &str, body: &str) -> RawRequest {
        RawRequest {
            method: "POST".into(),
            target: "/".into(),
            headers: vec![
                ("host".into(), format!("127.0.0.1:{port}")),
                ("content-type".into(), "application/x-amz-json-1.0".into()),
                (
                    "x-amz-target".into(),
                    format!("DynamoDB_20120810.{operation}"),
                ),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// Signs with AWS's SigV4 implementation, in headers or (presigned) in the query.
    pub fn signed(mut self, key: &Signer) -> RawRequest {
        let creds = Credentials::new(
            &key.access_key_id,
            &key.secret,
            key.token.clone(),
            None,
            "test",
        );
        let identity: Identity = creds.into();
        let mut settings = SigningSettings::default();
        if let Some(expires) = key.presign_expires {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(expires);
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&key.region)
            .name(&key.service)
            .time(key.time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = format!("https://127.0.0.1{}", self.target);
        let headers = self.headers.clone();
        let signable = SignableRequest::new(
            &self.method,
            uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&self.body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let (new_headers, new_params) = instructions.into_parts();
        for h in new_headers {
            self.set_header(h.name(), h.value());
        }
        for (i, (k, v)) in new_params.into_iter().enumerate() {
            let sep = if i == 0 && !self.target.contains('?') {
                '?'
            } else {
                '&'
            };
            let v = percent_encode(&v);
            self.target.push_str(&format!("{sep}{k}={v}"));
        }
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }

    /// Sends over a fresh TLS connection that trusts only `ca_pem`.
    pub fn send(&self, port: u16, ca_pem: &[u8]) -> RawResponse {
        let mut tls = must_connect_tls(port, ca_pem);
        tls.write_all(&self.to_bytes()).unwrap();
        must_read_response(&mut tls)
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What to sign a request with.
#[derive(Clone)]
pub struct Signer {
    pub access_key_id: String,
    pub secret: String,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
    pub presign_expires: Option<Duration>,
    /// The session token of temporary credentials.
    pub token: Option<String>,
}

impl Signer {
    pub fn new(access_key_id: &str, secret: &str, service: &str) -> Signer {
        Signer {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            region: "us-east-1".into(),
            service: service.into(),
            time: SystemTime::now(),
            presign_expires: None,
            token: None,
        }
    }
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn client_config(
    ca_pem: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub fn must_connect_tls(port: u16, ca_pem: &[u8]) -> TlsStream {
    let config = client_config(ca_pem, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads one HTTP/1.1 response (the server closes after it: `connection: close`).
pub fn must_read_response(stream: &mut impl Read) -> RawResponse {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
        if let Some(resp) = parse_response(&raw) {
            return resp;
        }
    }
    parse_response(&raw)
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(&raw)))
}

fn parse_response(raw: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    if body.len() < len {
        return None;
    }
    Some(RawResponse {
        status,
        headers,
        body: body[..len].to_owned(),
    })
}

/// Every file under `dir`, recursively (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
