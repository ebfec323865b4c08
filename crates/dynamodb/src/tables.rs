//! Tables and their items: one encrypted store per table, the catalog of
//! tables in the system store.
//!
//! An item is stored under `len(pk) | key_bytes(pk) | key_bytes(sk)`, so one
//! partition's items are contiguous and ordered by sort key, and its value is
//! the item in DynamoDB's JSON form. Each write runs in one store
//! transaction: conditions are checked and the write made atomically, and
//! the call returns only once the commit is durable.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use moat_objects::ObjectStore;
use moat_store::{Db, Locked, StoreError, Tally, Tx};
use serde::{Deserialize, Serialize};

use crate::expr::SortCondition;
use crate::value::{item_from_json, item_size, item_to_json, key_bytes, AttributeValue, Item};

/// DynamoDB's largest item.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
pub const MAX_SORT_KEY_BYTES: usize = 1024;

const CATALOG: &str = "ddb-tables";
pub(crate) const ITEMS: &str = "items";
pub(crate) const STATS: &str = "stats";
/// Bytes per item collection (partition prefix -> i64), kept only for tables
/// with local indexes, where DynamoDB limits a collection to 10 GB.
const COLLECTIONS: &str = "collections";

/// DynamoDB's item-collection limit: 10 GB. `MOAT_ITEM_COLLECTION_LIMIT_BYTES`
/// lowers it, so that tests can reach it without writing 10 GB.
pub fn item_collection_limit() -> i64 {
    static LIMIT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("MOAT_ITEM_COLLECTION_LIMIT_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10 * 1024 * 1024 * 1024)
    })
}

/// Where a table's database key comes from (the key hierarchy, in the binary).
pub trait TableKeys: Send + Sync {
    fn database_key(&self, table_arn: &str, key_file: &Path) -> Result<[u8; 32], String>;
    /// A new data key of `resource`, and the same key wrapped by the master
    /// key (backups carry it, so they restore wherever the master key is).
    fn new_data_key(&self, resource: &str) -> Result<([u8; 32], Vec<u8>), String>;
    /// A key [`TableKeys::new_data_key`] wrapped, unwrapped by the master key.
    fn open_data_key(&self, resource: &str, wrapped: &[u8]) -> Result<[u8; 32], String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdbErrorKind {
    Validation,
    ResourceNotFound,
    ResourceInUse,
    ConditionalCheckFailed,
    LimitExceeded,
    BackupNotFound,
    TableAlreadyExists,
    PitrNotEnabled,
    InvalidRestoreTime,
    ItemCollectionSizeLimitExceeded,
    TransactionConflict,
    InvalidExportTime,
    ExportNotFound,
    ImportNotFound,
    ExportConflict,
    ImportConflict,
    Internal,
}

impl DdbErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            DdbErrorKind::Validation => "ValidationException",
            DdbErrorKind::ResourceNotFound => "ResourceNotFoundException",
            DdbErrorKind::ResourceInUse => "ResourceInUseException",
            DdbErrorKind::ConditionalCheckFailed => "ConditionalCheckFailedException",
            DdbErrorKind::LimitExceeded => "LimitExceededException",
            DdbErrorKind::BackupNotFound => "BackupNotFoundException",
            DdbErrorKind::TableAlreadyExists => "TableAlreadyExistsException",
            DdbErrorKind::PitrNotEnabled => "PointInTimeRecoveryUnavailableException",
            DdbErrorKind::InvalidRestoreTime => "InvalidRestoreTimeException",
            DdbErrorKind::ItemCollectionSizeLimitExceeded => {
                "ItemCollectionSizeLimitExceededException"
            }
            DdbErrorKind::TransactionConflict => "TransactionConflictException",
            DdbErrorKind::InvalidExportTime => "InvalidExportTimeException",
            DdbErrorKind::ExportNotFound => "ExportNotFoundException",
            DdbErrorKind::ImportNotFound => "ImportNotFoundException",
            DdbErrorKind::ExportConflict => "ExportConflictException",
            DdbErrorKind::ImportConflict => "ImportConflictException",
            DdbErrorKind::Internal => "InternalServerError",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            DdbErrorKind::Internal => 500,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct DdbError {
    pub kind: DdbErrorKind,
    pub message: String,
    /// The item as it was, for `ReturnValuesOnConditionCheckFailure`.
    pub old_item: Option<Item>,
}

impl DdbError {
    pub fn new(kind: DdbErrorKind, message: impl Into<String>) -> DdbError {
        DdbError {
            kind,
            message: message.into(),
            old_item: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> DdbError {
        DdbError::new(DdbErrorKind::Validation, message)
    }
}

impl From<StoreError> for DdbError {
    fn from(e: StoreError) -> DdbError {
        DdbError::new(DdbErrorKind::Internal, e.to_string())
    }
}

/// A key attribute: name and scalar type (`S`, `N` or `B`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttr {
    pub name: String,
    pub kind: String,
}

/// What the catalog keeps about a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub region: String,
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
    pub attribute_definitions: Vec<KeyAttr>,
    pub created: f64,
    pub billing_mode: String,
    pub read_capacity: i64,
    pub write_capacity: i64,
    pub deletion_protection: bool,
    pub table_class: String,
    /// `None`: Moat's owned key; `Some(arn)`: a KMS key the table names.
    pub kms_key_arn: Option<String>,
    pub tags: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
    /// Point-in-time recovery, when enabled.
    #[serde(default)]
    pub pitr: Option<Pitr>,
    /// Global and local secondary indexes.
    #[serde(default)]
    pub indexes: Vec<IndexMeta>,
}

/// A secondary index: its key, and which attributes it keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    pub name: String,
    pub global: bool,
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    pub non_key_attributes: Vec<String>,
    #[serde(default)]
    pub read_capacity: i64,
    #[serde(default)]
    pub write_capacity: i64,
    /// True while a global index added to a table with data is filled in.
    #[serde(default)]
    pub backfilling: bool,
}

impl IndexMeta {
    fn tree(&self) -> String {
        format!("idx:{}", self.name)
    }

    /// Whether the index keeps `attribute` (keys of the table and the index always).
    pub fn projects(&self, table: &TableMeta, attribute: &str) -> bool {
        self.projection == "ALL"
            || attribute == table.hash.name
            || table.range.as_ref().is_some_and(|r| r.name == attribute)
            || attribute == self.hash.name
            || self.range.as_ref().is_some_and(|r| r.name == attribute)
            || (self.projection == "INCLUDE"
                && self.non_key_attributes.iter().any(|a| a == attribute))
    }

    fn project(&self, table: &TableMeta, item: &Item) -> Item {
        item.iter()
            .filter(|(k, _)| self.projects(table, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The entry's key in the index tree: the index key, then the item's
    /// own storage key (index keys need not be unique). `None`: the item
    /// lacks an index key attribute, so the index does not hold it (sparse).
    fn entry_key(&self, item: &Item, base_key: &[u8]) -> Result<Option<Vec<u8>>, DdbError> {
        let mut out = Vec::new();
        for (i, attr) in std::iter::once(&self.hash)
            .chain(self.range.iter())
            .enumerate()
        {
            let Some(v) = item.get(&attr.name) else {
                return Ok(None);
            };
            if v.type_name() != attr.kind {
                return Err(DdbError::validation(format!(
                    "One or more parameter values were invalid: Type mismatch for Index Key {} Expected: {} Actual: {} IndexName: {}",
                    attr.name,
                    attr.kind,
                    v.type_name(),
                    self.name
                )));
            }
            let Some(encoded) = key_bytes(v) else {
                return Ok(None);
            };
            if i == 0 {
                out.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(&encoded);
        }
        out.extend_from_slice(base_key);
        Ok(Some(out))
    }
}

/// Point-in-time recovery of a table: base snapshots and, from the moment it
/// was enabled, every committed change logged in the same transaction as the
/// change itself. New bases are taken periodically, so a restore replays at
/// most one base period of changes, and what is older than the recovery
/// period is pruned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pitr {
    pub recovery_days: u32,
    /// Oldest first.
    pub bases: Vec<PitrBase>,
}

/// One base snapshot: changes logged from `logging_since` on, replayed onto
/// it, give the table at any time from `complete` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PitrBase {
    /// A file under `dynamodb/pitr/`.
    pub id: String,
    /// Microseconds since the epoch.
    pub logging_since: u64,
    pub complete: u64,
}

impl Pitr {
    /// The earliest restorable time at `now` (microseconds).
    pub fn earliest(&self, now: u64) -> u64 {
        let window = now.saturating_sub(u64::from(self.recovery_days) * 86_400 * 1_000_000);
        let first = self
            .bases
            .iter()
            .map(|b| b.complete)
            .min()
            .unwrap_or(u64::MAX);
        first.max(window)
    }
}

/// An open table.
/// Items a transaction is deciding and committing: (store path, storage key).
type InFlight = Arc<Mutex<std::collections::HashSet<(PathBuf, Vec<u8>)>>>;

pub struct Table {
    pub meta: TableMeta,
    db: Db,
    /// Shared by every table: a single write to an item held here is
    /// refused with TransactionConflictException, as in DynamoDB.
    in_flight: InFlight,
    /// The last change-log time handed out, so log keys strictly increase.
    last_logged: std::sync::atomic::AtomicU64,
}

const CHANGELOG: &str = "changelog";

/// Microseconds since the epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Item count and size, kept with the items.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub items: i64,
    pub bytes: i64,
    /// The same for each secondary index, by name, kept by every write
    /// that changes an index entry. An index missing here (one made before
    /// these were kept) is counted once, when first described.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub indexes: BTreeMap<String, IndexStats>,
}

/// An index's entry count and the size of its projected items.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub items: i64,
    pub bytes: i64,
}

