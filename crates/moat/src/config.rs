//! Settings: the configuration file, merged under the command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use moat_dynamodb::backups::BackupPlan;

use crate::cli::ServeArgs;

/// The AWS commercial regions, all served unless the configuration narrows them.
pub const DEFAULT_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "sa-east-1",
];

/// The configuration file (`moat.toml`). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub region: Option<String>,
    pub regions: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Option<Vec<String>>,
    pub plain_http: Option<bool>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub audit_max_file_bytes: Option<u64>,
    pub audit_keep_files: Option<usize>,
    pub item_cache_mib: Option<usize>,
    pub handshake_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub oidc_ca_bundle: Option<PathBuf>,
    pub oidc_jwks_files: Option<BTreeMap<String, PathBuf>>,
    pub master_key_file: Option<PathBuf>,
    pub master_key_pkcs11: Option<Pkcs11Settings>,
    pub object_store_dir: Option<PathBuf>,
    pub object_store_s3: Option<S3Settings>,
    pub backup_plans: Option<Vec<BackupPlan>>,
}

/// The object store on an S3-compatible endpoint (`[object_store_s3]`). The
/// credentials come from the environment (`MOAT_S3_ACCESS_KEY_ID`,
/// `MOAT_S3_SECRET_ACCESS_KEY`), never the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    #[serde(default)]
    pub prefix: String,
    /// CAs trusted for an https endpoint [default: Debian's bundle].
    pub ca_file: Option<PathBuf>,
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

/// Where backups, exports and imports are kept.
#[derive(Debug, Clone)]
pub enum ObjectStoreSettings {
    Dir(PathBuf),
    S3(S3Settings),
}

impl ObjectStoreSettings {
    fn from_file(file: &FileConfig, data_dir: &Path) -> Result<ObjectStoreSettings, ConfigError> {
        match (&file.object_store_dir, &file.object_store_s3) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "object_store_dir and [object_store_s3] exclude each other".into(),
            )),
            (_, Some(s3)) => Ok(ObjectStoreSettings::S3(s3.clone())),
            (dir, None) => Ok(ObjectStoreSettings::Dir(
                dir.clone().unwrap_or_else(|| data_dir.join("objects")),
            )),
        }
    }

    /// The store itself. An S3 bucket is created if it does not exist.
    pub fn open(&self) -> Result<std::sync::Arc<dyn moat_objects::ObjectStore>, String> {
        match self {
            ObjectStoreSettings::Dir(dir) => Ok(std::sync::Arc::new(moat_objects::LocalDir::new(
                dir.clone(),
            ))),
            ObjectStoreSettings::S3(s3) => {
                let env = |name: &str| {
                    std::env::var(name)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| format!("[object_store_s3] needs {name} in the environment"))
                };
                let ca_pem = match &s3.ca_file {
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
                    }
                    None => None,
                };
                let store = moat_objects::S3Store::new(moat_objects::S3Config {
                    endpoint: s3.endpoint.clone(),
                    bucket: s3.bucket.clone(),
                    region: s3.region.clone(),
                    prefix: s3.prefix.clone(),
                    access_key_id: env("MOAT_S3_ACCESS_KEY_ID")?,
                    secret_access_key: env("MOAT_S3_SECRET_ACCESS_KEY")?,
                    ca_pem,
                })
                .map_err(|e| e.to_string())?;
                store
                    .ensure_bucket()
                    .map_err(|e| format!("the object store's bucket {}: {e}", s3.bucket))?;
                Ok(std::sync::Arc::new(store))
            }
        }
    }

    /// The object store a `moat` command run outside `serve` uses: as
    /// `DATA_DIR/moat.toml` says, or `DATA_DIR/objects`.
    pub fn for_data_dir(data_dir: &Path) -> Result<ObjectStoreSettings, String> {
        let path = data_dir.join("moat.toml");
        let file = if path.exists() {
            load(&path).map_err(|e| e.to_string())?
        } else {
            FileConfig::default()
        };
        ObjectStoreSettings::from_file(&file, data_dir).map_err(|e| e.to_string())
    }
}

/// A master key inside a PKCS#11 HSM (`[master_key_pkcs11]` in the file).
/// The PIN comes from the environment (`MOAT_PKCS11_PIN`), never the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token_label: String,
    #[serde(default = "default_key_label")]
    pub key_label: String,
}

