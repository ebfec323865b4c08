//! First start and every start after: the data directory, the account and its
//! root credentials, the certificate authority and server certificate, and
//! the AWS CLI profile. Created once, reused after.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use moat_edge::audit::create_private_dir;
use moat_iam::{AccessKey, AccountId, Principal, Secret};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot create the TLS certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the system random source failed")]
    Random,
}

/// What the server needs from the data directory.
pub struct Bootstrap {
    pub account: AccountId,
    pub root_key: AccessKey,
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA clients must trust, when Moat issued the server certificate.
    pub ca_path: Option<PathBuf>,
}

/// Root credentials and the account id given by the environment (for CI).
#[derive(Debug, Default)]
pub struct RootOverride {
    pub account_id: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
}

impl RootOverride {
    pub fn from_env() -> RootOverride {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        RootOverride {
            account_id: var("MOAT_ACCOUNT_ID"),
            access_key_id: var("MOAT_ROOT_ACCESS_KEY_ID"),
            secret_access_key: var("MOAT_ROOT_SECRET_ACCESS_KEY").map(Secret::new),
        }
    }
}

/// The stored account and root key (`state/root.json`, 0600).
#[derive(Serialize, Deserialize)]
struct RootRecord {
    version: u32,
    account_id: String,
    access_key_id: String,
    secret_access_key: String,
}

/// Prepares the data directory and returns what the server runs with.
pub fn prepare(
    data_dir: &Path,
    tls_names: &[String],
    user_tls: Option<(&Path, &Path)>,
    overrides: RootOverride,
    secrets: &Secrets<'_>,
) -> Result<Bootstrap, InitError> {
    let rng = SystemRandom::new();
    let (account, root_key) =
        root_identity(secrets, &data_dir.join("state/root.json"), overrides, &rng)?;
    let (cert_chain_pem, key_pem, ca_path) = match user_tls {
        Some((cert, key)) => (read(cert)?, read(key)?, None),
        None => {
            let dir = data_dir.join("tls");
            private_dir(&dir)?;
            let (cert, key) = generated_tls(&dir, tls_names, secrets)?;
            (cert, key, Some(dir.join("ca.pem")))
        }
    };
    Ok(Bootstrap {
        account,
        root_key,
        cert_chain_pem,
        key_pem,
        ca_path,
    })
}

/// Moat's own secrets (the root key, TLS private keys), kept in the encrypted
/// system store. Files left by an older Moat are moved in and deleted.
pub struct Secrets<'a> {
    pub db: &'a moat_store::Db,
}

impl Secrets<'_> {
    const TREE: &'static str = "secrets";

    fn get(&self, name: &str, legacy_file: &Path) -> Result<Option<Vec<u8>>, InitError> {
        let store_err = |e: moat_store::StoreError| InitError::Invalid(e.to_string());
        if let Some(v) = self
            .db
            .get(Self::TREE, name.as_bytes())
            .map_err(store_err)?
        {
            return Ok(Some(v));
        }
        if legacy_file.exists() {
            let bytes = read(legacy_file)?;
            self.put(name, &bytes)?;
            let _ = fs::remove_file(legacy_file);
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), InitError> {
        self.db
            .put(Self::TREE, name.as_bytes(), bytes)
            .map_err(|e| InitError::Invalid(e.to_string()))
    }
}

fn root_identity(
    secrets: &Secrets<'_>,
    path: &Path,
    overrides: RootOverride,
    rng: &SystemRandom,
) -> Result<(AccountId, AccessKey), InitError> {
    let stored: Option<RootRecord> = if let Some(text) = secrets.get("root", path)? {
        Some(
            serde_json::from_slice(&text).map_err(|e| InitError::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            })?,
        )
    } else {
        None
    };
    let record = match stored {
        Some(r) => r,
        None => {
            let record = RootRecord {
                version: 1,
                account_id: generate_account_id(rng)?,
                access_key_id: moat_iam::generate_access_key_id(rng)
                    .map_err(|_| InitError::Random)?,
                secret_access_key: moat_iam::generate_secret_access_key(rng)
                    .map_err(|_| InitError::Random)?
                    .expose()
                    .to_owned(),
            };
            let json = serde_json::to_vec_pretty(&record)
                .map_err(|e| InitError::Invalid(e.to_string()))?;
            secrets.put("root", &json)?;
            record
        }
    };
    let account_text = overrides.account_id.unwrap_or(record.account_id);
    let account = AccountId::parse(&account_text).ok_or_else(|| {
        InitError::Invalid(format!(
            "the account id must be 12 digits, not '{account_text}'"
        ))
    })?;
    let (id, secret) = match (overrides.access_key_id, overrides.secret_access_key) {
        (Some(id), Some(secret)) => (id, secret),
        (None, None) => (record.access_key_id, Secret::new(record.secret_access_key)),
        _ => {
            return Err(InitError::Invalid(
                "MOAT_ROOT_ACCESS_KEY_ID and MOAT_ROOT_SECRET_ACCESS_KEY must be set together"
                    .into(),
            ))
        }
    };
    if id.len() < 16 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InitError::Invalid(
            "the root access key id must be 16 to 128 letters and digits".into(),
        ));
    }
    if secret.expose().len() < 16 {
        return Err(InitError::Invalid(
            "the root secret access key must be at least 16 characters".into(),
        ));
    }
    let key = AccessKey {
        id,
        secret,
        principal: Principal::Root {
            account: account.clone(),
        },
        active: true,
    };
    Ok((account, key))
}