impl std::ops::AddAssign for IndexStats {
    fn add_assign(&mut self, change: IndexStats) {
        self.items += change.items;
        self.bytes += change.bytes;
    }
}

/// The stored count and size. Items change them only through
/// [`StatsChange`], so read them in a transaction of its own
/// ([`Db::lock`]): a group member would not see its group's changes.
fn read_stats(tx: &Tx<'_>) -> Result<Stats, StoreError> {
    Ok(match tx.get(STATS, b"stats")? {
        Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
        None => Stats::default(),
    })
}

fn write_stats(tx: &Tx<'_>, stats: &Stats) -> Result<(), StoreError> {
    tx.put(
        STATS,
        b"stats",
        &serde_json::to_vec(stats).unwrap_or_default(),
    )
}

/// Writes' change to their table's count and size, and to each index's:
/// tallied by a group commit's members and written once per group.
#[derive(Default)]
struct StatsChange(Stats);

/// [`StatsChange`]'s name among a store's tallies.
const STATS_CHANGE: &str = "stats";

impl Tally for StatsChange {
    fn absorb(&mut self, other: &dyn std::any::Any) {
        if let Some(StatsChange(other)) = other.downcast_ref::<StatsChange>() {
            self.0.items += other.items;
            self.0.bytes += other.bytes;
            for (name, change) in &other.indexes {
                *self.0.indexes.entry(name.clone()).or_default() += *change;
            }
        }
    }