fn default_key_label() -> String {
    "moat-master-key".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The settings `moat serve` runs with, after merging.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
    pub regions: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Vec<String>,
    pub plain_http: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub audit_max_file_bytes: u64,
    pub audit_keep_files: usize,
    /// What DynamoDB's item read cache may hold (all tables together).
    pub item_cache_bytes: usize,
    /// Time allowed for a TLS handshake (and for the first byte of a connection).
    pub handshake_timeout: Duration,
    /// Time allowed for a request's head to arrive, also the idle keep-alive limit.
    pub header_read_timeout: Duration,
    /// Time allowed for a request's body to arrive.
    pub body_read_timeout: Duration,
    /// The CAs trusted when fetching OpenID Connect providers' keys.
    pub oidc_ca_bundle: PathBuf,
    /// Issuer URL -> JWKS file, for providers Moat cannot reach.
    pub oidc_jwks_files: BTreeMap<String, PathBuf>,
    pub master_key_file: Option<PathBuf>,
    pub master_key_pkcs11: Option<Pkcs11Settings>,
    /// Where backups, exports and imports are kept (default DATA_DIR/objects).
    pub object_store: ObjectStoreSettings,
    /// Scheduled DynamoDB backups (`[[backup_plans]]` in the file).
    pub backup_plans: Vec<BackupPlan>,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> Result<Settings, ConfigError> {
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let file = match &args.config {
            Some(path) => load(path)?,
            None => {
                let path = data_dir.join("moat.toml");
                if path.exists() {
                    load(&path)?
                } else {
                    FileConfig::default()
                }
            }
        };
        let object_store = ObjectStoreSettings::from_file(&file, &data_dir)?;
        let region = args
            .region
            .or(file.region)
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut regions: Vec<String> = args
            .regions
            .or(file.regions)
            .unwrap_or_else(|| DEFAULT_REGIONS.iter().map(|r| (*r).to_owned()).collect());
        // The home region first: requests that name none (unsigned) go there.
        regions.retain(|r| *r != region);
        regions.insert(0, region.clone());
        for r in &regions {
            if !is_region_name(r) {
                return Err(ConfigError::Invalid(format!(
                    "'{r}' is not a region name (expected something like us-east-1)"
                )));
            }
        }
        let settings = Settings {
            data_dir,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4566))),
            region,
            regions,
            tls_cert: args.tls_cert.or(file.tls_cert),
            tls_key: args.tls_key.or(file.tls_key),
            tls_names: args.tls_names.or(file.tls_names).unwrap_or_default(),
            plain_http: args.plain_http || file.plain_http.unwrap_or(false),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            max_body_bytes: file.max_body_bytes.unwrap_or(16 * 1024 * 1024),
            max_connections: file.max_connections.unwrap_or(4096),
            audit_max_file_bytes: file.audit_max_file_bytes.unwrap_or(64 * 1024 * 1024),
            audit_keep_files: file.audit_keep_files.unwrap_or(10),
            item_cache_bytes: file
                .item_cache_mib
                .map_or(moat_store::DEFAULT_READ_CACHE_BYTES, |mib| {
                    mib.saturating_mul(1024 * 1024)
                }),
            handshake_timeout: seconds(file.handshake_timeout_secs, 10)?,
            header_read_timeout: seconds(file.header_read_timeout_secs, 30)?,
            body_read_timeout: seconds(file.body_read_timeout_secs, 60)?,
            oidc_ca_bundle: file
                .oidc_ca_bundle
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
            oidc_jwks_files: file.oidc_jwks_files.unwrap_or_default(),
            master_key_file: args.master_key_file.or(file.master_key_file),
            master_key_pkcs11: file.master_key_pkcs11,
            object_store,
            backup_plans: file.backup_plans.unwrap_or_default(),
        };
        for plan in &settings.backup_plans {
            if plan.every_secs == 0 || !["full", "incremental"].contains(&plan.kind.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "backup plan {}: every_secs must be at least 1 and kind full or incremental",
                    plan.name
                )));
            }
            if plan.copy_to_region.is_some() != plan.copy_to_table.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "backup plan {}: copy_to_region and copy_to_table go together",
                    plan.name
                )));
            }
            for region in std::iter::once(&plan.region).chain(plan.copy_to_region.as_ref()) {
                if !settings.regions.contains(region) {
                    return Err(ConfigError::Invalid(format!(
                        "backup plan {}: {region} is not a region Moat serves",
                        plan.name
                    )));
                }
            }
        }
        if settings.tls_cert.is_some() != settings.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "a TLS certificate needs its key, and a key its certificate".into(),
            ));
        }
        if settings.plain_http && !settings.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "plain HTTP is allowed only on a loopback address, not {}: remove --plain-http or listen on 127.0.0.1",
                settings.listen
            )));
        }
        Ok(settings)
    }
}

fn seconds(value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid(
            "a timeout must be at least 1 second".into(),
        )),
        n => Ok(Duration::from_secs(n)),
    }
}

fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("moat");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/moat"),
        None => PathBuf::from("moat-data"),
    }
}

/// `xx-name-N`: lower-case letters and digits in dash-separated parts.
fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1"] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in ["", "useast1", "us-east", "US-EAST-1", "us--1", "us-east-x"] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn file_keys_are_checked() {
        let ok: FileConfig =
            toml::from_str("listen = \"127.0.0.1:5000\"\nregions = [\"eu-west-1\"]").unwrap();
        assert_eq!(ok.listen, Some("127.0.0.1:5000".parse().unwrap()));
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        let cache: FileConfig = toml::from_str("item_cache_mib = 512").unwrap();
        assert_eq!(cache.item_cache_mib, Some(512));
    }
}
