//! A master key held in a PKCS#11 HSM.
//!
//! The key is an AES-256 secret-key object in the token, created sensitive
//! and non-extractable, and every wrap and unwrap is an AES-GCM operation the
//! token performs. Wrapping stays in the HSM because that is the point of
//! having one: the master key's bytes never enter Moat's memory, so a memory
//! dump, a core file or a compromised host yields at most the resource keys
//! in use at that moment, never the key that protects all of them, and
//! taking the HSM (or its PIN) away stops the data being opened.
//!
//! # Why AES-GCM (`CKM_AES_GCM`)
//!
//! Blobs have the same layout as [`crate::seal`]'s, `version | iv(12) |
//! ciphertext+tag(16)`, with the same associated data ([`Binding`]: key id,
//! resource, purpose), so both providers give the same guarantees: a flipped
//! byte, or a wrapped key presented for another resource or purpose, fails to
//! unwrap. `CKM_AES_KEY_WRAP_PAD` (RFC 5649) has no associated data, so the
//! binding would need a second mechanism (an HMAC key in the token) and a
//! format of its own; SoftHSM2 and the common HSMs do GCM through `C_Encrypt`
//! and `C_Decrypt`, so there is no reason to pay that.
//!
//! The 12-byte IV is drawn from the operating system's CSPRNG (ring's
//! `SystemRandom`, the source the software provider uses): an IV must be
//! unique, not secret, and this saves a round trip to the token per wrap.
//!
//! # Sessions and login
//!
//! A module is loaded and initialised once per process (PKCS#11 allows one
//! `C_Initialize` per process), and every [`Pkcs11MasterKey`] keeps one
//! session of its own behind a mutex. A PKCS#11 login belongs to the whole
//! process, not to a session, so a second key opened while the token is
//! logged in gets `CKR_USER_ALREADY_LOGGED_IN` whatever PIN it gives; this
//! module remembers a digest of the PIN that logged in and refuses another,
//! so a wrong PIN is reported the same way whether or not a login is live.
//! The PIN itself is never stored, printed or put in an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use ring::aead::NONCE_LEN;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Binding, KeyBytes, KeyError, MasterKey, FORMAT};

/// The GCM tag length, in bytes.
const TAG_LEN: usize = 16;

/// Where the master key lives in an HSM, and how to reach it.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token that holds the key.
    pub token_label: String,
    /// The user PIN of the token.
    pub pin: String,
    /// The label of the AES key object.
    pub key_label: String,
    /// Generate the key in the token when no key has `key_label`.
    pub create_key: bool,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("key_label", &self.key_label)
            .field("create_key", &self.create_key)
            .finish()
    }
}

/// A master key that is an AES-256 key object in a PKCS#11 token; wrapping
/// and unwrapping are done by the token.
pub struct Pkcs11MasterKey {
    id: String,
    token_label: String,
    key: ObjectHandle,
    session: Mutex<Session>,
    rng: SystemRandom,
}

impl fmt::Debug for Pkcs11MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A loaded, initialised module, and the PIN digest of each slot this
/// process logged in to.
struct Module {
    ctx: Pkcs11,
    logins: BTreeMap<u64, [u8; 32]>,
}

/// Every module this process loaded, by path. Modules are never finalised:
/// `C_Finalize` would end the sessions of every key opened from them.
static MODULES: Mutex<BTreeMap<PathBuf, Module>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic cannot leave a PKCS#11 single-part operation half done, so the
    // state behind a poisoned lock is still sound.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pkcs11MasterKey {
    /// Loads the module, logs in to the token and finds (or, with
    /// `create_key`, generates) the key.
    pub fn open(config: &Pkcs11Config) -> Result<Pkcs11MasterKey, KeyError> {
        let token = &config.token_label;
        let mut modules = lock(&MODULES);
        let module = load(&mut modules, &config.module)?;
        let slot = find_token(&module.ctx, token)?;
        let session = if config.create_key {
            module.ctx.open_rw_session(slot)
        } else {
            module.ctx.open_ro_session(slot)
        }
        .map_err(|e| {
            KeyError::Config(format!(
                "cannot open a session with the HSM token '{token}': {e}"
            ))
        })?;
        login(module, slot, &session, token, &config.pin)?;
        drop(modules);

        let key = find_or_create_key(&session, config)?;
        Ok(Pkcs11MasterKey {
            id: format!("pkcs11:{token}/{}", config.key_label),
            token_label: token.clone(),
            key,
            session: Mutex::new(session),
            rng: SystemRandom::new(),
        })
    }

    fn binding_aad(&self, resource: &str, purpose: &str) -> Vec<u8> {
        Binding {
            key_id: &self.id,
            resource,
            purpose,
        }
        .aad()
    }

    fn failed(&self, what: &str, e: CkError) -> KeyError {
        KeyError::Config(format!(
            "the HSM token '{}' failed to {what}: {e}",
            self.token_label
        ))
    }
}

