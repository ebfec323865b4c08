//! The key hierarchy: master key -> resource keys -> database keys -> data keys.
//!
//! Every key below the master is stored only wrapped by the key above it,
//! with AES-256-GCM and associated data that binds it to its owner (key id,
//! resource, purpose), so that a wrapped key copied to another resource fails
//! to unwrap. The master key comes from a [`MasterKey`] provider: a file, a
//! key given by the environment, or (later) a PKCS#11 HSM where it never
//! leaves the token.
//!
//! Architecture invariant: no knowledge of services, storage engines or HTTP.
//! The only I/O is reading and writing key files the caller names.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

mod pkcs11;
pub use pkcs11::{Pkcs11Config, Pkcs11MasterKey};

/// The format version of wrapped keys and sealed blobs.
const FORMAT: u8 = 1;

/// A 256-bit key in memory. Never printed, and wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes([u8; 32]);

impl KeyBytes {
    pub fn generate(rng: &dyn SecureRandom) -> Result<KeyBytes, KeyError> {
        let mut k = [0u8; 32];
        rng.fill(&mut k).map_err(|_| KeyError::Random)?;
        Ok(KeyBytes(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<KeyBytes, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(KeyBytes(arr))
    }

    /// The key itself; call only to hand it to a cipher.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        // Volatile writes so the wipe is not optimised away.
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a byte of self.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be 32 bytes, not {0}")]
    Length(usize),
    #[error("the system random source failed")]
    Random,
    #[error(
        "the wrapped key or sealed data is damaged, or belongs to another owner or master key"
    )]
    Unwrap,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Who a wrapped key or sealed blob belongs to. It becomes the associated
/// data of the encryption, so it must be given again, unchanged, to open it.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The id of the wrapping key (so a blob is not opened under another key).
    pub key_id: &'a str,
    /// The resource the key belongs to, e.g. an ARN.
    pub resource: &'a str,
    /// What the key is for, e.g. `database-key`.
    pub purpose: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.key_id.len() + self.resource.len() + self.purpose.len());
        out.extend_from_slice(b"moat-key-v1\0");
        for part in [self.key_id, self.resource, self.purpose] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// Encrypts `plaintext` under `key` with AES-256-GCM: `version | nonce | ciphertext+tag`.
pub fn seal(
    key: &KeyBytes,
    plaintext: &[u8],
    binding: &Binding<'_>,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, KeyError> {
    let sealing = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| KeyError::Length(32))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
    let mut buf = plaintext.to_vec();
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.aad()),
            &mut buf,
        )
        .map_err(|_| KeyError::Unwrap)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Decrypts what [`seal`] made, checking its integrity and its binding.
pub fn open(key: &KeyBytes, sealed: &[u8], binding: &Binding<'_>) -> Result<Vec<u8>, KeyError> {
    if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != FORMAT {
        return Err(KeyError::Unwrap);
    }
    let opening = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| KeyError::Length(32))?,
    );
    let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
        .map_err(|_| KeyError::Unwrap)?;
    let mut buf = sealed[1 + NONCE_LEN..].to_vec();
    let plain = opening
        .open_in_place(nonce, Aad::from(binding.aad()), &mut buf)
        .map_err(|_| KeyError::Unwrap)?;
    Ok(plain.to_vec())
}

/// Where the master key lives. Wrapping and unwrapping happen inside the
/// provider, so an HSM provider never hands the master key out.
pub trait MasterKey: Send + Sync {
    /// A stable, non-secret id of this master key (used in bindings).
    fn id(&self) -> &str;
    fn wrap(&self, key: &KeyBytes, resource: &str, purpose: &str) -> Result<Vec<u8>, KeyError>;
    fn unwrap(&self, wrapped: &[u8], resource: &str, purpose: &str) -> Result<KeyBytes, KeyError>;
}

/// A master key held in memory, read from a file or the environment.
pub struct SoftwareMasterKey {
    id: String,
    key: KeyBytes,
    rng: SystemRandom,
}

