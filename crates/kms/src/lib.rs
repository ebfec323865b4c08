//! KMS: customer keys on Moat's key hierarchy.
//!
//! A KMS key is a resource of the hierarchy: its key material (one version
//! per rotation) is stored sealed by the key's resource key, which the master
//! key wraps. Ciphertexts name their key and material version, so old
//! ciphertexts still decrypt after rotation, and they are bound to the key's
//! ARN and the encryption context, so a ciphertext moved to another key or
//! context fails to decrypt. Keys, aliases and tags live in the encrypted
//! system store.
//!
//! Architecture invariant: no HTTP and no wire format; the edge decodes and
//! encodes. Depends on `moat-keys` and `moat-store` only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use moat_keys::{open, seal, Binding, KeyBytes, KeyRing};
use moat_store::Db;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const KEYS: &str = "kms-keys";
const ALIASES: &str = "kms-aliases";
const BLOB_MAGIC: &[u8; 4] = b"MKC1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsErrorKind {
    NotFound,
    Disabled,
    InvalidState,
    InvalidCiphertext,
    IncorrectKey,
    Validation,
    AlreadyExists,
    InvalidAliasName,
    InvalidKeyUsage,
    Internal,
}

impl KmsErrorKind {
    /// AWS's error code.
    pub fn code(self) -> &'static str {
        match self {
            KmsErrorKind::NotFound => "NotFoundException",
            KmsErrorKind::Disabled => "DisabledException",
            KmsErrorKind::InvalidState => "KMSInvalidStateException",
            KmsErrorKind::InvalidCiphertext => "InvalidCiphertextException",
            KmsErrorKind::IncorrectKey => "IncorrectKeyException",
            KmsErrorKind::Validation => "ValidationException",
            KmsErrorKind::AlreadyExists => "AlreadyExistsException",
            KmsErrorKind::InvalidAliasName => "InvalidAliasNameException",
            KmsErrorKind::InvalidKeyUsage => "InvalidKeyUsageException",
            KmsErrorKind::Internal => "KMSInternalException",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            KmsErrorKind::Internal => 500,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct KmsError {
    pub kind: KmsErrorKind,
    pub message: String,
}

impl KmsError {
    fn new(kind: KmsErrorKind, message: impl Into<String>) -> KmsError {
        KmsError {
            kind,
            message: message.into(),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> KmsError {
    KmsError::new(KmsErrorKind::Internal, e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

/// A KMS key as stored. Material versions are sealed by the key's resource key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub arn: String,
    pub description: String,
    pub created: i64,
    pub state: KeyState,
    /// The state to return to when a deletion is cancelled.
    pub deletion_date: Option<i64>,
    pub rotation_enabled: bool,
    pub rotation_period_days: u32,
    pub next_rotation: Option<i64>,
    /// Sealed material, oldest first; the last one encrypts.
    pub material: Vec<Vec<u8>>,
    pub tags: Vec<(String, String)>,
}

/// Maps an encryption context to bytes that are the same for the same pairs
/// in any order.
fn context_aad(arn: &str, context: &BTreeMap<String, String>) -> String {
    let mut out = String::from(arn);
    for (k, v) in context {
        out.push('\0');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

pub struct Kms {
    db: Arc<Db>,
    keys: Arc<KeyRing>,
    account: String,
    rng: SystemRandom,
    /// Serialises read-modify-write of key records.
    write: Mutex<()>,
}

impl Kms {
    pub fn new(db: Arc<Db>, keys: Arc<KeyRing>, account: &str) -> Kms {
        Kms {
            db,
            keys,
            account: account.to_owned(),
            rng: SystemRandom::new(),
            write: Mutex::new(()),
        }
    }

    fn load(&self, region: &str, id: &str) -> Result<Option<KeyRecord>, KmsError> {
        match self
            .db
            .get(KEYS, format!("{region}/{id}").as_bytes())
            .map_err(internal)?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(internal),
            None => Ok(None),
        }
    }

    fn save(&self, region: &str, record: &KeyRecord) -> Result<(), KmsError> {
        let bytes = serde_json::to_vec(record).map_err(internal)?;
        self.db
            .put(KEYS, format!("{region}/{}", record.id).as_bytes(), &bytes)
            .map_err(internal)
    }

    /// Resolves a key id, key ARN, alias name or alias ARN to the key's record.
    pub fn resolve(&self, region: &str, key_id: &str) -> Result<KeyRecord, KmsError> {
        let not_found = || {
            KmsError::new(
                KmsErrorKind::NotFound,
                format!("Key '{key_id}' does not exist"),
            )
        };
        let arn_prefix = format!("arn:aws:kms:{region}:{}:", self.account);
        let local = key_id.strip_prefix(&arn_prefix).unwrap_or(key_id);
        if key_id.starts_with("arn:") && local == key_id {
            return Err(not_found());
        }
        let id = if let Some(alias) = local.strip_prefix("alias/") {
            let target = self
                .db
                .get(ALIASES, format!("{region}/alias/{alias}").as_bytes())
                .map_err(internal)?
                .ok_or_else(|| {
                    KmsError::new(
                        KmsErrorKind::NotFound,
                        format!("Alias {arn_prefix}alias/{alias} is not found."),
                    )
                })?;
            String::from_utf8(target).map_err(internal)?
        } else {
            local.strip_prefix("key/").unwrap_or(local).to_owned()
        };
        self.load(region, &id)?.ok_or_else(not_found)
    }

    fn material(&self, record: &KeyRecord, version: usize) -> Result<KeyBytes, KmsError> {
        let sealed = record.material.get(version).ok_or_else(|| {
            KmsError::new(
                KmsErrorKind::InvalidCiphertext,
                "The ciphertext refers to key material that does not exist.",
            )
        })?;
        let resource_key = self.keys.resource_key(&record.arn).map_err(internal)?;
        let binding = Binding {
            key_id: &record.arn,
            resource: &record.arn,
            purpose: "kms-key-material",
        };
        KeyBytes::from_slice(&open(&resource_key, sealed, &binding).map_err(internal)?)
            .map_err(internal)
    }

    fn new_material(&self, arn: &str) -> Result<Vec<u8>, KmsError> {
        let resource_key = self.keys.resource_key(arn).map_err(internal)?;
        let material = KeyBytes::generate(&self.rng).map_err(internal)?;
        let binding = Binding {
            key_id: arn,
            resource: arn,
            purpose: "kms-key-material",
        };
        seal(&resource_key, material.expose(), &binding, &self.rng).map_err(internal)
    }

    pub fn create_key(
        &self,
        region: &str,
        description: &str,
        tags: Vec<(String, String)>,
        now: i64,
    ) -> Result<KeyRecord, KmsError> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(internal)?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let id = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let arn = format!("arn:aws:kms:{region}:{}:key/{id}", self.account);
        let record = KeyRecord {
            id,
            material: vec![self.new_material(&arn)?],
            arn,
            description: description.to_owned(),
            created: now,
            state: KeyState::Enabled,
            deletion_date: None,
            rotation_enabled: false,
            rotation_period_days: 365,
            next_rotation: None,
            tags,
        };
        self.save(region, &record)?;
        Ok(record)
    }

    pub fn list_keys(&self, region: &str) -> Result<Vec<KeyRecord>, KmsError> {
        let prefix = format!("{region}/");
        let mut end = prefix.clone().into_bytes();
        end.push(0xff);
        self.db
            .scan(
                KEYS,
                std::ops::Bound::Included(prefix.as_bytes()),
                std::ops::Bound::Excluded(&end),
                usize::MAX,
            )
            .map_err(internal)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(internal))
            .collect()
    }

    fn usable(record: &KeyRecord) -> Result<(), KmsError> {
        match record.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::new(
                KmsErrorKind::Disabled,
                format!("{} is disabled.", record.arn),
            )),
            KeyState::PendingDeletion => Err(KmsError::new(
                KmsErrorKind::InvalidState,
                format!("{} is pending deletion.", record.arn),
            )),
        }
    }

    /// Encrypts up to 4096 bytes under the key's current material.
    pub fn encrypt(
        &self,
        region: &str,
        key_id: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<(Vec<u8>, String), KmsError> {
        if plaintext.is_empty() || plaintext.len() > 4096 {
            return Err(KmsError::new(
                KmsErrorKind::Validation,
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length between 1 and 4096",
            ));
        }
        let record = self.resolve(region, key_id)?;
        Self::usable(&record)?;
        let version = record.material.len() - 1;
        let material = self.material(&record, version)?;
        let aad = context_aad(&record.arn, context);
        let binding = Binding {
            key_id: &record.id,
            resource: &aad,
            purpose: "kms-ciphertext",
        };
        let sealed = seal(&material, plaintext, &binding, &self.rng).map_err(internal)?;
        let mut blob = Vec::with_capacity(4 + 36 + 4 + sealed.len());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(record.id.as_bytes());
        blob.extend_from_slice(&(version as u32).to_be_bytes());
        blob.extend_from_slice(&sealed);
        Ok((blob, record.arn))
    }

    /// Decrypts a ciphertext of this deployment; the key comes from the blob
    /// and, if `key_id` is given, must be that key.
    pub fn decrypt(
        &self,
        region: &str,
        blob: &[u8],
        key_id: Option<&str>,
        context: &BTreeMap<String, String>,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let invalid = || {
            KmsError::new(KmsErrorKind::InvalidCiphertext, "The ciphertext is invalid or was encrypted under another key or encryption context.")
        };
        if blob.len() < 4 + 36 + 4 || &blob[..4] != BLOB_MAGIC {
            return Err(invalid());
        }
        let id = std::str::from_utf8(&blob[4..40]).map_err(|_| invalid())?;
        let version = u32::from_be_bytes([blob[40], blob[41], blob[42], blob[43]]) as usize;
        let record = self.load(region, id)?.ok_or_else(invalid)?;
        if let Some(wanted) = key_id {
            let wanted = self.resolve(region, wanted)?;
            if wanted.id != record.id {
                return Err(KmsError::new(
                    KmsErrorKind::IncorrectKey,
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                ));
            }
        }
        Self::usable(&record)?;
        let material = self.material(&record, version).map_err(|_| invalid())?;
        let aad = context_aad(&record.arn, context);
        let binding = Binding {
            key_id: &record.id,
            resource: &aad,
            purpose: "kms-ciphertext",
        };
        let plain = open(&material, &blob[44..], &binding).map_err(|_| invalid())?;
        Ok((plain, record.arn))
    }

    /// A new data key: its plaintext and the same key encrypted under the KMS key.
    pub fn generate_data_key(
        &self,
        region: &str,
        key_id: &str,
        bytes: usize,
        context: &BTreeMap<String, String>,
    ) -> Result<(Vec<u8>, Vec<u8>, String), KmsError> {
        if !(1..=1024).contains(&bytes) {
            return Err(KmsError::new(
                KmsErrorKind::Validation,
                "1 validation error detected: Value at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024",
            ));
        }
        let mut plain = vec![0u8; bytes];
        self.rng.fill(&mut plain).map_err(internal)?;
        let (blob, arn) = self.encrypt(region, key_id, &plain, context)?;
        Ok((plain, blob, arn))
    }

    fn update(
        &self,
        region: &str,
        key_id: &str,
        change: impl FnOnce(&mut KeyRecord) -> Result<(), KmsError>,
    ) -> Result<KeyRecord, KmsError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.resolve(region, key_id)?;
        change(&mut record)?;
        self.save(region, &record)?;
        Ok(record)
    }

    pub fn set_enabled(&self, region: &str, key_id: &str, enabled: bool) -> Result<(), KmsError> {
        self.update(region, key_id, |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(KmsError::new(
                    KmsErrorKind::InvalidState,
                    format!("{} is pending deletion.", r.arn),
                ));
            }
            r.state = if enabled {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            };
            Ok(())
        })
        .map(|_| ())
    }

    pub fn set_rotation(
        &self,
        region: &str,
        key_id: &str,
        enabled: bool,
        period_days: Option<u32>,
        now: i64,
    ) -> Result<(), KmsError> {
        if let Some(days) = period_days {
            if !(90..=2560).contains(&days) {
                return Err(KmsError::new(
                    KmsErrorKind::Validation,
                    "The rotation period must be between 90 and 2560 days.",
                ));
            }
        }
        self.update(region, key_id, |r| {
            Self::usable(r)?;
            r.rotation_enabled = enabled;
            if let Some(days) = period_days {
                r.rotation_period_days = days;
            }
            r.next_rotation = enabled.then(|| now + i64::from(r.rotation_period_days) * 86_400);
            Ok(())
        })
        .map(|_| ())
    }

    /// Adds new key material; earlier ciphertexts keep decrypting with theirs.
    pub fn rotate_now(&self, region: &str, key_id: &str) -> Result<KeyRecord, KmsError> {
        let record = self.resolve(region, key_id)?;
        Self::usable(&record)?;
        let material = self.new_material(&record.arn)?;
        self.update(region, key_id, |r| {
            r.material.push(material);
            Ok(())
        })
    }

    /// Rotates every key whose scheduled rotation is due (run periodically).
    pub fn rotate_due(&self, region: &str, now: i64) -> Result<usize, KmsError> {
        let mut n = 0;
        for record in self.list_keys(region)? {
            if record.state == KeyState::Enabled && record.next_rotation.is_some_and(|t| t <= now) {
                self.rotate_now(region, &record.id)?;
                self.update(region, &record.id, |r| {
                    r.next_rotation = Some(now + i64::from(r.rotation_period_days) * 86_400);
                    Ok(())
                })?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes the keys whose waiting period has ended: their material is
    /// gone, and ciphertexts under them can never be decrypted again.
    pub fn delete_due(&self, region: &str, now: i64) -> Result<usize, KmsError> {
        let mut n = 0;
        for record in self.list_keys(region)? {
            if record.state == KeyState::PendingDeletion
                && record.deletion_date.is_some_and(|d| d <= now)
            {
                let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
                self.db
                    .delete(KEYS, format!("{region}/{}", record.id).as_bytes())
                    .map_err(internal)?;
                for (alias, target) in self.list_aliases(region)? {
                    if target == record.id {
                        self.db
                            .delete(ALIASES, format!("{region}/{alias}").as_bytes())
                            .map_err(internal)?;
                    }
                }
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn schedule_deletion(
        &self,
        region: &str,
        key_id: &str,
        days: i64,
        now: i64,
    ) -> Result<KeyRecord, KmsError> {
        if !(7..=30).contains(&days) {
            return Err(KmsError::new(
                KmsErrorKind::Validation,
                "1 validation error detected: Value at 'pendingWindowInDays' failed to satisfy constraint: Member must have value between 7 and 30",
            ));
        }
        self.update(region, key_id, |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(KmsError::new(
                    KmsErrorKind::InvalidState,
                    format!("{} is pending deletion.", r.arn),
                ));
            }
            r.state = KeyState::PendingDeletion;
            r.deletion_date = Some(now + days * 86_400);
            Ok(())
        })
    }

    pub fn cancel_deletion(&self, region: &str, key_id: &str) -> Result<KeyRecord, KmsError> {
        self.update(region, key_id, |r| {
            if r.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    KmsErrorKind::InvalidState,
                    format!("{} is not pending deletion.", r.arn),
                ));
            }
            // AWS leaves a key whose deletion was cancelled disabled.
            r.state = KeyState::Disabled;
            r.deletion_date = None;
            Ok(())
        })
    }

    pub fn tag(
        &self,
        region: &str,
        key_id: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(), KmsError> {
        self.update(region, key_id, |r| {
            for (k, v) in tags {
                r.tags.retain(|(e, _)| *e != k);
                r.tags.push((k, v));
            }
            if r.tags.len() > 50 {
                return Err(KmsError::new(
                    KmsErrorKind::Validation,
                    "A key can have at most 50 tags.",
                ));
            }
            Ok(())
        })
        .map(|_| ())
    }

    pub fn untag(&self, region: &str, key_id: &str, keys: &[String]) -> Result<(), KmsError> {
        self.update(region, key_id, |r| {
            r.tags.retain(|(k, _)| !keys.contains(k));
            Ok(())
        })
        .map(|_| ())
    }

    pub fn create_alias(&self, region: &str, alias: &str, target: &str) -> Result<(), KmsError> {
        let name = alias.strip_prefix("alias/").ok_or_else(|| {
            KmsError::new(
                KmsErrorKind::InvalidAliasName,
                "Alias must start with the prefix \"alias/\".",
            )
        })?;
        if name.is_empty()
            || name.len() > 250
            || name.starts_with("aws/")
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        {
            return Err(KmsError::new(
                KmsErrorKind::InvalidAliasName,
                format!("Alias {alias} is not valid."),
            ));
        }
        let record = self.resolve(region, target)?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{region}/{alias}");
        if self
            .db
            .get(ALIASES, key.as_bytes())
            .map_err(internal)?
            .is_some()
        {
            return Err(KmsError::new(
                KmsErrorKind::AlreadyExists,
                format!(
                    "An alias with the name arn:aws:kms:{region}:{}:{alias} already exists",
                    self.account
                ),
            ));
        }
        self.db
            .put(ALIASES, key.as_bytes(), record.id.as_bytes())
            .map_err(internal)
    }

    pub fn delete_alias(&self, region: &str, alias: &str) -> Result<(), KmsError> {
        let key = format!("{region}/{alias}");
        if self
            .db
            .get(ALIASES, key.as_bytes())
            .map_err(internal)?
            .is_none()
        {
            return Err(KmsError::new(
                KmsErrorKind::NotFound,
                format!(
                    "Alias arn:aws:kms:{region}:{}:{alias} is not found.",
                    self.account
                ),
            ));
        }
        self.db.delete(ALIASES, key.as_bytes()).map_err(internal)
    }

    /// `(alias name, target key id)` pairs of a region.
    pub fn list_aliases(&self, region: &str) -> Result<Vec<(String, String)>, KmsError> {
        let prefix = format!("{region}/");
        let mut end = prefix.clone().into_bytes();
        end.push(0xff);
        Ok(self
            .db
            .scan(
                ALIASES,
                std::ops::Bound::Included(prefix.as_bytes()),
                std::ops::Bound::Excluded(&end),
                usize::MAX,
            )
            .map_err(internal)?
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect())
    }

    pub fn account(&self) -> &str {
        &self.account
    }
}
