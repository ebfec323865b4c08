//! On-demand and scheduled backups in the object store.
//!
//! A backup is a manifest and a list of chunks. The table's items, read in
//! storage order from a consistent snapshot, are cut into chunks where an
//! item key's hash says so (about 64 items a chunk, at most 1 MiB), so the
//! boundaries depend on the keys alone: a change touches only the chunk
//! holding it. A chunk's object name is a keyed hash of its content, and the
//! backups of one table share a *set* of chunks under one data key: a second
//! backup stores only the chunks that changed (incremental), while its
//! manifest still lists every chunk (a complete restore). A full backup
//! starts a new set.
//!
//! Every object is sealed (AES-256-GCM) under its set's data key, bound to
//! its own object name. The data key, wrapped by the master key, is an
//! object of the set itself (`moat-data-key`), so a backup restores
//! wherever the master key is, and rotating the master key re-wraps those
//! few objects only.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::PathBuf;

use moat_keys::{Binding, KeyBytes};
use moat_objects::ObjectStore;
use moat_store::Db;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::tables::{DdbError, DdbErrorKind, ItemKey, Stats, Table, TableKeys, TableMeta, Tables};
use crate::value::Item;

pub(crate) const BACKUPS: &str = "ddb-backups";
const BACKUP_SETS: &str = "ddb-backup-sets";
const PLAN_RUNS: &str = "ddb-backup-plans";
const OBJECT_MAGIC: &[u8] = b"MOATOBJ1\n";
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Items per load transaction during a restore or copy.
const LOAD_BATCH: usize = 256;

/// A stored entry: (storage key, encoded item).
type RawEntry = (Vec<u8>, Vec<u8>);
/// An item to write under its storage key (`None`: delete it).
pub(crate) type Write = (Vec<u8>, Option<Item>);

fn internal(e: impl std::fmt::Display) -> DdbError {
    DdbError::new(DdbErrorKind::Internal, e.to_string())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A backup, as the catalog lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupMeta {
    pub arn: String,
    pub name: String,
    pub id: String,
    pub region: String,
    pub created: f64,
    pub size_bytes: i64,
    pub item_count: i64,
    pub table: TableMeta,
    /// `USER` (CreateBackup) or `AWS_BACKUP` (a backup plan's run).
    #[serde(default = "user_type")]
    pub backup_type: String,
    /// The chunk set the backup's objects are in.
    #[serde(default)]
    pub set: String,
    /// Bytes this backup added to the object store (what was new).
    #[serde(default)]
    pub stored_bytes: u64,
}

fn user_type() -> String {
    "USER".to_owned()
}

/// A data key: raw for this process; wrapped by the master key in its key
/// object, which every object it seals names.
pub(crate) struct DataKey {
    raw: KeyBytes,
    /// The key object's name.
    object: String,
}

/// The name every key object ends in.
pub const KEY_OBJECT: &str = "moat-data-key";

#[derive(Serialize, Deserialize)]
struct SetRecord {
    set: String,
}

/// A key object: the data key wrapped by the master key for `resource`.
#[derive(Serialize, Deserialize)]
struct KeyObject {
    resource: String,
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
struct ObjectHeader {
    /// The key object of the data key that sealed the object.
    k: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub backup: BackupMeta,
    pub chunks: Vec<String>,
}

/// The state a plan keeps between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanState {
    pub last_run: f64,
    pub last_backup: Option<String>,
    pub runs: u64,
    #[serde(default)]
    pub failures: u64,
}

/// A scheduled backup, set in Moat's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupPlan {
    pub name: String,
    pub region: String,
    pub table: String,
    /// Seconds between runs.
    pub every_secs: u64,
    /// `incremental` (the default) or `full`.
    #[serde(default = "incremental")]
    pub kind: String,
    /// How many of the plan's backups are kept (the newest).
    #[serde(default = "default_retain")]
    pub retain: usize,
    /// Keep a copy of the table here, brought up to date by each run with
    /// only what changed since the last.
    pub copy_to_region: Option<String>,
    pub copy_to_table: Option<String>,
}

fn incremental() -> String {
    "incremental".to_owned()
}

fn default_retain() -> usize {
    7
}

/// Opens sealed objects, unwrapping each distinct data key once.
pub struct Opener<'a> {
    unwrapper: &'a dyn TableKeys,
    store: &'a dyn ObjectStore,
    keys: HashMap<String, KeyBytes>,
}

