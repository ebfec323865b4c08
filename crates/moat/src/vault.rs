//! Opening the key hierarchy and Moat's own encrypted store at start, and
//! rotating the master key.

use std::path::Path;
use std::sync::Arc;

use moat_keys::{KeyRing, MasterKey, Pkcs11Config, Pkcs11MasterKey, SoftwareMasterKey};

use crate::config::Pkcs11Settings;
use moat_store::Db;

/// The resource whose keys protect Moat's own state.
pub const SYSTEM_RESOURCE: &str = "moat:system";

/// Where the master key comes from, in order: `MOAT_MASTER_KEY` (64 hex
/// characters), a PKCS#11 HSM (`[master_key_pkcs11]`, where the key is
/// generated in the token on the first start of a new data directory), the
/// configured key file, or `DATA_DIR/keys/master.key`, which is created on
/// the first start of a new data directory only.
pub fn load_master(
    data_dir: &Path,
    configured_file: Option<&Path>,
    pkcs11: Option<&Pkcs11Settings>,
) -> Result<Box<dyn MasterKey>, String> {
    if let Ok(hex) = std::env::var("MOAT_MASTER_KEY") {
        if !hex.is_empty() {
            return SoftwareMasterKey::from_hex(&hex)
                .map(|k| Box::new(k) as Box<dyn MasterKey>)
                .map_err(|e| format!("MOAT_MASTER_KEY: {e}"));
        }
    }
    let keys_dir = data_dir.join("keys");
    if let Some(hsm) = pkcs11 {
        let pin = std::env::var("MOAT_PKCS11_PIN")
            .map_err(|_| "the HSM's user PIN must be given in MOAT_PKCS11_PIN".to_owned())?;
        let config = Pkcs11Config {
            module: hsm.module.clone(),
            token_label: hsm.token_label.clone(),
            pin,
            key_label: hsm.key_label.clone(),
            create_key: !keys_dir.join("master.check").exists(),
        };
        return Pkcs11MasterKey::open(&config)
            .map(|k| Box::new(k) as Box<dyn MasterKey>)
            .map_err(|e| format!("cannot use the HSM master key: {e}"));
    }
    let (path, create) = match configured_file {
        Some(p) => (p.to_owned(), false),
        None => (
            keys_dir.join("master.key"),
            !keys_dir.join("master.check").exists(),
        ),
    };
    if create {
        for dir in [data_dir, keys_dir.as_path()] {
            moat_edge::audit::create_private_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    SoftwareMasterKey::from_file(&path, create)
        .map(|k| Box::new(k) as Box<dyn MasterKey>)
        .map_err(|e| format!("cannot load the master key: {e}"))
}

/// Opens the key ring and the system store of a data directory.
pub fn open(data_dir: &Path, master: Box<dyn MasterKey>) -> Result<(KeyRing, Arc<Db>), String> {
    let keys_dir = data_dir.join("keys");
    let state_dir = data_dir.join("state");
    for dir in [data_dir, keys_dir.as_path(), state_dir.as_path()] {
        moat_edge::audit::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let ring = KeyRing::open(&keys_dir, master).map_err(|e| e.to_string())?;
    let db_key = ring
        .database_key(SYSTEM_RESOURCE, &state_dir.join("system.dbkey"))
        .map_err(|e| format!("cannot unwrap the system store's key: {e}"))?;
    let db = Db::open(&state_dir.join("system.db"), db_key.expose()).map_err(|e| e.to_string())?;
    // Every page is authenticated on the way in; checking them all now turns a
    // damaged system store into a clear refusal to start.
    db.verify().map_err(|e| e.to_string())?;
    Ok((ring, Arc::new(db)))
}

/// `moat rotate-master-key`: re-wraps every resource key under a new master
/// key (created if its file does not exist). Moat must not be running.
///
/// The data keys of backups and exports, kept wrapped by the master key in
/// the object store, are re-wrapped first; a key already under the new
/// master key (an earlier, interrupted rotation) is left as it is.
pub fn rotate(
    data_dir: &Path,
    old_file: Option<&Path>,
    new_file: &Path,
    object_store_dir: Option<&Path>,
) -> Result<usize, String> {
    // Not under a running server: it would go on with the old master key.
    let _lock = crate::lock::lock_data_dir(data_dir)?;
    let old = load_master(data_dir, old_file, None)?;
    let (mut ring, _db) = open(data_dir, old)?;
    let new = SoftwareMasterKey::from_file(new_file, true)
        .map_err(|e| format!("the new master key: {e}"))?;
    let store = object_store(data_dir, object_store_dir)?;
    let objects =
        moat_dynamodb::backups::rewrap_key_objects(store.as_ref(), |resource, wrapped| match ring
            .unwrap_key(resource, "data-key", wrapped)
        {
            Ok(key) => new
                .wrap(&key, resource, "data-key")
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(_) if new.unwrap(wrapped, resource, "data-key").is_ok() => Ok(None),
            Err(e) => Err(e.to_string()),
        })?;
    Ok(objects
        + ring
            .rotate_master(Box::new(new))
            .map_err(|e| e.to_string())?)
}

/// The object store of a data directory: `dir` if given, else as the
/// directory's `moat.toml` says.
fn object_store(
    data_dir: &Path,
    dir: Option<&Path>,
) -> Result<Arc<dyn moat_objects::ObjectStore>, String> {
    match dir {
        Some(dir) => Ok(Arc::new(moat_objects::LocalDir::new(dir.to_owned()))),
        None => crate::config::ObjectStoreSettings::for_data_dir(data_dir)?.open(),
    }
}

/// The plaintext of an object of the object store (`moat read-object`).
pub fn read_object(
    data_dir: &Path,
    master_file: Option<&Path>,
    object_store_dir: Option<&Path>,
    key: &str,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let master = load_master(data_dir, master_file, None)?;
    let (ring, _db) = open(data_dir, master)?;
    let store = object_store(data_dir, object_store_dir)?;
    let bytes = store
        .get(key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no object {key}"))?;
    let keyring = TableKeyring(Arc::new(ring));
    let plain = if moat_dynamodb::backups::is_sealed(&bytes) {
        moat_dynamodb::backups::Opener::with_keys(&keyring, store.as_ref())
            .open(key, &bytes)
            .map_err(|e| format!("{key}: {e}"))?
    } else {
        bytes
    };
    if !key.ends_with(".gz") {
        return Ok(plain);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(plain.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| format!("{key}: not gzip: {e}"))?;
    Ok(out)
}

/// Table database keys from the key ring: each table is a resource of the
/// hierarchy, its database key sealed by the table's resource key.
pub struct TableKeyring(pub Arc<KeyRing>);

impl moat_dynamodb::tables::TableKeys for TableKeyring {
    fn database_key(&self, table_arn: &str, key_file: &Path) -> Result<[u8; 32], String> {
        self.0
            .database_key(table_arn, key_file)
            .map(|k| *k.expose())
            .map_err(|e| e.to_string())
    }
    fn new_data_key(&self, resource: &str) -> Result<([u8; 32], Vec<u8>), String> {
        self.0
            .new_wrapped_key(resource, "data-key")
            .map(|(k, w)| (*k.expose(), w))
            .map_err(|e| e.to_string())
    }

    fn open_data_key(&self, resource: &str, wrapped: &[u8]) -> Result<[u8; 32], String> {
        self.0
            .unwrap_key(resource, "data-key", wrapped)
            .map(|k| *k.expose())
            .map_err(|e| e.to_string())
    }
}