fn generate_account_id(rng: &SystemRandom) -> Result<String, InitError> {
    let mut bytes = [0u8; 12];
    rng.fill(&mut bytes).map_err(|_| InitError::Random)?;
    // The first digit is never 0, so the id never looks shorter than it is.
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let d = if i == 0 { 1 + b % 9 } else { b % 10 };
            char::from(b'0' + d)
        })
        .collect())
}

/// The CA (kept) and the server certificate (re-issued when the names change).
fn generated_tls(
    dir: &Path,
    extra_names: &[String],
    secrets: &Secrets<'_>,
) -> Result<(Vec<u8>, Vec<u8>), InitError> {
    let ca_cert_path = dir.join("ca.pem");
    let stored_ca_key = secrets.get("tls/ca.key", &dir.join("ca.key"))?;
    let ca_key = if let (Some(pem), true) = (stored_ca_key, ca_cert_path.exists()) {
        KeyPair::from_pem(&String::from_utf8_lossy(&pem))?
    } else {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let (not_before, not_after) = validity(3650);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        secrets.put("tls/ca.key", key.serialize_pem().as_bytes())?;
        write_public(&ca_cert_path, cert.pem().as_bytes())?;
        // A new CA invalidates any server certificate issued by an old one.
        let _ = fs::remove_file(dir.join("server.names"));
        key
    };

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let names_text = names.join("\n");
    let cert_path = dir.join("server.pem");
    let stored_key = secrets.get("tls/server.key", &dir.join("server.key"))?;
    let names_path = dir.join("server.names");
    let current = names_path.exists() && read_text(&names_path)? == names_text;
    if let (true, true, Some(key)) = (current, cert_path.exists(), stored_key) {
        return Ok((read(&cert_path)?, key));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.clone())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Moat server");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (not_before, not_after) = validity(825);
    params.not_before = not_before;
    params.not_after = not_after;
    let issuer = Issuer::new(ca_params(), &ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    let key_pem = key.serialize_pem();
    secrets.put("tls/server.key", key_pem.as_bytes())?;
    write_public(&cert_path, cert.pem().as_bytes())?;
    write_public(&names_path, names_text.as_bytes())?;
    Ok((read(&cert_path)?, key_pem.into_bytes()))
}

/// The CA's parameters. Rebuilt identically on every start, so that the stored
/// CA key can issue new server certificates without parsing the CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Moat");
    params
        .distinguished_name
        .push(DnType::CommonName, "Moat local certificate authority");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// From yesterday (for clock skew) to `days` from now.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// Writes the AWS CLI files for the `moat` profile (both 0600) and returns
/// the shell line that points the CLI and SDKs at them.
pub fn write_cli_profile(
    data_dir: &Path,
    endpoint: &str,
    region: &str,
    key: &AccessKey,
    ca_path: Option<&Path>,
) -> Result<String, InitError> {
    let dir = data_dir.join("aws");
    private_dir(&dir)?;
    let credentials = format!(
        "[moat]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key.id,
        key.secret.expose()
    );
    let mut config = format!("[profile moat]\nregion = {region}\nendpoint_url = {endpoint}\n");
    if let Some(ca) = ca_path {
        config.push_str(&format!("ca_bundle = {}\n", ca.display()));
    }
    let credentials_path = dir.join("credentials");
    let config_path = dir.join("config");
    write_private(&credentials_path, credentials.as_bytes())?;
    write_private(&config_path, config.as_bytes())?;
    let mut line = format!(
        "export AWS_ENDPOINT_URL={endpoint} AWS_SHARED_CREDENTIALS_FILE={} AWS_CONFIG_FILE={}",
        credentials_path.display(),
        config_path.display()
    );
    if let Some(ca) = ca_path {
        line.push_str(&format!(" AWS_CA_BUNDLE={}", ca.display()));
    }
    Ok(line)
}

/// The URL clients use for an address Moat listens on.
pub fn endpoint_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", addr.port())
}

fn private_dir(path: &Path) -> Result<(), InitError> {
    create_private_dir(path).map_err(|source| InitError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, InitError> {
    fs::read(path).map_err(|source| InitError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, InitError> {
    String::from_utf8(read(path)?).map_err(|_| InitError::Corrupt {
        path: path.to_owned(),
        message: "not UTF-8 text".into(),
    })
}

/// Writes a file readable only by its owner, atomically (temporary file, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    write_atomic(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InitError> {
    let io_err = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