impl<'a> Opener<'a> {
    pub(crate) fn new(tables: &'a Tables) -> Opener<'a> {
        Opener::with_keys(tables.keys.as_ref(), tables.objects.as_ref())
    }

    pub fn with_keys(unwrapper: &'a dyn TableKeys, store: &'a dyn ObjectStore) -> Opener<'a> {
        Opener {
            unwrapper,
            store,
            keys: HashMap::new(),
        }
    }

    fn key(&mut self, key_object: &str) -> Result<KeyBytes, String> {
        if let Some(k) = self.keys.get(key_object) {
            return Ok(k.clone());
        }
        let bytes = self
            .store
            .get(key_object)
            .map_err(|e| e.to_string())?
            .ok_or("its data key object is missing")?;
        let record: KeyObject =
            serde_json::from_slice(&bytes).map_err(|_| "a damaged data key object")?;
        let wrapped = unhex(&record.wrapped).ok_or("a damaged data key object")?;
        let raw = self
            .unwrapper
            .open_data_key(&record.resource, &wrapped)
            .map_err(|_| "its data key does not open under this master key")?;
        let key = KeyBytes::from_slice(&raw).map_err(|e| e.to_string())?;
        self.keys.insert(key_object.to_owned(), key.clone());
        Ok(key)
    }

    /// The plaintext of an object [`Tables::seal_object`] made for `object_key`.
    pub fn open(&mut self, object_key: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let rest = bytes
            .strip_prefix(OBJECT_MAGIC)
            .ok_or("not a Moat object")?;
        let len = rest.get(..2).ok_or("truncated")?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let header: ObjectHeader = serde_json::from_slice(rest.get(2..2 + len).ok_or("truncated")?)
            .map_err(|_| "a damaged header")?;
        let key = self.key(&header.k)?;
        let binding = Binding {
            key_id: &header.k,
            resource: object_key,
            purpose: "object",
        };
        moat_keys::open(&key, &rest[2 + len..], &binding)
            .map_err(|_| "its content does not authenticate".to_owned())
    }
}

pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(OBJECT_MAGIC)
}

/// A temporary store that removes its files when dropped.
pub(crate) struct TempDb {
    pub db: Db,
    path: PathBuf,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Every entry of a tree in key order, read 512 at a time.
pub(crate) fn for_each_entry(
    db: &Db,
    tree: &str,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), DdbError>,
) -> Result<(), DdbError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let lower = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = db.scan(tree, lower, Bound::Unbounded, 512)?;
        let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
            return Ok(());
        };
        for (k, v) in &chunk {
            visit(k, v)?;
        }
        after = Some(last);
    }
}

/// Cuts items into content-named chunks and stores the ones the set lacks.
struct ChunkWriter<'a> {
    tables: &'a Tables,
    key: &'a DataKey,
    prefix: String,
    name_key: ring::hmac::Key,
    present: HashSet<String>,
    buf: Vec<u8>,
    names: Vec<String>,
    written: u64,
}

