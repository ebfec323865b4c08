//! A read cache for one tree of a store (DynamoDB's items): a hit answers a
//! read without a SQLite transaction, a B-tree descent or a page decryption.
//!
//! Coherence: every key a transaction writes in the cached tree is
//! invalidated after the transaction commits and before the writer returns.
//! A reader records its shard's generation before it reads the store, and
//! inserts what it read only if no invalidation in that shard happened
//! meanwhile, so a value read before a commit never lands in the cache after
//! it. Between a commit and its invalidation a reader may still see the old
//! value; the write has not returned yet, so it is not acknowledged.
//!
//! Every handle on one file shares one cache (a table's handle is replaced
//! when its description changes, and requests holding the old handle may
//! still write through it). A file created anew gets a fresh cache.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What all caches of the process may hold together, in bytes, unless
/// [`set_budget`] says otherwise.
///
/// 96 MiB: with a million items stored, 128 took Moat's resident memory to
/// 285 MiB (about 299 MB) after a history of loads, 96 to 251 (BENCHMARKS.md).
pub(crate) const DEFAULT_BUDGET: usize = 96 * 1024 * 1024;
static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

/// Sets what all caches of the process may hold together; 0 turns caching
/// off. Caches above a lowered budget shrink as they are next filled.
pub(crate) fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}
/// Larger values are not cached: one would displace dozens of small ones.
const LARGEST_VALUE: usize = 64 * 1024;
/// Bookkeeping per entry (map slot, queue slot, allocation headers).
const ENTRY_OVERHEAD: usize = 96;
const SHARDS: usize = 16;

/// Bytes held by every cache of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Shard {
    entries: HashMap<Vec<u8>, Arc<[u8]>>,
    /// Insertion order, for eviction (oldest first). May name keys already
    /// invalidated; those are skipped.
    order: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Bumped by every invalidation in this shard.
    generation: u64,
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some(v) = self.entries.remove(key) {
            let size = cost(key, &v);
            self.bytes -= size;
            HELD.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Evicts the oldest entries until `size` more bytes fit the budget.
    /// False if this shard has nothing left to give.
    fn make_room(&mut self, size: usize) -> bool {
        while HELD.load(Ordering::Relaxed) + size > BUDGET.load(Ordering::Relaxed) {
            match self.order.pop_front() {
                Some(k) => self.remove(&k),
                None => return false,
            }
        }
        true
    }
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() * 2 + value.len() + ENTRY_OVERHEAD
}

pub(crate) struct Cache {
    /// The cached tree, once a caller asked for one.
    tree: OnceLock<String>,
    shards: Vec<Mutex<Shard>>,
}

/// What a reader must hand back to [`Cache::fill`] after a miss.
#[derive(Debug)]
pub(crate) struct Ticket {
    shard: usize,
    generation: u64,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            tree: OnceLock::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Caches reads of `tree` from now on (the first tree asked for wins).
    pub(crate) fn enable(&self, tree: &str) {
        let _ = self.tree.set(tree.to_owned());
    }

    pub(crate) fn covers(&self, tree: &str) -> bool {
        self.tree.get().is_some_and(|t| t == tree)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, or the ticket to fill it after reading the store.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Arc<[u8]>, Ticket> {
        let shard = self.shard_of(key);
        let s = self.lock(shard);
        match s.entries.get(key) {
            Some(v) => Ok(v.clone()),
            None => Err(Ticket {
                shard,
                generation: s.generation,
            }),
        }
    }

    /// Stores what a reader read after a miss, unless a write in the shard
    /// came in between (the value may then be older than that write).
    pub(crate) fn fill(&self, ticket: Ticket, key: &[u8], value: &[u8]) {
        if value.len() > LARGEST_VALUE {
            return;
        }
        let size = cost(key, value);
        let mut s = self.lock(ticket.shard);
        if s.generation != ticket.generation || s.entries.contains_key(key) {
            return;
        }
        if !s.make_room(size) {
            return;
        }
        s.entries.insert(key.to_vec(), Arc::from(value));
        s.order.push_back(key.to_vec());
        s.bytes += size;
        HELD.fetch_add(size, Ordering::Relaxed);
        // Invalidated keys linger in the queue; drop them before it grows
        // far past the entries.
        if s.order.len() > 2 * s.entries.len() + 64 {
            let Shard { entries, order, .. } = &mut *s;
            order.retain(|k| entries.contains_key(k));
        }
    }

    /// Forgets keys a committed transaction wrote.
    pub(crate) fn invalidate<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        for key in keys {
            let key = key.as_ref();
            let mut s = self.lock(self.shard_of(key));
            s.generation += 1;
            s.remove(key);
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let held: usize = self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum();
        HELD.fetch_sub(held, Ordering::Relaxed);
    }
}

type Registry = Mutex<HashMap<PathBuf, Weak<Cache>>>;

/// The cache of the file at `path`, shared with the other handles on it;
/// a fresh one if the file is new (`created`).
pub(crate) fn for_file(path: &Path, created: bool) -> Arc<Cache> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let mut registry = REGISTRY
        .get_or_init(Registry::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    registry.retain(|_, w| w.strong_count() > 0);
    if !created {
        if let Some(cache) = registry.get(path).and_then(Weak::upgrade) {
            return cache;
        }
    }
    let cache = Arc::new(Cache::new());
    registry.insert(path.to_owned(), Arc::downgrade(&cache));
    cache
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let cache = Cache::new();
        cache.enable("items");
        let ticket = cache.get(b"k").unwrap_err();
        // A write commits and invalidates between the read and the fill.
        cache.invalidate([b"k"]);
        cache.fill(ticket, b"k", b"old");
        assert!(cache.get(b"k").is_err());
        let ticket = cache.get(b"k").unwrap_err();
        cache.fill(ticket, b"k", b"new");
        assert_eq!(&*cache.get(b"k").unwrap(), b"new");
        cache.invalidate([b"k"]);
        assert!(cache.get(b"k").is_err());
    }

    #[test]
    fn handles_share_a_cache_until_the_file_is_new() {
        let path = Path::new("/nonexistent/cache-test.db");
        let a = for_file(path, true);
        let b = for_file(path, false);
        assert!(Arc::ptr_eq(&a, &b));
        let c = for_file(path, true);
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn the_budget_holds() {
        let cache = Cache::new();
        let value = vec![7u8; 60 * 1024];
        for i in 0..2000u32 {
            let key = i.to_be_bytes();
            if let Err(t) = cache.get(&key) {
                cache.fill(t, &key, &value);
            }
        }
        assert!(HELD.load(Ordering::Relaxed) <= DEFAULT_BUDGET);
        let held: usize = cache.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
        assert!(held > DEFAULT_BUDGET / 2, "{held}");
    }
}