fn load<'a>(
    modules: &'a mut BTreeMap<PathBuf, Module>,
    path: &Path,
) -> Result<&'a mut Module, KeyError> {
    let cannot = |e: &dyn fmt::Display| {
        KeyError::Config(format!(
            "the PKCS#11 module {} cannot be loaded: {e}",
            path.display()
        ))
    };
    let canonical = std::fs::canonicalize(path).map_err(|e| cannot(&e))?;
    if !modules.contains_key(&canonical) {
        let ctx = Pkcs11::new(&canonical).map_err(|e| cannot(&e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Someone else in this process initialised it; it stays usable.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(cannot(&e)),
        }
        modules.insert(
            canonical.clone(),
            Module {
                ctx,
                logins: BTreeMap::new(),
            },
        );
    }
    Ok(modules.get_mut(&canonical).expect("inserted above"))
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, KeyError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| KeyError::Config(format!("cannot list the HSM's tokens: {e}")))?;
    for slot in slots {
        // A slot whose token cannot be read is not the one asked for.
        if matches!(ctx.get_token_info(slot), Ok(info) if info.label() == label) {
            return Ok(slot);
        }
    }
    Err(KeyError::Config(format!(
        "the HSM token '{label}' is not present"
    )))
}

fn login(
    module: &mut Module,
    slot: Slot,
    session: &Session,
    token: &str,
    pin: &str,
) -> Result<(), KeyError> {
    let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, pin.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes");
    let failed = |why: &dyn fmt::Display| {
        KeyError::Config(format!("login to the HSM token '{token}' failed: {why}"))
    };
    match session.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) => {
            module.logins.insert(slot.id(), digest);
            Ok(())
        }
        // The login is the process's, made by an earlier open: accept only its PIN.
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            match module.logins.get(&slot.id()) {
                Some(known) if *known == digest => Ok(()),
                Some(_) => Err(failed(&"the PIN is incorrect")),
                None => Err(failed(
                    &"the token is already logged in by other code in this process, \
                      so the PIN cannot be checked",
                )),
            }
        }
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(failed(&"the PIN is incorrect")),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(failed(&"the user PIN is locked")),
        Err(e) => Err(failed(&e)),
    }
}

fn find_or_create_key(session: &Session, config: &Pkcs11Config) -> Result<ObjectHandle, KeyError> {
    let (token, label) = (&config.token_label, &config.key_label);
    let hsm = |what: &str, e: CkError| {
        KeyError::Config(format!("the HSM token '{token}' failed to {what}: {e}"))
    };
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|e| hsm("search for the master key", e))?;
    let key = match found[..] {
        [key] => key,
        [] if config.create_key => session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(Ulong::new(32)),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                ],
            )
            .map_err(|e| hsm("generate the master key", e))?,
        [] => {
            return Err(KeyError::Config(format!(
                "the HSM token '{token}' holds no AES key labelled '{label}' \
                 (create it, or allow Moat to create it)"
            )))
        }
        _ => {
            return Err(KeyError::Config(format!(
                "the HSM token '{token}' holds {} AES keys labelled '{label}': \
                 the master key must be the only one",
                found.len()
            )))
        }
    };
    let len = session
        .get_attributes(key, &[AttributeType::ValueLen])
        .map_err(|e| hsm("describe the master key", e))?;
    match len[..] {
        [Attribute::ValueLen(n)] if *n == 32 => Ok(key),
        _ => Err(KeyError::Config(format!(
            "the key '{label}' in the HSM token '{token}' is not an AES-256 key"
        ))),
    }
}

impl MasterKey for Pkcs11MasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &KeyBytes, resource: &str, purpose: &str) -> Result<Vec<u8>, KeyError> {
        let aad = self.binding_aad(resource, purpose);
        let mut iv = [0u8; NONCE_LEN];
        self.rng.fill(&mut iv).map_err(|_| KeyError::Random)?;
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, &aad, Ulong::new(8 * TAG_LEN as u64))
            .map_err(|e| self.failed("set up AES-GCM", e))?;
        let sealed = lock(&self.session)
            .encrypt(&Mechanism::AesGcm(params), self.key, key.expose())
            .map_err(|e| self.failed("wrap a key", e))?;
        if sealed.len() != key.expose().len() + TAG_LEN {
            return Err(KeyError::Config(format!(
                "the HSM token '{}' returned {} bytes of AES-GCM output for a 32-byte key",
                self.token_label,
                sealed.len()
            )));
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], resource: &str, purpose: &str) -> Result<KeyBytes, KeyError> {
        if wrapped.len() < 1 + NONCE_LEN + TAG_LEN || wrapped[0] != FORMAT {
            return Err(KeyError::Unwrap);
        }
        let aad = self.binding_aad(resource, purpose);
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
        let params = GcmParams::new(&mut iv, &aad, Ulong::new(8 * TAG_LEN as u64))
            .map_err(|e| self.failed("set up AES-GCM", e))?;
        let result = lock(&self.session).decrypt(
            &Mechanism::AesGcm(params),
            self.key,
            &wrapped[1 + NONCE_LEN..],
        );
        let mut plain = match result {
            Ok(plain) => plain,
            // A tag that does not verify (damage, another binding, another key).
            // SoftHSM2 reports it as CKR_GENERAL_ERROR, others as ENCRYPTED_DATA_*.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            )) => return Err(KeyError::Unwrap),
            Err(e) => return Err(self.failed("unwrap a key", e)),
        };
        let key = KeyBytes::from_slice(&plain);
        for b in plain.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a byte of `plain`.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        key
    }
}