impl<'a> ChunkWriter<'a> {
    fn new(tables: &'a Tables, set: &str, key: &'a DataKey) -> Result<ChunkWriter<'a>, DdbError> {
        let prefix = format!("dynamodb/backups/{set}/chunks/");
        let present = tables
            .objects
            .list(&prefix)
            .map_err(internal)?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.raw.expose());
        let name_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            ring::hmac::sign(&derive, b"moat-backup-chunk-names").as_ref(),
        );
        Ok(ChunkWriter {
            tables,
            key,
            prefix,
            name_key,
            present,
            buf: Vec::new(),
            names: Vec::new(),
            written: 0,
        })
    }

    /// A chunk ends after an item whose key hashes to a boundary: the same
    /// keys always cut the same chunks.
    fn boundary(storage_key: &[u8]) -> bool {
        ring::digest::digest(&ring::digest::SHA256, storage_key).as_ref()[0] & 0x3f == 0
    }

    fn add(&mut self, storage_key: &[u8], value: &[u8]) -> Result<(), DdbError> {
        self.buf
            .extend_from_slice(&(storage_key.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(storage_key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(value);
        if Self::boundary(storage_key) || self.buf.len() >= MAX_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DdbError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let name = hex(&ring::hmac::sign(&self.name_key, &self.buf).as_ref()[..16]);
        if !self.present.contains(&name) {
            let object_key = format!("{}{name}", self.prefix);
            let sealed = self.tables.seal_object(self.key, &object_key, &self.buf)?;
            self.tables
                .objects
                .put(&object_key, &sealed)
                .map_err(internal)?;
            self.written += sealed.len() as u64;
            self.present.insert(name.clone());
        }
        self.names.push(name);
        self.buf.clear();
        Ok(())
    }
}

/// The (storage key, encoded item) pairs of a chunk's plaintext.
fn chunk_entries(plain: &[u8]) -> Result<Vec<RawEntry>, String> {
    let mut out = Vec::new();
    let mut rest = plain;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        let len = rest.get(..4).ok_or("a truncated chunk")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let bytes = rest.get(4..4 + len).ok_or("a truncated chunk")?.to_vec();
        *rest = &rest[4 + len..];
        Ok(bytes)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Ok(out)
}

impl Table {
    /// Writes items (`None`: deletes them) in transactions of 256, keeping
    /// the indexes, counts and collections as single writes do.
    pub(crate) fn load(&self, batch: &[Write]) -> Result<(), DdbError> {
        for part in batch.chunks(LOAD_BATCH) {
            self.db().transaction(|tx| {
                for (storage, item) in part {
                    let key = ItemKey {
                        storage: storage.clone(),
                        attributes: Item::new(),
                    };
                    let old = self.read_in(tx, &key)?;
                    self.apply_in(tx, &key, old.as_ref(), item.as_ref())?;
                }
                Ok::<(), DdbError>(())
            })?;
        }
        Ok(())
    }
}

impl Tables {
    /// A new data key of `resource`, stored wrapped by the master key in
    /// the key object `dir/moat-data-key`.
    pub(crate) fn new_data_key(&self, resource: &str, dir: &str) -> Result<DataKey, DdbError> {
        let (raw, wrapped) = self.keys.new_data_key(resource).map_err(internal)?;
        let object = format!("{dir}/{KEY_OBJECT}");
        let record = KeyObject {
            resource: resource.to_owned(),
            wrapped: hex(&wrapped),
        };
        self.objects
            .put(&object, &serde_json::to_vec(&record).map_err(internal)?)
            .map_err(internal)?;
        Ok(DataKey {
            raw: KeyBytes::from_slice(&raw).map_err(internal)?,
            object,
        })
    }

    /// The data key of the key object `object`.
    fn data_key(&self, object: &str) -> Result<DataKey, DdbError> {
        let raw = Opener::new(self).key(object).map_err(internal)?;
        Ok(DataKey {
            raw,
            object: object.to_owned(),
        })
    }

    /// `magic | header length | header | sealed plaintext`, bound to `object_key`.
    pub(crate) fn seal_object(
        &self,
        key: &DataKey,
        object_key: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, DdbError> {
        let header = serde_json::to_vec(&ObjectHeader {
            k: key.object.clone(),
        })
        .map_err(internal)?;
        let binding = Binding {
            key_id: &key.object,
            resource: object_key,
            purpose: "object",
        };
        let sealed = moat_keys::seal(&key.raw, plaintext, &binding, &SystemRandom::new())
            .map_err(internal)?;
        let mut out = Vec::with_capacity(OBJECT_MAGIC.len() + 2 + header.len() + sealed.len());
        out.extend_from_slice(OBJECT_MAGIC);
        out.extend_from_slice(&(header.len() as u16).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// A consistent copy of a table's store, in a temporary file under a
    /// key that lives only in memory.
    pub(crate) fn temp_copy(&self, db: &Db, tag: &str) -> Result<TempDb, DdbError> {
        let dir = self.dir.join("tmp");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 8];
        let rng = SystemRandom::new();
        rng.fill(&mut key).map_err(|_| internal("no randomness"))?;
        rng.fill(&mut nonce)
            .map_err(|_| internal("no randomness"))?;
        let path = dir.join(format!("{tag}-{}.db", hex(&nonce)));
        db.snapshot_to(&path, &key)?;
        let copy = TempDb {
            db: Db::open(&path, &key)?,
            path,
        };
        Ok(copy)
    }

    /// The set a new backup of `table` goes into: the table's current one,
    /// or a new one (a full backup, or the first).
    fn backup_set(&self, table: &TableMeta, full: bool) -> Result<(String, DataKey), DdbError> {
        if !full {
            if let Some(bytes) = self.catalog.get(BACKUP_SETS, table.arn.as_bytes())? {
                let record: SetRecord = serde_json::from_slice(&bytes).map_err(internal)?;
                let key =
                    self.data_key(&format!("dynamodb/backups/{}/{KEY_OBJECT}", record.set))?;
                return Ok((record.set, key));
            }
        }
        let set = format!("{}-{}", table.id, crate::tables::now_micros());
        let key = self.new_data_key(
            // Ids, not names: key objects are readable metadata.
            &format!("moat:dynamodb:backup-set/{set}"),
            &format!("dynamodb/backups/{set}"),
        )?;
        let record = SetRecord { set: set.clone() };
        self.catalog.put(
            BACKUP_SETS,
            table.arn.as_bytes(),
            &serde_json::to_vec(&record).map_err(internal)?,
        )?;
        Ok((set, key))
    }

    fn manifest_key(set: &str, id: &str) -> String {
        format!("dynamodb/backups/{set}/manifests/{id}")
    }

    /// Backs the table up while writes go on (from a snapshot taken on a
    /// connection of its own), storing only the chunks its set lacks.
    #[allow(clippy::too_many_arguments)]
    pub fn create_backup(
        &self,
        region: &str,
        table_name: &str,
        backup_name: &str,
        id: &str,
        now: f64,
        backup_type: &str,
        full: bool,
    ) -> Result<BackupMeta, DdbError> {
        let _guard = self.backup_lock.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.table(region, table_name)?;
        let (set, key) = self.backup_set(&table.meta, full)?;
        let copy = self.temp_copy(table.db(), "backup")?;
        let stats: Stats = match copy.db.get(crate::tables::STATS, b"stats")? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Stats::default(),
        };
        let mut writer = ChunkWriter::new(self, &set, &key)?;
        for_each_entry(&copy.db, crate::tables::ITEMS, |k, v| writer.add(k, v))?;
        writer.flush()?;
        let backup = BackupMeta {
            arn: format!("{}/backup/{id}", table.meta.arn),
            name: backup_name.to_owned(),
            id: id.to_owned(),
            region: region.to_owned(),
            created: now,
            size_bytes: stats.bytes,
            item_count: stats.items,
            table: table.meta.clone(),
            backup_type: backup_type.to_owned(),
            set: set.clone(),
            stored_bytes: writer.written,
        };
        let manifest = Manifest {
            backup: backup.clone(),
            chunks: std::mem::take(&mut writer.names),
        };
        let manifest_key = Self::manifest_key(&set, id);
        let sealed = self.seal_object(
            &key,
            &manifest_key,
            &serde_json::to_vec(&manifest).map_err(internal)?,
        )?;
        self.objects.put(&manifest_key, &sealed).map_err(internal)?;
        let backup = BackupMeta {
            stored_bytes: backup.stored_bytes + sealed.len() as u64,
            ..backup
        };
        self.catalog.put(
            BACKUPS,
            backup.arn.as_bytes(),
            &serde_json::to_vec(&backup).map_err(internal)?,
        )?;
        Ok(backup)
    }

    pub fn backup(&self, arn: &str) -> Result<BackupMeta, DdbError> {
        self.record(BACKUPS, arn, DdbErrorKind::BackupNotFound, "Backup")
    }

    /// Every backup, oldest first.
    pub fn backups(&self) -> Result<Vec<BackupMeta>, DdbError> {
        let mut out: Vec<BackupMeta> = self.records(BACKUPS)?;
        out.sort_by(|a, b| {
            a.created
                .total_cmp(&b.created)
                .then_with(|| a.arn.cmp(&b.arn))
        });
        Ok(out)
    }

    /// A record of the catalog tree `tree`, kept under its ARN.
    pub(crate) fn record<T: serde::de::DeserializeOwned>(
        &self,
        tree: &str,
        arn: &str,
        missing: DdbErrorKind,
        what: &str,
    ) -> Result<T, DdbError> {
        let bytes = self
            .catalog
            .get(tree, arn.as_bytes())?
            .ok_or_else(|| DdbError::new(missing, format!("{what} not found: {arn}")))?;
        serde_json::from_slice(&bytes).map_err(internal)
    }

    /// Every record of the catalog tree `tree` (unreadable ones skipped).
    pub(crate) fn records<T: serde::de::DeserializeOwned>(
        &self,
        tree: &str,
    ) -> Result<Vec<T>, DdbError> {
        Ok(self
            .catalog
            .scan(tree, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    fn read_manifest(
        &self,
        opener: &mut Opener<'_>,
        set: &str,
        id: &str,
    ) -> Result<Manifest, String> {
        let key = Self::manifest_key(set, id);
        let bytes = self
            .objects
            .get(&key)
            .map_err(|e| e.to_string())?
            .ok_or("its manifest is missing")?;
        let plain = opener.open(&key, &bytes)?;
        serde_json::from_slice(&plain).map_err(|_| "a damaged manifest".to_owned())
    }

    fn read_chunk(
        &self,
        opener: &mut Opener<'_>,
        set: &str,
        name: &str,
    ) -> Result<Vec<RawEntry>, String> {
        let key = format!("dynamodb/backups/{set}/chunks/{name}");
        let bytes = self
            .objects
            .get(&key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("chunk {name} is missing"))?;
        chunk_entries(&opener.open(&key, &bytes)?)
    }

    /// Deletes a backup and every chunk no other backup of its set lists.
    pub fn delete_backup(&self, arn: &str) -> Result<BackupMeta, DdbError> {
        let _guard = self.backup_lock.lock().unwrap_or_else(|p| p.into_inner());
        let backup = self.backup(arn)?;
        if backup.set.is_empty() {
            // Made by a Moat before backups lived in the object store: a
            // snapshot file beside the catalog.
            self.catalog.delete(BACKUPS, arn.as_bytes())?;
            let dir = self.dir.join("backups");
            for name in [format!("{}.db", backup.id), format!("{}.dbkey", backup.id)] {
                let _ = std::fs::remove_file(dir.join(name));
            }
            return Ok(backup);
        }
        // The manifest first: if that fails, the backup is still whole and
        // the call can be retried.
        self.objects
            .delete(&Self::manifest_key(&backup.set, &backup.id))
            .map_err(internal)?;
        self.catalog.delete(BACKUPS, arn.as_bytes())?;
        // The backup is gone; chunks left by a failed collection go with
        // the next deletion in the set.
        if let Err(e) = self.collect_garbage(&backup) {
            tracing::warn!(backup = %arn, error = %e, "backup chunks not collected");
        }
        Ok(backup)
    }

    fn collect_garbage(&self, deleted: &BackupMeta) -> Result<(), DdbError> {
        let set = &deleted.set;
        let mut opener = Opener::new(self);
        let mut live = HashSet::new();
        let manifests = self
            .objects
            .list(&format!("dynamodb/backups/{set}/manifests/"))
            .map_err(internal)?;
        for key in &manifests {
            let id = key.rsplit('/').next().unwrap_or_default();
            // A manifest that cannot be read keeps every chunk: deleting
            // data on a guess is worse than keeping some too long.
            let manifest = self.read_manifest(&mut opener, set, id).map_err(|e| {
                internal(format!("backup set {set}: manifest {id} unreadable: {e}"))
            })?;
            live.extend(manifest.chunks);
        }
        let prefix = format!("dynamodb/backups/{set}/chunks/");
        for key in self.objects.list(&prefix).map_err(internal)? {
            let name = key.strip_prefix(&prefix).unwrap_or_default();
            if !live.contains(name) {
                self.objects.delete(&key).map_err(internal)?;
            }
        }
        if manifests.is_empty() {
            // The set's key goes with its last backup.
            self.objects
                .delete(&format!("dynamodb/backups/{set}/{KEY_OBJECT}"))
                .map_err(internal)?;
            let current = self
                .catalog
                .get(BACKUP_SETS, deleted.table.arn.as_bytes())?;
            if let Some(record) = current.and_then(|b| serde_json::from_slice::<SetRecord>(&b).ok())
            {
                if &record.set == set {
                    self.catalog
                        .delete(BACKUP_SETS, deleted.table.arn.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Creates `target` (a new table, possibly in another region) with the
    /// backup's items, rebuilding its indexes. Every object is read and
    /// authenticated before anything is created: a damaged backup is refused.
    pub fn restore_backup(&self, arn: &str, target: TableMeta) -> Result<TableMeta, DdbError> {
        let backup = self.backup(arn)?;
        if backup.set.is_empty() {
            return Err(DdbError::validation(format!(
                "The backup {arn} was made by an earlier version of Moat, whose backups this version does not restore"
            )));
        }
        let corrupt = |why: String| {
            DdbError::new(
                DdbErrorKind::Internal,
                format!("The backup {arn} is corrupt and cannot be restored: {why}."),
            )
        };
        let mut opener = Opener::new(self);
        let manifest = self
            .read_manifest(&mut opener, &backup.set, &backup.id)
            .map_err(corrupt)?;
        for name in &manifest.chunks {
            self.read_chunk(&mut opener, &backup.set, name)
                .map_err(corrupt)?;
        }
        let mut target = target;
        for index in &mut target.indexes {
            index.backfilling = false;
        }
        let meta = self.create(target)?;
        let loaded = (|| {
            let table = self.table(&meta.region, &meta.name)?;
            for name in &manifest.chunks {
                let entries = self
                    .read_chunk(&mut opener, &backup.set, name)
                    .map_err(corrupt)?;
                table.load(&decode_entries(entries)?)?;
            }
            Ok::<(), DdbError>(())
        })();
        if let Err(e) = loaded {
            let _ = self.delete(&meta.region, &meta.name);
            return Err(e);
        }
        Ok(meta)
    }

    /// One run of a backup plan: a backup (incremental unless the plan says
    /// full), the copy brought up to date, and the plan's oldest backups
    /// beyond its retention deleted. Returns the new backup.
    pub fn run_plan(&self, plan: &BackupPlan, id: &str, now: f64) -> Result<BackupMeta, DdbError> {
        let mut state: PlanState = self
            .catalog
            .get(PLAN_RUNS, plan.name.as_bytes())?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let result = (|| {
            let backup = self.create_backup(
                &plan.region,
                &plan.table,
                &format!("{}-{}", plan.name, state.runs + 1),
                id,
                now,
                "AWS_BACKUP",
                plan.kind == "full",
            )?;
            if let (Some(region), Some(name)) = (&plan.copy_to_region, &plan.copy_to_table) {
                let previous = state
                    .last_backup
                    .as_deref()
                    .and_then(|a| self.backup(a).ok());
                self.sync_copy(previous.as_ref(), &backup, region, name)?;
            }
            Ok::<BackupMeta, DdbError>(backup)
        })();
        // A failed run waits for the next period too, rather than retrying
        // every second.
        state.last_run = now;
        match &result {
            Ok(backup) => {
                state.last_backup = Some(backup.arn.clone());
                state.runs += 1;
            }
            Err(_) => {
                state.failures += 1;
                // A copy that failed half-way may hold items neither backup
                // lists: the next run compares the whole copy.
                state.last_backup = None;
            }
        }
        self.catalog.put(
            PLAN_RUNS,
            plan.name.as_bytes(),
            &serde_json::to_vec(&state).map_err(internal)?,
        )?;
        let backup = result?;
        let prefix = format!("{}-", plan.name);
        let mine: Vec<BackupMeta> = self
            .backups()?
            .into_iter()
            .filter(|b| {
                b.backup_type == "AWS_BACKUP"
                    && b.table.arn == backup.table.arn
                    && b.name
                        .strip_prefix(&prefix)
                        .is_some_and(|n| n.parse::<u64>().is_ok())
            })
            .collect();
        let excess = mine.len().saturating_sub(plan.retain.max(1));
        for old in &mine[..excess] {
            self.delete_backup(&old.arn)?;
        }
        Ok(backup)
    }

    /// When a plan last ran, if ever.
    pub fn plan_state(&self, name: &str) -> Result<Option<PlanState>, DdbError> {
        Ok(self
            .catalog
            .get(PLAN_RUNS, name.as_bytes())?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Brings the copy table up to date with `backup`. With the previous
    /// run's backup in the same set, only the chunks that differ are read:
    /// items of vanished chunks that no new chunk holds are deleted, and
    /// the items of new chunks written.
    fn sync_copy(
        &self,
        previous: Option<&BackupMeta>,
        backup: &BackupMeta,
        region: &str,
        name: &str,
    ) -> Result<(), DdbError> {
        if self.meta(region, name).is_err() {
            let mut target = backup.table.clone();
            target.name = name.to_owned();
            target.region = region.to_owned();
            target.id = format!("{}-copy-{}", backup.table.id, backup.id);
            target.arn = format!(
                "arn:aws:dynamodb:{region}:{}:table/{name}",
                backup.table.arn.split(':').nth(4).unwrap_or_default()
            );
            target.pitr = None;
            target.tags = Vec::new();
            target.deletion_protection = false;
            self.restore_backup(&backup.arn, target)?;
            return Ok(());
        }
        let mut opener = Opener::new(self);
        let fail = |e: String| internal(format!("the copy of {} failed: {e}", backup.table.name));
        let new = self
            .read_manifest(&mut opener, &backup.set, &backup.id)
            .map_err(fail)?;
        let old_chunks: HashSet<String> = match previous.filter(|p| p.set == backup.set) {
            Some(p) => self
                .read_manifest(&mut opener, &p.set, &p.id)
                .map_err(fail)?
                .chunks
                .into_iter()
                .collect(),
            None => HashSet::new(),
        };
        let new_chunks: HashSet<&String> = new.chunks.iter().collect();
        let mut writes: Vec<Write> = Vec::new();
        let mut written: HashSet<Vec<u8>> = HashSet::new();
        for name in new.chunks.iter().filter(|c| !old_chunks.contains(*c)) {
            let entries = self
                .read_chunk(&mut opener, &backup.set, name)
                .map_err(fail)?;
            for (k, item) in decode_entries(entries)? {
                written.insert(k.clone());
                writes.push((k, item));
            }
        }
        let table = self.table(region, name)?;
        if previous.is_none_or(|p| p.set != backup.set) {
            // No previous state to compare with: whatever the copy holds
            // that the backup lacks goes.
            let mut stale = Vec::new();
            for_each_entry(table.db(), crate::tables::ITEMS, |k, _| {
                if !written.contains(k) {
                    stale.push((k.to_vec(), None));
                }
                Ok(())
            })?;
            writes.extend(stale);
        } else {
            for gone in old_chunks.iter().filter(|c| !new_chunks.contains(c)) {
                for (k, _) in self
                    .read_chunk(&mut opener, &backup.set, gone)
                    .map_err(fail)?
                {
                    if !written.contains(&k) {
                        writes.push((k, None));
                    }
                }
            }
        }
        table.load(&writes)
    }
}

fn decode_entries(entries: Vec<RawEntry>) -> Result<Vec<Write>, DdbError> {
    entries
        .into_iter()
        .map(|(k, v)| Ok((k, Some(Table::decode(&v)?))))
        .collect()
}

/// Keeps a plan's schedule: which plans are due at `now`.
pub fn due_plans<'p>(tables: &Tables, plans: &'p [BackupPlan], now: f64) -> Vec<&'p BackupPlan> {
    plans
        .iter()
        .filter(|p| match tables.plan_state(&p.name) {
            Ok(Some(state)) => now - state.last_run >= p.every_secs as f64,
            Ok(None) => true,
            Err(_) => false,
        })
        .collect()
}

/// Re-wraps every key object in `store` (master key rotation): `rewrap`
/// takes (resource, wrapped key) and returns the key wrapped anew, or
/// `None` when it is already under the new master key. Returns how many
/// were re-wrapped.
pub fn rewrap_key_objects(
    store: &dyn ObjectStore,
    rewrap: impl Fn(&str, &[u8]) -> Result<Option<Vec<u8>>, String>,
) -> Result<usize, String> {
    let mut count = 0;
    for name in store.list("").map_err(|e| e.to_string())? {
        if name.rsplit('/').next() != Some(KEY_OBJECT) {
            continue;
        }
        let Some(bytes) = store.get(&name).map_err(|e| e.to_string())? else {
            continue;
        };
        let record: KeyObject =
            serde_json::from_slice(&bytes).map_err(|_| format!("{name} is damaged"))?;
        let wrapped = unhex(&record.wrapped).ok_or_else(|| format!("{name} is damaged"))?;
        if let Some(new) = rewrap(&record.resource, &wrapped).map_err(|e| format!("{name}: {e}"))? {
            let record = KeyObject {
                resource: record.resource,
                wrapped: hex(&new),
            };
            let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            store.put(&name, &bytes).map_err(|e| e.to_string())?;
            count += 1;
        }
    }
    Ok(count)
}