    fn write(&self, tx: &Tx<'_>) -> Result<(), StoreError> {
        let mut stats = read_stats(tx)?;
        stats.items += self.0.items;
        stats.bytes += self.0.bytes;
        for (name, change) in &self.0.indexes {
            // Counted only where counting started (see `Stats::indexes`).
            if let Some(counted) = stats.indexes.get_mut(name) {
                *counted += *change;
            }
        }
        write_stats(tx, &stats)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Runs `f` in a transaction of its own on `db` (any open group, its
/// count and size included, commits first), and commits it.
fn own_transaction<T>(
    db: &Db,
    f: impl FnOnce(&Tx<'_>) -> Result<T, DdbError>,
) -> Result<T, DdbError> {
    let mut locked = db.lock();
    let tx = locked.begin()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Counts an index's entries (inside a transaction, so that no write
/// slips between the count and its use).
fn count_index(tx: &Tx<'_>, index: &IndexMeta) -> Result<IndexStats, DdbError> {
    let tree = index.tree();
    let mut stats = IndexStats::default();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let lower = match &cursor {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = tx.scan(&tree, lower, Bound::Unbounded, 1024)?;
        let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
            return Ok(stats);
        };
        for (_, v) in &chunk {
            stats.items += 1;
            stats.bytes += item_size(&Table::decode(v)?) as i64;
        }
        cursor = Some(last);
    }
}

/// All tables of the deployment.
pub struct Tables {
    pub(crate) dir: PathBuf,
    pub(crate) catalog: Arc<Db>,
    pub(crate) keys: Arc<dyn TableKeys>,
    /// Where backups, exports and imports are.
    pub(crate) objects: Arc<dyn ObjectStore>,
    /// Serialises backups with the deletions that collect their chunks.
    pub(crate) backup_lock: Mutex<()>,
    /// Open tables by region, then name: looked up by borrowed names, as
    /// every request does, without building a key.
    open: Mutex<HashMap<String, HashMap<String, Arc<Table>>>>,
    /// Serialises catalog changes.
    catalog_lock: Mutex<()>,
    in_flight: InFlight,
    /// `ClientRequestToken`s of recent transactions: (when, request
    /// fingerprint, answer), kept ten minutes.
    pub idempotency: Mutex<HashMap<String, (u64, String, serde_json::Value)>>,
}

fn catalog_key(region: &str, name: &str) -> Vec<u8> {
    format!("{region}/{name}").into_bytes()
}

impl Tables {
    pub fn new(
        dir: PathBuf,
        catalog: Arc<Db>,
        keys: Arc<dyn TableKeys>,
        objects: Arc<dyn ObjectStore>,
    ) -> Tables {
        // Temporary copies a crash left behind (encrypted under keys that
        // died with the process).
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        Tables {
            dir,
            catalog,
            keys,
            objects,
            backup_lock: Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            catalog_lock: Mutex::new(()),
            in_flight: InFlight::default(),
            idempotency: Mutex::new(HashMap::new()),
        }
    }

    fn not_found(name: &str) -> DdbError {
        DdbError::new(
            DdbErrorKind::ResourceNotFound,
            format!("Requested resource not found: Table: {name} not found"),
        )
    }

    fn paths(&self, meta: &TableMeta) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(&meta.region);
        (
            dir.join(format!("{}.db", meta.id)),
            dir.join(format!("{}.dbkey", meta.id)),
        )
    }

    pub fn meta(&self, region: &str, name: &str) -> Result<TableMeta, DdbError> {
        let bytes = self
            .catalog
            .get(CATALOG, &catalog_key(region, name))?
            .ok_or_else(|| Self::not_found(name))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))
    }

    fn save_meta(&self, meta: &TableMeta) -> Result<(), DdbError> {
        let bytes = serde_json::to_vec(meta)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
        self.catalog
            .put(CATALOG, &catalog_key(&meta.region, &meta.name), &bytes)?;
        Ok(())
    }

    /// The open table, opening its store on first use. A damaged store is
    /// reported for this table only.
    pub fn table(&self, region: &str, name: &str) -> Result<Arc<Table>, DdbError> {
        if let Some(t) = self.open_table(region, name) {
            return Ok(t);
        }
        // Opening under the catalog lock means a handle is never built from
        // a description that `update_meta` is replacing at the same moment.
        let _guard = self.catalog_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.open_table(region, name) {
            return Ok(t);
        }
        let meta = self.meta(region, name)?;
        let (db_path, key_path) = self.paths(&meta);
        let db_key = self.keys.database_key(&meta.arn, &key_path).map_err(|e| {
            DdbError::new(
                DdbErrorKind::Internal,
                format!("the table's key cannot be unwrapped: {e}"),
            )
        })?;
        let db = Db::open(&db_path, &db_key).map_err(|e| match e {
            StoreError::Corrupt { .. } => DdbError::new(
                DdbErrorKind::Internal,
                format!("The data of table {name} is corrupt and cannot be read."),
            ),
            other => other.into(),
        })?;
        // GetItem, BatchGetItem and conditionless reads of single items
        // are answered from memory where they can be.
        db.cache_reads(ITEMS);
        let table = Arc::new(Table {
            meta,
            db,
            in_flight: self.in_flight.clone(),
            last_logged: std::sync::atomic::AtomicU64::new(0),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(region.to_owned())
            .or_default()
            .insert(name.to_owned(), table.clone());
        Ok(table)
    }

    /// The table's open handle, if it has one.
    fn open_table(&self, region: &str, name: &str) -> Option<Arc<Table>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(region)?.get(name).cloned()
    }

    /// Forgets the table's open handle, returning it.
    fn close_table(&self, region: &str, name: &str) -> Option<Arc<Table>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get_mut(region)?.remove(name)
    }

    pub fn create(&self, meta: TableMeta) -> Result<TableMeta, DdbError> {
        let _guard = self.catalog_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .catalog
            .get(CATALOG, &catalog_key(&meta.region, &meta.name))?
            .is_some()
        {
            return Err(DdbError::new(
                DdbErrorKind::ResourceInUse,
                format!("Table already exists: {}", meta.name),
            ));
        }
        let (db_path, key_path) = self.paths(&meta);
        if let Some(dir) = db_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
        }
        let db_key = self
            .keys
            .database_key(&meta.arn, &key_path)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e))?;
        let db = Db::open(&db_path, &db_key)?;
        // Its indexes are empty: counted from the first write.
        let stats = Stats {
            indexes: meta
                .indexes
                .iter()
                .map(|i| (i.name.clone(), IndexStats::default()))
                .collect(),
            ..Stats::default()
        };
        db.transaction(|tx: &Tx<'_>| write_stats(tx, &stats))?;
        self.save_meta(&meta)?;
        Ok(meta)
    }

    pub fn update_meta(
        &self,
        region: &str,
        name: &str,
        change: impl FnOnce(&mut TableMeta) -> Result<(), DdbError>,
    ) -> Result<TableMeta, DdbError> {
        Ok(self.replace_meta(region, name, change)?.0)
    }

    /// Saves a changed description and retires the open handle built from
    /// the old one, which it returns: requests already holding it finish
    /// with the old description.
    fn replace_meta(
        &self,
        region: &str,
        name: &str,
        change: impl FnOnce(&mut TableMeta) -> Result<(), DdbError>,
    ) -> Result<(TableMeta, Option<Arc<Table>>), DdbError> {
        let _guard = self.catalog_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut meta = self.meta(region, name)?;
        change(&mut meta)?;
        self.save_meta(&meta)?;
        let retired = self.close_table(region, name);
        Ok((meta, retired))
    }

    pub fn delete(&self, region: &str, name: &str) -> Result<TableMeta, DdbError> {
        let _guard = self.catalog_lock.lock().unwrap_or_else(|p| p.into_inner());
        let meta = self.meta(region, name)?;
        if meta.deletion_protection {
            return Err(DdbError::validation(format!(
                "Resource cannot be deleted as it is currently protected against manual deletion. Disable deletion protection first: {}",
                meta.arn
            )));
        }
        self.catalog.delete(CATALOG, &catalog_key(region, name))?;
        self.close_table(region, name);
        let (db_path, key_path) = self.paths(&meta);
        for p in [
            db_path.clone(),
            PathBuf::from(format!("{}-wal", db_path.display())),
            PathBuf::from(format!("{}-shm", db_path.display())),
            key_path,
        ] {
            let _ = std::fs::remove_file(p);
        }
        Ok(meta)
    }

    /// Table names of a region in order, from `start` (exclusive), at most `limit`.
    pub fn list(
        &self,
        region: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, DdbError> {
        let prefix = format!("{region}/");
        let lower = match start {
            Some(s) => Bound::Excluded(catalog_key(region, s)),
            None => Bound::Included(prefix.clone().into_bytes()),
        };
        let mut upper = prefix.clone().into_bytes();
        upper.push(0xff);
        let lower_ref = match &lower {
            Bound::Included(v) => Bound::Included(v.as_slice()),
            Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(self
            .catalog
            .scan(CATALOG, lower_ref, Bound::Excluded(&upper), limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    pub fn stats(&self, region: &str, name: &str) -> Result<Stats, DdbError> {
        let t = self.table(region, name)?;
        t.stats()
    }

    /// Deletes the items whose TTL attribute (epoch seconds) has passed, in
    /// every table with TTL enabled. As in DynamoDB, a TTL more than five years
    /// in the past is ignored (it is probably not epoch seconds).
    pub fn sweep_expired(&self, now: i64) -> Result<usize, DdbError> {
        let metas: Vec<TableMeta> = self
            .catalog
            .scan(CATALOG, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let mut removed = 0;
        for meta in metas {
            let Some(attr) = meta.ttl_attribute.clone() else {
                continue;
            };
            let table = self.table(&meta.region, &meta.name)?;
            let mut expired = Vec::new();
            table.range(Bound::Unbounded, None, |_, item| {
                if let Some(AttributeValue::N(n)) = item.get(&attr) {
                    if let Ok(at) = n.to_string().split('.').next().unwrap_or("").parse::<i64>() {
                        if at < now && at > now - 5 * 365 * 86_400 {
                            expired.push(item);
                        }
                    }
                }
                Ok(true)
            })?;
            for item in expired {
                let key = table.key_of(&item, true)?;
                // Check again inside the write: the item may have changed meanwhile.
                table.write(&key, |current| {
                    let still = matches!(current.and_then(|c| c.get(&attr)), Some(v) if Some(v) == item.get(&attr));
                    Ok(if still { None } else { current.cloned() })
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Which partition and sort key values an item or request names, checked
/// against the table's schema with DynamoDB's messages.
pub struct ItemKey {
    pub storage: Vec<u8>,
    pub attributes: Item,
}

impl Table {
    /// The storage key of a key (or of a whole item), validating it.
    pub fn key_of(&self, item: &Item, whole_item: bool) -> Result<ItemKey, DdbError> {
        let mut attributes = Item::new();
        let mut storage = Vec::new();
        let schema = std::iter::once((&self.meta.hash, MAX_PARTITION_KEY_BYTES))
            .chain(self.meta.range.iter().map(|r| (r, MAX_SORT_KEY_BYTES)));
        if !whole_item && item.len() != 1 + usize::from(self.meta.range.is_some()) {
            return Err(DdbError::validation(
                "The provided key element does not match the schema",
            ));
        }
        for (i, (attr, max)) in schema.enumerate() {
            let value = item.get(&attr.name).ok_or_else(|| {
                if whole_item {
                    DdbError::validation(format!(
                        "One or more parameter values were invalid: Missing the key {} in the item",
                        attr.name
                    ))
                } else {
                    DdbError::validation("The provided key element does not match the schema")
                }
            })?;
            if value.type_name() != attr.kind {
                return Err(DdbError::validation(format!(
                    "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                    attr.name,
                    attr.kind,
                    value.type_name()
                )));
            }
            let encoded = key_bytes(value).ok_or_else(|| {
                DdbError::validation("The provided key element does not match the schema")
            })?;
            let raw_len = match value {
                AttributeValue::S(s) => s.len(),
                AttributeValue::B(b) => b.len(),
                _ => 0,
            };
            if matches!(value, AttributeValue::S(_) | AttributeValue::B(_)) && raw_len == 0 {
                return Err(DdbError::validation(format!(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {} value. Key: {}",
                    if attr.kind == "S" { "string" } else { "binary" },
                    attr.name
                )));
            }
            if raw_len > max {
                return Err(DdbError::validation(format!(
                    "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of {max} bytes"
                )));
            }
            if i == 0 {
                storage.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
            }
            storage.extend_from_slice(&encoded);
            attributes.insert(attr.name.clone(), value.clone());
        }
        Ok(ItemKey {
            storage,
            attributes,
        })
    }

    /// An item as stored (what [`Table::get_json`] returns).
    pub fn decode(bytes: &[u8]) -> Result<Item, DdbError> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
        let map = json.as_object().ok_or_else(|| {
            DdbError::new(DdbErrorKind::Internal, "a stored item is not an object")
        })?;
        item_from_json(map).map_err(|e| DdbError::new(DdbErrorKind::Internal, e.0))
    }

    pub(crate) fn encode(item: &Item) -> Vec<u8> {
        serde_json::to_vec(&crate::value::ItemJson(item)).unwrap_or_default()
    }

    /// The item's key attributes (of the table's own key).
    pub fn key_attributes(&self, item: &Item) -> Item {
        let mut out = Item::new();
        for attr in std::iter::once(&self.meta.hash).chain(self.meta.range.as_ref()) {
            if let Some(v) = item.get(&attr.name) {
                out.insert(attr.name.clone(), v.clone());
            }
        }
        out
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The item under `key` as stored: its DynamoDB JSON, exactly as
    /// `item_to_json` writes it.
    pub fn get_json(&self, key: &ItemKey) -> Result<Option<Vec<u8>>, DdbError> {
        Ok(self.db.get(ITEMS, &key.storage)?)
    }

    pub fn get(&self, key: &ItemKey) -> Result<Option<Item>, DdbError> {
        match self.db.get(ITEMS, &key.storage)? {
            Some(bytes) => Self::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn stats(&self) -> Result<Stats, DdbError> {
        Ok(match self.db.get(STATS, b"stats")? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Stats::default(),
        })
    }

    /// An index's entry count and size: kept by every write, or counted
    /// now (once) for an index made before they were kept.
    pub fn index_stats(&self, index: &IndexMeta) -> Result<IndexStats, DdbError> {
        if let Some(kept) = self.stats()?.indexes.get(&index.name) {
            return Ok(*kept);
        }
        own_transaction(&self.db, |tx: &Tx<'_>| {
            let mut stats = read_stats(tx)?;
            if let Some(kept) = stats.indexes.get(&index.name) {
                return Ok(*kept);
            }
            let counted = count_index(tx, index)?;
            stats.indexes.insert(index.name.clone(), counted);
            write_stats(tx, &stats)?;
            Ok(counted)
        })
    }

    /// Reads the item, lets `decide` compute the new one (or refuse), and
    /// writes it, all in one durable transaction. Returns the old and new item.
    pub fn write(
        &self,
        key: &ItemKey,
        decide: impl FnOnce(Option<&Item>) -> Result<Option<Item>, DdbError>,
    ) -> Result<(Option<Item>, Option<Item>), DdbError> {
        self.check_unclaimed([key])?;
        self.db
            .transaction(|tx: &Tx<'_>| self.decide_in(tx, key, decide))
    }

    /// [`Table::write`] for a task: waits for the store's writer and its
    /// group commit without holding a thread (`Db::transaction_async`).
    pub async fn write_async(
        &self,
        key: &ItemKey,
        decide: impl FnOnce(Option<&Item>) -> Result<Option<Item>, DdbError>,
    ) -> Result<(Option<Item>, Option<Item>), DdbError> {
        self.check_unclaimed([key])?;
        self.db
            .transaction_async(|tx: &Tx<'_>| self.decide_in(tx, key, decide))
            .await
    }

    /// Reads the item under `key`, lets `decide` say what replaces it, and
    /// writes that: (old, new).
    fn decide_in(
        &self,
        tx: &Tx<'_>,
        key: &ItemKey,
        decide: impl FnOnce(Option<&Item>) -> Result<Option<Item>, DdbError>,
    ) -> Result<(Option<Item>, Option<Item>), DdbError> {
        let old = self.read_in(tx, key)?;
        let new = decide(old.as_ref())?;
        self.apply_in(tx, key, old.as_ref(), new.as_ref())?;
        Ok((old, new))
    }

    /// Refuses a write to items a transaction is writing.
    fn check_unclaimed<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k ItemKey>,
    ) -> Result<(), DdbError> {
        let claimed = {
            let held = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // Usually no transaction is in flight: no key is copied then.
            !held.is_empty() && {
                let path = self.db.path().to_path_buf();
                keys.into_iter()
                    .any(|k| held.contains(&(path.clone(), k.storage.clone())))
            }
        };
        if claimed {
            return Err(DdbError::new(
                DdbErrorKind::TransactionConflict,
                "Transaction is ongoing for the item",
            ));
        }
        Ok(())
    }

    /// Writes (`Some`) or deletes (`None`) several items in one durable
    /// transaction: a BatchWriteItem's items of this table, with one fsync
    /// instead of one each. A refused item refuses them all.
    pub fn write_batch(&self, writes: &[(ItemKey, Option<Item>)]) -> Result<(), DdbError> {
        self.check_unclaimed(writes.iter().map(|(k, _)| k))?;
        self.db
            .transaction(|tx: &Tx<'_>| self.write_batch_in(tx, writes))
    }

    /// [`Table::write_batch`] for a task: waits for the store's writer and
    /// its group commit without holding a thread (`Db::transaction_async`),
    /// and writes the items in place.
    pub async fn write_batch_async(
        &self,
        writes: &[(ItemKey, Option<Item>)],
    ) -> Result<(), DdbError> {
        self.check_unclaimed(writes.iter().map(|(k, _)| k))?;
        self.db
            .transaction_async(|tx: &Tx<'_>| self.write_batch_in(tx, writes))
            .await
    }

    fn write_batch_in(
        &self,
        tx: &Tx<'_>,
        writes: &[(ItemKey, Option<Item>)],
    ) -> Result<(), DdbError> {
        // The count and size are tallied once for the batch, not once per
        // item.
        let mut change = StatsChange::default();
        for (key, new) in writes {
            let old = self.read_in(tx, key)?;
            self.apply_counted(tx, key, old.as_ref(), new.as_ref(), &mut change.0)?;
        }
        tx.tally(STATS_CHANGE, Box::new(change))?;
        Ok(())
    }

    /// The item under `key`, inside a transaction.
    pub fn read_in(&self, tx: &Tx<'_>, key: &ItemKey) -> Result<Option<Item>, DdbError> {
        match tx.get(ITEMS, &key.storage)? {
            Some(b) => Ok(Some(Self::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Replaces `old` by `new` inside a transaction: the item, the table's
    /// count and size, and (with point-in-time recovery) the change log.
    pub fn apply_in(
        &self,
        tx: &Tx<'_>,
        key: &ItemKey,
        old: Option<&Item>,
        new: Option<&Item>,
    ) -> Result<(), DdbError> {
        let mut change = StatsChange::default();
        self.apply_counted(tx, key, old, new, &mut change.0)?;
        tx.tally(STATS_CHANGE, Box::new(change))?;
        Ok(())
    }

    /// [`Table::apply_in`], adding the change to the count and size to
    /// `stats`, which the caller tallies.
    fn apply_counted(
        &self,
        tx: &Tx<'_>,
        key: &ItemKey,
        old: Option<&Item>,
        new: Option<&Item>,
        stats: &mut Stats,
    ) -> Result<(), DdbError> {
        let old_size = old.map(item_size).unwrap_or(0) as i64;
        match new {
            Some(item) => {
                let size = item_size(item);
                if size > MAX_ITEM_BYTES {
                    return Err(DdbError::validation(
                        "Item size has exceeded the maximum allowed size",
                    ));
                }
                tx.put(ITEMS, &key.storage, &Self::encode(item))?;
                if old.is_none() {
                    stats.items += 1;
                }
                stats.bytes += size as i64 - old_size;
            }
            None => {
                if old.is_some() {
                    tx.delete(ITEMS, &key.storage)?;
                    stats.items -= 1;
                    stats.bytes -= old_size;
                }
            }
        }
        self.track_collection(tx, key, old, new)?;
        // Indexes change in the same transaction as the item.
        for index in &self.meta.indexes {
            let tree = index.tree();
            let mut change = IndexStats::default();
            if let Some(old) = old {
                if let Some(k) = index.entry_key(old, &key.storage)? {
                    tx.delete(&tree, &k)?;
                    change.items -= 1;
                    change.bytes -= item_size(&index.project(&self.meta, old)) as i64;
                }
            }
            if let Some(new) = new {
                if let Some(k) = index.entry_key(new, &key.storage)? {
                    let entry = index.project(&self.meta, new);
                    tx.put(&tree, &k, &Self::encode(&entry))?;
                    change.items += 1;
                    change.bytes += item_size(&entry) as i64;
                }
            }
            if change != IndexStats::default() {
                *stats.indexes.entry(index.name.clone()).or_default() += change;
            }
        }
        if self.meta.pitr.is_some() && (old.is_some() || new.is_some()) {
            // Logged in the same transaction: a change is recoverable
            // exactly when it is committed.
            let at = self.next_log_time();
            // A deletion keeps the deleted item's key attributes, which
            // incremental exports report.
            let deleted_key = match (new, old) {
                (None, Some(old)) => Some(item_to_json(&self.key_attributes(old))),
                _ => None,
            };
            let entry = serde_json::json!({
                "k": crate::backups::hex(&key.storage),
                "i": new.map(item_to_json),
                "d": deleted_key,
            });
            tx.put(CHANGELOG, &at.to_be_bytes(), entry.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The bytes an item takes in its item collection: the item and its
    /// entries in the local indexes.
    fn collection_share(&self, item: &Item) -> i64 {
        let mut bytes = item_size(item) as i64;
        for index in self.meta.indexes.iter().filter(|i| !i.global) {
            if index
                .range
                .as_ref()
                .is_some_and(|r| item.contains_key(&r.name))
            {
                bytes += item_size(&index.project(&self.meta, item)) as i64;
            }
        }
        bytes
    }

    fn collection_of(key: &ItemKey) -> &[u8] {
        let len = key
            .storage
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .unwrap_or(0);
        &key.storage[..(2 + len).min(key.storage.len())]
    }

    /// Keeps the item collection's size, refusing a write that would take it
    /// over the limit (tables with local indexes only, as in DynamoDB).
    fn track_collection(
        &self,
        tx: &Tx<'_>,
        key: &ItemKey,
        old: Option<&Item>,
        new: Option<&Item>,
    ) -> Result<(), DdbError> {
        if !self.meta.indexes.iter().any(|i| !i.global) {
            return Ok(());
        }
        let delta = new.map(|i| self.collection_share(i)).unwrap_or(0)
            - old.map(|i| self.collection_share(i)).unwrap_or(0);
        if delta == 0 {
            return Ok(());
        }
        let collection = Self::collection_of(key);
        let before = tx
            .get(COLLECTIONS, collection)?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0);
        let after = before + delta;
        if delta > 0 && after > item_collection_limit() {
            return Err(DdbError::new(
                DdbErrorKind::ItemCollectionSizeLimitExceeded,
                "Collection size exceeded",
            ));
        }
        if after <= 0 {
            tx.delete(COLLECTIONS, collection)?;
        } else {
            tx.put(COLLECTIONS, collection, &after.to_be_bytes())?;
        }
        Ok(())
    }

    /// The size in bytes of the item collection `key` belongs to (tables with
    /// local indexes).
    pub fn collection_bytes(&self, key: &ItemKey) -> Result<i64, DdbError> {
        Ok(self
            .db
            .get(COLLECTIONS, Self::collection_of(key))?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0))
    }

    fn next_log_time(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now = now_micros();
        let mut last = self.last_logged.load(Ordering::Relaxed);
        loop {
            let at = now.max(last + 1);
            match self
                .last_logged
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return at,
                Err(seen) => last = seen,
            }
        }
    }

    /// Items in storage order within `[lower, upper)`, read in chunks;
    /// `visit` returns false to stop.
    pub fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Option<Vec<u8>>,
        visit: impl FnMut(&[u8], Item) -> Result<bool, DdbError>,
    ) -> Result<(), DdbError> {
        self.range_in(None, lower, upper, true, visit)
    }

    /// Reads `[lower, upper)` of the items, or of an index's entries when
    /// `index` is given, in chunks of 256, each continuing after the last
    /// key; or, not `forward`, from `upper` down, each chunk before the last
    /// key, so that a reader of the last few items of a large partition
    /// reads only those.
    pub fn range_in(
        &self,
        index: Option<&IndexMeta>,
        lower: Bound<Vec<u8>>,
        upper: Option<Vec<u8>>,
        forward: bool,
        mut visit: impl FnMut(&[u8], Item) -> Result<bool, DdbError>,
    ) -> Result<(), DdbError> {
        self.range_stored_in(index, lower, upper, forward, |k, item, _| visit(k, item))
    }

    /// [`Table::range_in`], handing each item over with its stored JSON as
    /// well, which is the item's wire form: an answer that returns the item
    /// whole copies it instead of encoding it again.
    pub fn range_stored_in(
        &self,
        index: Option<&IndexMeta>,
        mut lower: Bound<Vec<u8>>,
        mut upper: Option<Vec<u8>>,
        forward: bool,
        mut visit: impl FnMut(&[u8], Item, Vec<u8>) -> Result<bool, DdbError>,
    ) -> Result<(), DdbError> {
        let tree = index
            .map(IndexMeta::tree)
            .unwrap_or_else(|| ITEMS.to_owned());
        loop {
            let from = lower.as_ref().map(Vec::as_slice);
            let to = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let chunk = if forward {
                self.db.scan(&tree, from, to, 256)?
            } else {
                self.db.scan_descending(&tree, from, to, 256)?
            };
            let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
                return Ok(());
            };
            for (k, v) in chunk {
                let item = Self::decode(&v)?;
                if !visit(&k, item, v)? {
                    return Ok(());
                }
            }
            if forward {
                lower = Bound::Excluded(last);
            } else {
                upper = Some(last);
            }
        }
    }

    /// The storage key prefix of a partition, and the first key after it.
    pub fn partition_bounds(
        &self,
        partition: &AttributeValue,
    ) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let encoded = key_bytes(partition)?;
        let mut prefix = (encoded.len() as u16).to_be_bytes().to_vec();
        prefix.extend_from_slice(&encoded);
        Some((prefix.clone(), successor(&prefix)))
    }

    pub fn verify(&self) -> Result<(), DdbError> {
        self.db.verify().map_err(|_| {
            DdbError::new(
                DdbErrorKind::Internal,
                format!(
                    "The data of table {} is corrupt and cannot be read.",
                    self.meta.name
                ),
            )
        })
    }
}

/// The storage keys a sort key condition can match in a partition (or an
/// index partition) whose keys start with `prefix` and end before `end`:
/// the first (inclusive) and the end (exclusive). A key stores its sort key
/// value encoded in order (`key_bytes`, prefix-free) right after the
/// partition's prefix, so each condition is one contiguous range. The range
/// may be wider than the condition (a value of another type), never
/// narrower; readers still test each item.
pub fn sort_key_range(
    prefix: &[u8],
    end: Option<Vec<u8>>,
    condition: Option<&SortCondition>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let at = |v: &AttributeValue| {
        key_bytes(v).map(|encoded| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&encoded);
            key
        })
    };
    // Keys of values up to and including `v`, in either trees: an index
    // entry goes on with its item's key after the value.
    let after = |v: &AttributeValue| at(v).and_then(|k| successor(&k));
    let Some(condition) = condition else {
        return (prefix.to_vec(), end);
    };
    let range = match condition {
        SortCondition::Eq(v) => at(v).map(|k| (k.clone(), successor(&k))),
        SortCondition::Lt(v) => at(v).map(|k| (prefix.to_vec(), Some(k))),
        SortCondition::Le(v) => after(v).map(|k| (prefix.to_vec(), Some(k))),
        SortCondition::Gt(v) => after(v).map(|k| (k, end.clone())),
        SortCondition::Ge(v) => at(v).map(|k| (k, end.clone())),
        SortCondition::Between(a, b) => at(a).zip(after(b)).map(|(lo, hi)| (lo, Some(hi))),
        SortCondition::BeginsWith(p) => {
            let stem = match p {
                AttributeValue::S(_) | AttributeValue::B(_) => key_bytes(p),
                _ => None,
            };
            // A string's encoding is its escaped bytes and a two-byte end
            // mark: every value starting with `p` starts with the bytes
            // before the mark.
            stem.map(|mut encoded| {
                encoded.truncate(encoded.len().saturating_sub(2));
                let mut key = prefix.to_vec();
                key.extend_from_slice(&encoded);
                let hi = successor(&key);
                (key, hi)
            })
        }
    };
    range.unwrap_or_else(|| (prefix.to_vec(), end))
}

/// The smallest byte string greater than every string starting with `prefix`.
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// Item attributes as JSON objects keyed by name (for answers).
pub fn items_to_json(items: &[Item]) -> Vec<serde_json::Value> {
    items.iter().map(item_to_json).collect()
}

impl Tables {
    fn pitr_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join("pitr");
        (
            dir.join(format!("{id}.db")),
            dir.join(format!("{id}.dbkey")),
        )
    }

    /// Turns point-in-time recovery on (or changes its period): logging
    /// starts, then a base snapshot is taken; the earliest restorable time is
    /// when that snapshot is complete.
    pub fn enable_pitr(&self, region: &str, name: &str, days: u32) -> Result<TableMeta, DdbError> {
        let current = self.meta(region, name)?;
        if current.pitr.is_some() {
            return self.update_meta(region, name, |m| {
                if let Some(p) = &mut m.pitr {
                    p.recovery_days = days;
                }
                Ok(())
            });
        }
        self.update_meta(region, name, |m| {
            m.pitr = Some(Pitr {
                recovery_days: days,
                bases: Vec::new(),
            });
            Ok(())
        })?;
        self.take_base(region, name)
    }

    /// Takes a new base snapshot of a table with point-in-time recovery.
    /// Logging is already on, so changes made while the copy is taken are
    /// both in it and in the log; replaying them again is harmless, because
    /// each log entry holds an item's whole state after the change.
    fn take_base(&self, region: &str, name: &str) -> Result<TableMeta, DdbError> {
        let table = self.table(region, name)?;
        let logging_since = now_micros();
        let id = format!("{}-{logging_since}", table.meta.id);
        let (path, key_path) = self.pitr_paths(&id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
        }
        let resource = format!("{}/pitr/{id}", table.meta.arn);
        let key = self
            .keys
            .database_key(&resource, &key_path)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e))?;
        table.db.snapshot_to(&path, &key)?;
        let complete = now_micros();
        self.update_meta(region, name, |m| {
            if let Some(p) = &mut m.pitr {
                p.bases.push(PitrBase {
                    id: id.clone(),
                    logging_since,
                    complete,
                });
            }
            Ok(())
        })
    }

    /// Periodic work for every table with point-in-time recovery: a new base
    /// when the newest is older than `rebase_after`, then bases and log
    /// entries no restore inside the recovery period needs are deleted.
    pub fn maintain_pitr(&self, rebase_after: std::time::Duration) -> Result<(), DdbError> {
        let metas: Vec<TableMeta> = self
            .catalog
            .scan(CATALOG, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        for meta in metas {
            let Some(pitr) = &meta.pitr else { continue };
            let now = now_micros();
            let newest = pitr.bases.last().map(|b| b.complete).unwrap_or(0);
            let meta = if now.saturating_sub(newest) > rebase_after.as_micros() as u64 {
                self.take_base(&meta.region, &meta.name)?
            } else {
                meta
            };
            let Some(pitr) = meta.pitr.clone() else {
                continue;
            };
            let window =
                now_micros().saturating_sub(u64::from(pitr.recovery_days) * 86_400 * 1_000_000);
            // The newest base complete before the window opens serves every
            // restore inside the window; everything older can go.
            let Some(keep) = pitr.bases.iter().rposition(|b| b.complete <= window) else {
                continue;
            };
            if keep == 0 {
                continue;
            }
            let (dropped, kept) = pitr.bases.split_at(keep);
            let cut = kept[0].logging_since;
            let table = self.table(&meta.region, &meta.name)?;
            let old: Vec<Vec<u8>> = table
                .db
                .scan(
                    CHANGELOG,
                    Bound::Unbounded,
                    Bound::Excluded(&cut.to_be_bytes()),
                    usize::MAX,
                )?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            table.db.transaction(|tx: &Tx<'_>| {
                for k in &old {
                    tx.delete(CHANGELOG, k)?;
                }
                Ok::<(), DdbError>(())
            })?;
            let kept = kept.to_vec();
            self.update_meta(&meta.region, &meta.name, |m| {
                if let Some(p) = &mut m.pitr {
                    p.bases = kept.clone();
                }
                Ok(())
            })?;
            for base in dropped {
                let (path, key_path) = self.pitr_paths(&base.id);
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(key_path);
            }
        }
        Ok(())
    }

    /// How many changes a table's log holds (for tests and diagnostics).
    pub fn changelog_len(&self, region: &str, name: &str) -> Result<usize, DdbError> {
        let table = self.table(region, name)?;
        Ok(table
            .db
            .scan(CHANGELOG, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .len())
    }

    pub fn disable_pitr(&self, region: &str, name: &str) -> Result<TableMeta, DdbError> {
        self.update_meta(region, name, |m| {
            m.pitr = None;
            Ok(())
        })
    }

    /// Creates `target` with the source table's items as they were at `at`
    /// (microseconds): the base snapshot, then every logged change up to `at`.
    pub fn restore_to_point_in_time(
        &self,
        source_region: &str,
        source: &str,
        at: u64,
        target: TableMeta,
    ) -> Result<TableMeta, DdbError> {
        let meta = self.meta(source_region, source)?;
        let pitr = meta.pitr.clone().ok_or_else(|| {
            DdbError::new(
                DdbErrorKind::PitrNotEnabled,
                format!("Point in time recovery is not enabled for table '{source}'"),
            )
        })?;
        let now = now_micros();
        if at < pitr.earliest(now) || at > now {
            return Err(DdbError::new(
                DdbErrorKind::InvalidRestoreTime,
                "Restore time is outside the restorable window: it must be between EarliestRestorableDateTime and LatestRestorableDateTime",
            ));
        }
        // The newest base complete by `at`: replay starts from it.
        let base_meta = Self::base_for(&pitr, at)?;
        let mut target = target;
        for index in &mut target.indexes {
            index.backfilling = false;
        }
        let state = self.state_at(&meta, &base_meta, at)?;
        let created = self.create(target)?;
        let loaded = (|| {
            let restored = self.table(&created.region, &created.name)?;
            let mut batch = Vec::new();
            crate::backups::for_each_entry(&state.db, ITEMS, |k, v| {
                batch.push((k.to_vec(), Some(Table::decode(v)?)));
                if batch.len() >= 1024 {
                    restored.load(&std::mem::take(&mut batch))?;
                }
                Ok(())
            })?;
            restored.load(&batch)
        })();
        if let Err(e) = loaded {
            let _ = self.delete(&created.region, &created.name);
            return Err(e);
        }
        Ok(created)
    }

    /// The newest base complete by `at` (microseconds), if any.
    pub(crate) fn base_for(pitr: &Pitr, at: u64) -> Result<PitrBase, DdbError> {
        pitr.bases
            .iter()
            .rev()
            .find(|b| b.complete <= at)
            .cloned()
            .ok_or_else(|| {
                DdbError::new(
                    DdbErrorKind::InvalidRestoreTime,
                    "No restorable state at that time",
                )
            })
    }

    /// The table's store as it was at `at`, in a temporary copy: the base
    /// snapshot, then every logged change from the start of its logging up
    /// to `at`, in commit order. Only the items tree is brought forward.
    pub(crate) fn state_at(
        &self,
        meta: &TableMeta,
        base: &PitrBase,
        at: u64,
    ) -> Result<crate::backups::TempDb, DdbError> {
        let (base_path, base_key_path) = self.pitr_paths(&base.id);
        let resource = format!("{}/pitr/{}", meta.arn, base.id);
        let base_key = self
            .keys
            .database_key(&resource, &base_key_path)
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e))?;
        let base_db = Db::open(&base_path, &base_key)?;
        let state = self.temp_copy(&base_db, "pitr")?;
        drop(base_db);
        let source = self.table(&meta.region, &meta.name)?;
        self.changes(&source, base.logging_since, at, |batch| {
            state.db.transaction(|tx: &Tx<'_>| {
                for change in batch {
                    match &change.item {
                        Some(item) => tx.put(ITEMS, &change.storage, &Table::encode(item))?,
                        None => tx.delete(ITEMS, &change.storage)?,
                    }
                }
                Ok::<(), DdbError>(())
            })
        })?;
        Ok(state)
    }

    /// Logged changes with times in `[from, to]`, in commit order, handed
    /// to `visit` 512 at a time.
    pub(crate) fn changes(
        &self,
        table: &Table,
        from: u64,
        to: u64,
        mut visit: impl FnMut(Vec<Change>) -> Result<(), DdbError>,
    ) -> Result<(), DdbError> {
        let mut cursor = from.to_be_bytes().to_vec();
        let mut inclusive = true;
        let end = to.saturating_add(1).to_be_bytes().to_vec();
        loop {
            let lower = if inclusive {
                Bound::Included(cursor.as_slice())
            } else {
                Bound::Excluded(cursor.as_slice())
            };
            let chunk = table
                .db
                .scan(CHANGELOG, lower, Bound::Excluded(&end), 512)?;
            let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
                return Ok(());
            };
            let mut batch = Vec::with_capacity(chunk.len());
            for (time, entry) in chunk {
                let entry: serde_json::Value = serde_json::from_slice(&entry)
                    .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
                let storage = crate::backups::unhex(entry["k"].as_str().unwrap_or_default())
                    .ok_or_else(|| {
                        DdbError::new(DdbErrorKind::Internal, "a damaged change-log entry")
                    })?;
                let json_item = |v: &serde_json::Value| match v.as_object() {
                    Some(map) => item_from_json(map)
                        .map(Some)
                        .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.0)),
                    None => Ok(None),
                };
                batch.push(Change {
                    time: time
                        .as_slice()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .unwrap_or(0),
                    storage,
                    item: json_item(&entry["i"])?,
                    deleted_key: json_item(&entry["d"])?,
                });
            }
            visit(batch)?;
            cursor = last;
            inclusive = false;
        }
    }
}

/// One logged change: the item's whole state after it.
pub(crate) struct Change {
    pub time: u64,
    pub storage: Vec<u8>,
    /// `None`: the item was deleted.
    pub item: Option<Item>,
    /// A deletion's key attributes (logged since exports exist).
    pub deleted_key: Option<Item>,
}

/// What one action of a transaction does once its condition holds.
pub enum TxEffect {
    /// Write the item (`None`: delete it).
    Write(Option<Item>),
    /// Only a condition check.
    Check,
}

/// Decides an action of a transaction from the current item.
pub type Decide = Box<dyn FnOnce(Option<&Item>) -> Result<TxEffect, DdbError> + Send>;

/// One action of `TransactWriteItems`.
pub struct TxAction {
    pub table: Arc<Table>,
    pub key: ItemKey,
    /// Decides from the current item: the effect, or the refusal (a failed
    /// condition is a `ConditionalCheckFailed` error).
    pub decide: Decide,
}

/// Why a transaction was cancelled: one entry per action, in request order
/// (`None` where that action was fine).
#[derive(Debug)]
pub struct Cancelled {
    pub reasons: Vec<Option<DdbError>>,
}

const INTENTS: &str = "ddb-intents";

impl Tables {
    /// Locks every table of a transaction, in one global order (by store
    /// path) so that two transactions never wait on each other.
    fn lock_all<'t>(tables: &'t [Arc<Table>]) -> (Vec<usize>, Vec<Locked<'t>>) {
        let mut order: Vec<usize> = (0..tables.len()).collect();
        order.sort_by(|a, b| tables[*a].db.path().cmp(tables[*b].db.path()));
        order.dedup_by(|a, b| tables[*a].db.path() == tables[*b].db.path());
        let locks = order.iter().map(|i| tables[*i].db.lock()).collect();
        (order, locks)
    }

    /// `TransactWriteItems`: every action's condition is checked and every
    /// write made, or none is.
    ///
    /// All the tables involved are held for the whole decision, so the
    /// transaction is serialisable with single-item writes. Before any table
    /// commits, the writes are recorded durably as an intent in the system
    /// store; [`Tables::recover`] finishes an intent a crash interrupted.
    pub fn transact_write(
        &self,
        actions: Vec<TxAction>,
    ) -> Result<Vec<(String, usize)>, Result<Cancelled, DdbError>> {
        // Claim the items first: one another transaction holds cancels this
        // one with TransactionConflict at its place.
        let claimed: Vec<(PathBuf, Vec<u8>)> = actions
            .iter()
            .map(|a| (a.table.db.path().to_path_buf(), a.key.storage.clone()))
            .collect();
        {
            let mut held = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(position) = claimed.iter().position(|c| held.contains(c)) {
                let mut reasons: Vec<Option<DdbError>> = claimed.iter().map(|_| None).collect();
                reasons[position] = Some(DdbError::new(
                    DdbErrorKind::TransactionConflict,
                    "Transaction is ongoing for the item",
                ));
                return Err(Ok(Cancelled { reasons }));
            }
            held.extend(claimed.iter().cloned());
        }
        let _release = Release {
            held: &self.in_flight,
            claimed: &claimed,
        };
        // Holds the transaction once it has claimed its items, so that tests
        // can meet it in flight.
        if fail_point("transact-hold") {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let tables: Vec<Arc<Table>> = actions.iter().map(|a| a.table.clone()).collect();
        let (order, mut locks) = Self::lock_all(&tables);
        let mut txs = Vec::with_capacity(locks.len());
        for l in locks.iter_mut() {
            txs.push(l.begin().map_err(|e| Err(e.into()))?);
        }
        let tx_of = |t: &Arc<Table>| -> usize {
            order
                .iter()
                .position(|i| tables[*i].db.path() == t.db.path())
                .unwrap_or(0)
        };
        // Decide every action first.
        let mut reasons = Vec::with_capacity(actions.len());
        let mut writes = Vec::new();
        let mut failed = false;
        // What each action touched, for its consumed capacity.
        let mut sizes = Vec::with_capacity(actions.len());
        for (position, action) in actions.into_iter().enumerate() {
            let tx = &txs[tx_of(&action.table)];
            let old = action.table.read_in(tx, &action.key).map_err(Err)?;
            let old_size = old.as_ref().map(item_size).unwrap_or(0);
            match (action.decide)(old.as_ref()) {
                Ok(TxEffect::Write(new)) => {
                    reasons.push(None);
                    let size = old_size.max(new.as_ref().map(item_size).unwrap_or(0));
                    sizes.push((action.table.meta.name.clone(), size));
                    writes.push((position, action.table, action.key, old, new));
                }
                Ok(TxEffect::Check) => {
                    reasons.push(None);
                    sizes.push((action.table.meta.name.clone(), old_size));
                }
                // As in DynamoDB, an action that fails its condition or
                // cannot be applied (a type error in its update) cancels the
                // transaction with its reason.
                Err(e)
                    if matches!(
                        e.kind,
                        DdbErrorKind::ConditionalCheckFailed | DdbErrorKind::Validation
                    ) =>
                {
                    failed = true;
                    reasons.push(Some(e));
                }
                Err(e) => return Err(Err(e)),
            }
        }
        if failed {
            return Err(Ok(Cancelled { reasons }));
        }
        // Applied before the intent is recorded: a write refused here (too
        // large, over its collection's limit) leaves no intent behind for
        // `recover` to finish. Nothing is visible until the commits.
        for (position, table, key, old, new) in &writes {
            match table.apply_in(&txs[tx_of(table)], key, old.as_ref(), new.as_ref()) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind,
                        DdbErrorKind::Validation | DdbErrorKind::ItemCollectionSizeLimitExceeded
                    ) =>
                {
                    let mut reasons: Vec<Option<DdbError>> = reasons.iter().map(|_| None).collect();
                    reasons[*position] = Some(e);
                    return Err(Ok(Cancelled { reasons }));
                }
                Err(e) => return Err(Err(e)),
            }
        }
        // The intent: enough to finish the writes after a crash.
        let intent_id = format!("{:020}-{}", now_micros(), std::process::id());
        let intent: Vec<serde_json::Value> = writes
            .iter()
            .map(|(_, t, k, _, new)| {
                serde_json::json!({
                    "region": t.meta.region, "table": t.meta.name,
                    "key": item_to_json(&k.attributes),
                    "whole": new.as_ref().map(item_to_json),
                })
            })
            .collect();
        self.catalog
            .put(
                INTENTS,
                intent_id.as_bytes(),
                serde_json::Value::Array(intent).to_string().as_bytes(),
            )
            .map_err(|e| Err(e.into()))?;
        for (i, tx) in txs.into_iter().enumerate() {
            tx.commit().map_err(|e| Err(e.into()))?;
            if i == 0 && fail_point("transact-after-first-commit") {
                std::process::abort();
            }
        }
        self.catalog
            .delete(INTENTS, intent_id.as_bytes())
            .map_err(|e| Err(e.into()))?;
        Ok(sizes)
    }

    /// `TransactGetItems`: the items as they all were at one moment.
    pub fn transact_get(
        &self,
        reads: &[(Arc<Table>, ItemKey)],
    ) -> Result<Vec<Option<Item>>, DdbError> {
        let tables: Vec<Arc<Table>> = reads.iter().map(|(t, _)| t.clone()).collect();
        let (order, mut locks) = Self::lock_all(&tables);
        let mut txs = Vec::with_capacity(locks.len());
        for l in locks.iter_mut() {
            txs.push(l.begin()?);
        }
        reads
            .iter()
            .map(|(t, k)| {
                let i = order
                    .iter()
                    .position(|i| tables[*i].db.path() == t.db.path())
                    .unwrap_or(0);
                t.read_in(&txs[i], k)
            })
            .collect()
    }

    /// Finishes the transactions a crash interrupted after they were decided
    /// (run at start, before serving). Each write holds the item's whole new
    /// state, so finishing twice changes nothing.
    pub fn recover(&self) -> Result<usize, DdbError> {
        let intents = self
            .catalog
            .scan(INTENTS, Bound::Unbounded, Bound::Unbounded, usize::MAX)?;
        let n = intents.len();
        for (id, body) in intents {
            let writes: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
            for w in writes {
                let (Some(region), Some(name), Some(key)) = (
                    w["region"].as_str(),
                    w["table"].as_str(),
                    w["key"].as_object(),
                ) else {
                    continue;
                };
                let Ok(table) = self.table(region, name) else {
                    continue;
                };
                let key_item =
                    item_from_json(key).map_err(|e| DdbError::new(DdbErrorKind::Internal, e.0))?;
                let key = table.key_of(&key_item, false)?;
                let new = match w["whole"].as_object() {
                    Some(m) => Some(
                        item_from_json(m)
                            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.0))?,
                    ),
                    None => None,
                };
                table.write(&key, |_| Ok(new))?;
            }
            self.catalog.delete(INTENTS, &id)?;
        }
        Ok(n)
    }
}

/// A deliberate crash for tests (TiKV's fail-point habit): when the
/// environment variable `MOAT_FAIL_POINT` names this point, the process
/// aborts here, as a power cut would stop it.
/// Gives back a transaction's claimed items however it ends.
struct Release<'a> {
    held: &'a InFlight,
    claimed: &'a [(PathBuf, Vec<u8>)],
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for c in self.claimed {
            held.remove(c);
        }
    }
}

