//! HTTP/1.1 keep-alive connections, plain or TLS, carrying signed DynamoDB
//! requests.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sign::{self, Credentials};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

struct Inner {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    tls: Option<tokio_rustls::TlsConnector>,
    region: String,
    creds: Credentials,
}

/// Where requests go, and as whom.
#[derive(Clone)]
pub struct Target(Arc<Inner>);

impl Target {
    /// `endpoint`: `http://host:port` or `https://host:port`; `ca_pem`: the
    /// CAs trusted for https.
    pub fn new(
        endpoint: &str,
        ca_pem: Option<&[u8]>,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> Result<Target, String> {
        let (https, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{endpoint}: not an http or https URL"));
        };
        let authority = rest.trim_end_matches('/').to_owned();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "a bad port")?),
            None => (authority.clone(), if https { 443 } else { 80 }),
        };
        let tls = if https {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let pem = match ca_pem {
                Some(p) => p.to_vec(),
                None => std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
            };
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Target(Arc::new(Inner {
            host,
            port,
            authority,
            tls,
            region: region.to_owned(),
            creds: Credentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: session_token.map(str::to_owned),
            },
        })))
    }

    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect((self.0.host.as_str(), self.0.port))
            .await
            .map_err(|e| format!("connect {}: {e}", self.0.authority))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.0.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.0.host.clone())
                    .map_err(|e| e.to_string())?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", self.0.authority))?,
                )
            }
        };
        Ok(Conn {
            target: self.clone(),
            stream,
            buf: Vec::with_capacity(16 * 1024),
            closed: false,
        })
    }
}

/// One kept-alive connection.
pub struct Conn {
    target: Target,
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    /// The server said `Connection: close`: the next call reconnects.
    closed: bool,
}

impl Conn {
    pub async fn reconnect(&self) -> Result<Conn, String> {
        self.target.connect().await
    }

    /// Sends one signed request; returns the status and body.
    pub async fn call(&mut self, operation: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        if self.closed {
            *self = self.target.connect().await?;
        }
        let t = &self.target.0;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signed = sign::headers(&t.creds, &t.region, &t.authority, operation, body, now);
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\n{signed}Content-Length: {}\r\n\r\n",
            t.authority,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.read_response().await
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            self.closed = true;
            return Err("the server closed the connection".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>), String> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("a malformed status line")?;
        let (mut length, mut chunked) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                self.closed |= value.eq_ignore_ascii_case("close");
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| "a malformed chunk")?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
            body
        } else if let Some(len) = length {
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect()
        } else {
            // No length: the body runs to the end of the connection.
            while self.fill().await.is_ok() {}
            self.closed = true;
            std::mem::take(&mut self.buf)
        };
        Ok((status, body))
    }
}