impl SoftwareMasterKey {
    pub fn new(id: impl Into<String>, key: KeyBytes) -> SoftwareMasterKey {
        SoftwareMasterKey {
            id: id.into(),
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Reads a 32-byte key file (raw, or 64 hexadecimal characters), creating
    /// it (0600, 32 random bytes) when `create` is set and it does not exist.
    pub fn from_file(path: &Path, create: bool) -> Result<SoftwareMasterKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            if !create {
                return Err(KeyError::Config(format!(
                    "the master key file {} does not exist",
                    path.display()
                )));
            }
            let key = KeyBytes::generate(&SystemRandom::new())?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(key.expose()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let key = parse_key(&bytes).ok_or_else(|| {
            KeyError::Config(format!(
                "the master key file {} must hold 32 bytes or 64 hexadecimal characters",
                path.display()
            ))
        })?;
        Ok(SoftwareMasterKey::new("software", key))
    }

    /// A key given as 64 hexadecimal characters (e.g. from an environment variable).
    pub fn from_hex(text: &str) -> Result<SoftwareMasterKey, KeyError> {
        let key = parse_key(text.trim().as_bytes()).ok_or_else(|| {
            KeyError::Config("a master key must be 64 hexadecimal characters".into())
        })?;
        Ok(SoftwareMasterKey::new("software", key))
    }
}

fn parse_key(bytes: &[u8]) -> Option<KeyBytes> {
    if bytes.len() == 32 {
        return KeyBytes::from_slice(bytes).ok();
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(KeyBytes(out))
}

impl MasterKey for SoftwareMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &KeyBytes, resource: &str, purpose: &str) -> Result<Vec<u8>, KeyError> {
        let binding = Binding {
            key_id: &self.id,
            resource,
            purpose,
        };
        seal(&self.key, key.expose(), &binding, &self.rng)
    }

    fn unwrap(&self, wrapped: &[u8], resource: &str, purpose: &str) -> Result<KeyBytes, KeyError> {
        let binding = Binding {
            key_id: &self.id,
            resource,
            purpose,
        };
        KeyBytes::from_slice(&open(&self.key, wrapped, &binding)?)
    }
}

/// The known plaintext of the key check value.
const CHECK_PLAINTEXT: [u8; 32] = *b"moat master key check value v1\0\0";

/// A key check value: proof, stored beside the data, that a master key is the
/// one the data was wrapped with. It reveals nothing about the key.
pub fn key_check_value(master: &dyn MasterKey) -> Result<Vec<u8>, KeyError> {
    master.wrap(
        &KeyBytes(CHECK_PLAINTEXT),
        "moat:data-directory",
        "key-check",
    )
}

/// True if `master` opens `check` (made by [`key_check_value`]).
pub fn matches_check_value(master: &dyn MasterKey, check: &[u8]) -> bool {
    matches!(master.unwrap(check, "moat:data-directory", "key-check"), Ok(k) if k.expose() == &CHECK_PLAINTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> SoftwareMasterKey {
        SoftwareMasterKey::new(
            "software",
            KeyBytes::generate(&SystemRandom::new()).unwrap(),
        )
    }

    #[test]
    fn wrapped_keys_open_only_for_their_owner() {
        let m = master();
        let k = KeyBytes::generate(&SystemRandom::new()).unwrap();
        let wrapped = m
            .wrap(&k, "arn:aws:dynamodb:us-east-1:1:table/a", "database-key")
            .unwrap();
        assert_eq!(
            m.unwrap(
                &wrapped,
                "arn:aws:dynamodb:us-east-1:1:table/a",
                "database-key"
            )
            .unwrap(),
            k
        );
        assert!(m
            .unwrap(
                &wrapped,
                "arn:aws:dynamodb:us-east-1:1:table/b",
                "database-key"
            )
            .is_err());
        assert!(m
            .unwrap(&wrapped, "arn:aws:dynamodb:us-east-1:1:table/a", "data-key")
            .is_err());
        assert!(master()
            .unwrap(
                &wrapped,
                "arn:aws:dynamodb:us-east-1:1:table/a",
                "database-key"
            )
            .is_err());
        for i in 0..wrapped.len() {
            let mut flipped = wrapped.clone();
            flipped[i] ^= 1;
            assert!(m
                .unwrap(
                    &flipped,
                    "arn:aws:dynamodb:us-east-1:1:table/a",
                    "database-key"
                )
                .is_err());
        }
        assert_eq!(format!("{k:?}"), "KeyBytes(<redacted>)");
    }

    #[test]
    fn check_values_tell_master_keys_apart() {
        let (a, b) = (master(), master());
        let check = key_check_value(&a).unwrap();
        assert!(matches_check_value(&a, &check));
        assert!(!matches_check_value(&b, &check));
    }

    #[test]
    fn key_files_are_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("moat-keys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("master.key");
        let _ = std::fs::remove_file(&path);
        assert!(SoftwareMasterKey::from_file(&path, false).is_err());
        let a = SoftwareMasterKey::from_file(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = SoftwareMasterKey::from_file(&path, false).unwrap();
        assert!(matches_check_value(&b, &key_check_value(&a).unwrap()));
        let hex: String = std::fs::read(&path)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let c = SoftwareMasterKey::from_hex(&hex).unwrap();
        assert!(matches_check_value(&c, &key_check_value(&a).unwrap()));
        assert!(SoftwareMasterKey::from_hex("abc").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The key directory: the master key's check value and the resource keys,
/// each stored wrapped by the master key in a file of its own (0600).
pub struct KeyRing {
    dir: std::path::PathBuf,
    master: Box<dyn MasterKey>,
    rng: SystemRandom,
}

const CHECK_FILE: &str = "master.check";
const RESOURCE_KEY_EXT: &str = "rkey";

impl KeyRing {
    /// Opens the key directory with `master`, refusing a master key that is
    /// not the one the directory's keys were wrapped with.
    pub fn open(dir: &Path, master: Box<dyn MasterKey>) -> Result<KeyRing, KeyError> {
        let ring = KeyRing {
            dir: dir.to_owned(),
            master,
            rng: SystemRandom::new(),
        };
        let check = dir.join(CHECK_FILE);
        if check.exists() {
            let value = std::fs::read(&check).map_err(|source| KeyError::Io {
                path: check.display().to_string(),
                source,
            })?;
            if !matches_check_value(ring.master.as_ref(), &value) {
                return Err(KeyError::Config(
                    "the master key does not match this data directory (its key check value differs): \
                     start Moat with the master key the data was created with"
                        .into(),
                ));
            }
        } else {
            if !ring.resource_key_files()?.is_empty() {
                return Err(KeyError::Config(format!(
                    "{} is missing while resource keys exist: the key directory is incomplete",
                    check.display()
                )));
            }
            write_private(&check, &key_check_value(ring.master.as_ref())?)?;
        }
        Ok(ring)
    }

    fn file_for(&self, resource: &str) -> std::path::PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, resource.as_bytes());
        let name: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{name}.{RESOURCE_KEY_EXT}"))
    }

    fn resource_key_files(&self) -> Result<Vec<std::path::PathBuf>, KeyError> {
        let io = |source| KeyError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) == Some(RESOURCE_KEY_EXT) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// The key of `resource` (created on first use), unwrapped by the master key.
    pub fn resource_key(&self, resource: &str) -> Result<KeyBytes, KeyError> {
        let path = self.file_for(resource);
        if path.exists() {
            let (stored_resource, wrapped) = read_resource_file(&path)?;
            if stored_resource != resource {
                return Err(KeyError::Unwrap);
            }
            return self.master.unwrap(&wrapped, resource, "resource-key");
        }
        let key = KeyBytes::generate(&self.rng)?;
        let wrapped = self.master.wrap(&key, resource, "resource-key")?;
        write_private(&path, &resource_file(resource, &wrapped))?;
        Ok(key)
    }

    /// A new key of `resource` and the same key wrapped by the master key,
    /// for data that travels (a backup carries its key wrapped this way).
    pub fn new_wrapped_key(
        &self,
        resource: &str,
        purpose: &str,
    ) -> Result<(KeyBytes, Vec<u8>), KeyError> {
        let key = KeyBytes::generate(&self.rng)?;
        let wrapped = self.master.wrap(&key, resource, purpose)?;
        Ok((key, wrapped))
    }

    /// A key [`KeyRing::new_wrapped_key`] wrapped.
    pub fn unwrap_key(
        &self,
        resource: &str,
        purpose: &str,
        wrapped: &[u8],
    ) -> Result<KeyBytes, KeyError> {
        self.master.unwrap(wrapped, resource, purpose)
    }

    /// A database key of `resource`, kept in `path` sealed by the resource key
    /// (created on first use).
    pub fn database_key(&self, resource: &str, path: &Path) -> Result<KeyBytes, KeyError> {
        let resource_key = self.resource_key(resource)?;
        let binding = Binding {
            key_id: resource,
            resource,
            purpose: "database-key",
        };
        if path.exists() {
            let sealed = std::fs::read(path).map_err(|source| KeyError::Io {
                path: path.display().to_string(),
                source,
            })?;
            return KeyBytes::from_slice(&open(&resource_key, &sealed, &binding)?);
        }
        let key = KeyBytes::generate(&self.rng)?;
        write_private(
            path,
            &seal(&resource_key, key.expose(), &binding, &self.rng)?,
        )?;
        Ok(key)
    }

    /// Re-wraps every resource key under `new_master` and makes it this ring's
    /// master. No data is rewritten: the cost grows with the number of
    /// resources, not with their size. Afterwards the old master key opens nothing.
    pub fn rotate_master(&mut self, new_master: Box<dyn MasterKey>) -> Result<usize, KeyError> {
        let files = self.resource_key_files()?;
        // Unwrap everything first, so a failure leaves the directory untouched.
        let mut rewrapped = Vec::with_capacity(files.len());
        for path in &files {
            let (resource, wrapped) = read_resource_file(path)?;
            let key = self.master.unwrap(&wrapped, &resource, "resource-key")?;
            let new_wrapped = new_master.wrap(&key, &resource, "resource-key")?;
            rewrapped.push((path.clone(), resource_file(&resource, &new_wrapped)));
        }
        for (path, bytes) in &rewrapped {
            write_private(path, bytes)?;
        }
        write_private(
            &self.dir.join(CHECK_FILE),
            &key_check_value(new_master.as_ref())?,
        )?;
        self.master = new_master;
        Ok(rewrapped.len())
    }

    /// Replaces `resource`'s key and re-seals its database keys (the files in
    /// `database_key_files`) under the new one. The data is not rewritten.
    pub fn rotate_resource_key(
        &self,
        resource: &str,
        database_key_files: &[&Path],
    ) -> Result<(), KeyError> {
        let old = self.resource_key(resource)?;
        let new = KeyBytes::generate(&self.rng)?;
        let binding = Binding {
            key_id: resource,
            resource,
            purpose: "database-key",
        };
        let mut resealed = Vec::new();
        for path in database_key_files {
            let sealed = std::fs::read(path).map_err(|source| KeyError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let db_key = open(&old, &sealed, &binding)?;
            resealed.push((
                path.to_path_buf(),
                seal(&new, &db_key, &binding, &self.rng)?,
            ));
        }
        let wrapped = self.master.wrap(&new, resource, "resource-key")?;
        for (path, bytes) in &resealed {
            write_private(path, bytes)?;
        }
        write_private(&self.file_for(resource), &resource_file(resource, &wrapped))?;
        Ok(())
    }
}

fn resource_file(resource: &str, wrapped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + resource.len() + wrapped.len());
    out.extend_from_slice(b"moat-rkey-v1\n");
    out.extend_from_slice(&(resource.len() as u32).to_be_bytes());
    out.extend_from_slice(resource.as_bytes());
    out.extend_from_slice(wrapped);
    out
}

fn read_resource_file(path: &Path) -> Result<(String, Vec<u8>), KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let rest = bytes
        .strip_prefix(b"moat-rkey-v1\n")
        .ok_or(KeyError::Unwrap)?;
    if rest.len() < 4 {
        return Err(KeyError::Unwrap);
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let name = rest.get(4..4 + len).ok_or(KeyError::Unwrap)?;
    let resource = String::from_utf8(name.to_vec()).map_err(|_| KeyError::Unwrap)?;
    Ok((resource, rest[4 + len..].to_vec()))
}

/// Writes a file only its owner can read, atomically (temporary file, sync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod ring_tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-keyring-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn soft() -> Box<dyn MasterKey> {
        Box::new(SoftwareMasterKey::new(
            "software",
            KeyBytes::generate(&SystemRandom::new()).unwrap(),
        ))
    }

    #[test]
    fn rotation_rewraps_and_retires_the_old_master() {
        let dir = temp("rotate");
        let old_key = KeyBytes::generate(&SystemRandom::new()).unwrap();
        let mut ring = KeyRing::open(
            &dir,
            Box::new(SoftwareMasterKey::new("software", old_key.clone())),
        )
        .unwrap();
        let db_file = dir.join("t.dbkey");
        let db_key = ring.database_key("arn:t", &db_file).unwrap();
        let rk = ring.resource_key("arn:t").unwrap();
        let new_key = KeyBytes::generate(&SystemRandom::new()).unwrap();
        assert_eq!(
            ring.rotate_master(Box::new(SoftwareMasterKey::new(
                "software",
                new_key.clone()
            )))
            .unwrap(),
            1
        );
        assert_eq!(ring.resource_key("arn:t").unwrap(), rk);
        assert_eq!(ring.database_key("arn:t", &db_file).unwrap(), db_key);
        drop(ring);
        assert!(
            KeyRing::open(&dir, Box::new(SoftwareMasterKey::new("software", old_key))).is_err()
        );
        let ring =
            KeyRing::open(&dir, Box::new(SoftwareMasterKey::new("software", new_key))).unwrap();
        assert_eq!(ring.database_key("arn:t", &db_file).unwrap(), db_key);
        ring.rotate_resource_key("arn:t", &[&db_file]).unwrap();
        assert_ne!(ring.resource_key("arn:t").unwrap(), rk);
        assert_eq!(ring.database_key("arn:t", &db_file).unwrap(), db_key);
        assert!(KeyRing::open(&dir, soft()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