/// Test hook: whether `MOAT_FAIL_POINT` names this point.
pub(crate) fn fail_point(name: &str) -> bool {
    std::env::var("MOAT_FAIL_POINT").is_ok_and(|v| v == name)
}

impl Table {
    /// The index named `name`.
    pub fn index(&self, name: &str) -> Result<&IndexMeta, DdbError> {
        self.meta
            .indexes
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                DdbError::validation(format!(
                    "The table does not have the specified index: {name}"
                ))
            })
    }

    /// Where an item stands in the table, or in one of its indexes (for
    /// `ExclusiveStartKey`, which names the table key and the index key).
    pub fn position_of(&self, index: Option<&IndexMeta>, item: &Item) -> Result<Vec<u8>, DdbError> {
        let mut base_item = Item::new();
        for attr in std::iter::once(&self.meta.hash).chain(self.meta.range.iter()) {
            if let Some(v) = item.get(&attr.name) {
                base_item.insert(attr.name.clone(), v.clone());
            }
        }
        let base = self.key_of(&base_item, false)?;
        match index {
            None => Ok(base.storage),
            Some(index) => index
                .entry_key(item, &base.storage)?
                .ok_or_else(|| DdbError::validation("The provided starting key is invalid")),
        }
    }
}

impl Tables {
    /// Adds a global index to a table that may hold data. Writes maintain it
    /// from now on; the items already there are filled in by a thread of its
    /// own, a chunk per transaction, so writes are never blocked for long.
    /// The index reads as `CREATING` (backfilling) until then.
    pub fn add_index(
        self: &Arc<Self>,
        region: &str,
        name: &str,
        index: IndexMeta,
        defs: Vec<KeyAttr>,
    ) -> Result<TableMeta, DdbError> {
        let index_name = index.name.clone();
        let (meta, retired) = self.replace_meta(region, name, |m| {
            if m.indexes.iter().any(|i| i.name == index.name) {
                return Err(DdbError::validation(format!(
                    "One or more parameter values were invalid: Index {} already exists",
                    index.name
                )));
            }
            if m.indexes.iter().filter(|i| i.global).count() >= 20 {
                return Err(DdbError::new(DdbErrorKind::LimitExceeded, "Subscriber limit exceeded: the number of global secondary indexes per table is 20"));
            }
            for d in defs {
                if !m.attribute_definitions.iter().any(|a| a.name == d.name) {
                    m.attribute_definitions.push(d);
                }
            }
            m.indexes.push(IndexMeta {
                backfilling: true,
                ..index
            });
            Ok(())
        })?;
        // A write still running on the retired handle does not know the new
        // index, so it would not update an entry the backfill had already
        // made. The backfill starts once every such write is over.
        self.spawn_backfill(
            region,
            name,
            &index_name,
            retired.as_ref().map(Arc::downgrade),
        )?;
        Ok(meta)
    }

