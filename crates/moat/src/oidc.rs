//! Fetching OpenID Connect providers' signing keys (JWKS) over HTTPS, with a
//! cache, or reading them from files for sites without a way out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use moat_edge::api::JwksSource;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long fetched keys are trusted before they are fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

pub struct Jwks {
    files: BTreeMap<String, PathBuf>,
    connector: Option<TlsConnector>,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
    runtime: tokio::runtime::Handle,
}

impl Jwks {
    /// `trust_pem`: the CAs trusted for providers' HTTPS (Debian's bundle by default).
    /// `files`: issuer URL -> JWKS file, used instead of fetching.
    pub fn new(trust_pem: Option<Vec<u8>>, files: BTreeMap<String, PathBuf>) -> Jwks {
        let connector = trust_pem.and_then(|pem| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return None;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(TlsConnector::from(Arc::new(config)))
        });
        Jwks {
            files: files
                .into_iter()
                .map(|(k, v)| (k.trim_end_matches('/').to_owned(), v))
                .collect(),
            connector,
            cache: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    async fn fetch(&self, issuer: &str) -> Result<Value, String> {
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let config = self.get_json(&discovery).await?;
        let jwks_uri = config
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the provider's configuration has no jwks_uri")?
            .to_owned();
        self.get_json(&jwks_uri).await
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let connector = self
            .connector
            .clone()
            .ok_or("no CA certificates to trust providers with")?;
        let rest = url
            .strip_prefix("https://")
            .ok_or("provider URLs must be https")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_matches(['[', ']']),
                p.parse::<u16>().map_err(|_| "bad port")?,
            ),
            _ => (authority, 443),
        };
        let request = async {
            let tcp = TcpStream::connect((host, port))
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .header(http::header::USER_AGENT, "moat")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("{url}: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| format!("{url} did not answer in time"))?
    }
}

impl JwksSource for Jwks {
    fn key_set(&self, issuer: &str, refresh: bool) -> Result<Value, String> {
        let issuer = issuer.trim_end_matches('/');
        if let Some(path) = self.files.get(issuer) {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            return serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
        if !refresh {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, keys)) = cache.get(issuer) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(keys.clone());
                }
            }
        }
        // The API handlers are synchronous; the fetch runs on the runtime while
        // this worker thread steps aside.
        let keys = tokio::task::block_in_place(|| self.runtime.block_on(self.fetch(issuer)))?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.to_owned(), (Instant::now(), keys.clone()));
        Ok(keys)
    }
}