    /// Finishes the backfills a stop cut short (at start): each index still
    /// `CREATING` is filled in again from the start, which is harmless for
    /// the entries already made.
    pub fn resume_backfills(self: &Arc<Self>) -> Result<usize, DdbError> {
        let metas: Vec<TableMeta> = self
            .catalog
            .scan(CATALOG, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let mut resumed = 0;
        for meta in metas {
            for index in meta.indexes.iter().filter(|i| i.backfilling) {
                self.spawn_backfill(&meta.region, &meta.name, &index.name, None)?;
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Fills in `index_name` on a thread of its own, once the `retired`
    /// handle (if any) is no longer held.
    fn spawn_backfill(
        self: &Arc<Self>,
        region: &str,
        name: &str,
        index_name: &str,
        retired: Option<std::sync::Weak<Table>>,
    ) -> Result<(), DdbError> {
        let tables = self.clone();
        let (region, name, index_name) =
            (region.to_owned(), name.to_owned(), index_name.to_owned());
        std::thread::Builder::new()
            .name("moat-backfill".into())
            .spawn(move || {
                let since = std::time::Instant::now();
                while retired.as_ref().is_some_and(|w| w.strong_count() > 0) {
                    if since.elapsed() > std::time::Duration::from_secs(60) {
                        tracing::warn!(table = %name, "an old table handle is still held; backfilling anyway");
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                if let Err(e) = tables.backfill(&region, &name, &index_name) {
                    tracing::error!(index = %index_name, table = %name, error = %e, "backfilling an index failed");
                }
            })
            .map_err(|e| DdbError::new(DdbErrorKind::Internal, e.to_string()))?;
        Ok(())
    }

    fn backfill(&self, region: &str, name: &str, index_name: &str) -> Result<(), DdbError> {
        let table = self.table(region, name)?;
        let index = table.index(index_name)?.clone();
        let tree = index.tree();
        let mut cursor: Bound<Vec<u8>> = Bound::Unbounded;
        loop {
            let lower = match &cursor {
                Bound::Included(v) => Bound::Included(v.as_slice()),
                Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let keys: Vec<Vec<u8>> = table
                .db
                .scan(ITEMS, lower, Bound::Unbounded, 256)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let Some(last) = keys.last().cloned() else {
                break;
            };
            if fail_point("backfill-slow") {
                // Tests: a backfill long enough for writes to meet it.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // Each chunk reads the items again inside its transaction: what a
            // concurrent write changed is indexed as it now is.
            table.db.transaction(|tx: &Tx<'_>| {
                for k in &keys {
                    if let Some(bytes) = tx.get(ITEMS, k)? {
                        let item = Table::decode(&bytes)?;
                        if let Some(entry) = index.entry_key(&item, k).ok().flatten() {
                            tx.put(
                                &tree,
                                &entry,
                                &Table::encode(&index.project(&table.meta, &item)),
                            )?;
                        }
                    }
                }
                Ok::<(), DdbError>(())
            })?;
            cursor = Bound::Excluded(last);
        }
        // Counted once it is whole; every write keeps the count from here.
        own_transaction(&table.db, |tx: &Tx<'_>| {
            let mut stats = read_stats(tx)?;
            stats
                .indexes
                .insert(index.name.clone(), count_index(tx, &index)?);
            Ok(write_stats(tx, &stats)?)
        })?;
        self.update_meta(region, name, |m| {
            if let Some(i) = m.indexes.iter_mut().find(|i| i.name == index_name) {
                i.backfilling = false;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Removes a global index and its entries.
    pub fn delete_index(
        &self,
        region: &str,
        name: &str,
        index_name: &str,
    ) -> Result<TableMeta, DdbError> {
        let table = self.table(region, name)?;
        let index = table.index(index_name)?.clone();
        if !index.global {
            return Err(DdbError::validation(
                "Local secondary indexes cannot be deleted",
            ));
        }
        // The backfill thread writes into the index's tree until it is done.
        if index.backfilling {
            return Err(DdbError::new(
                DdbErrorKind::ResourceInUse,
                format!("Attempt to change a resource which is still in use: Index {index_name} is being created"),
            ));
        }
        let (meta, retired) = self.replace_meta(region, name, |m| {
            m.indexes.retain(|i| i.name != index_name);
            Ok(())
        })?;
        // A write still running on the old handle would write an entry
        // after the deletion below: it goes first (a few milliseconds).
        drop(table);
        let retired = retired.map(|handle| Arc::downgrade(&handle));
        let since = std::time::Instant::now();
        while retired.as_ref().is_some_and(|w| w.strong_count() > 0) {
            if since.elapsed() > std::time::Duration::from_secs(5) {
                tracing::warn!(table = %name, "an old table handle is still held; deleting the index anyway");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let table = self.table(region, name)?;
        let tree = index.tree();
        own_transaction(&table.db, |tx: &Tx<'_>| {
            for (k, _) in tx.scan(&tree, Bound::Unbounded, Bound::Unbounded, usize::MAX)? {
                tx.delete(&tree, &k)?;
            }
            let mut stats = read_stats(tx)?;
            stats.indexes.remove(index_name);
            Ok(write_stats(tx, &stats)?)
        })?;
        Ok(meta)
    }

    /// An index's item count and size (see [`Table::index_stats`]).
    pub fn index_stats(
        &self,
        region: &str,
        name: &str,
        index_name: &str,
    ) -> Result<IndexStats, DdbError> {
        let table = self.table(region, name)?;
        let index = table.index(index_name)?.clone();
        table.index_stats(&index)
    }
}
