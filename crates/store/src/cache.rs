//! A read cache for one tree of a store (DynamoDB's items): a hit answers a
//! read without a SQLite transaction, a B-tree descent or a page decryption.
//!
//! Coherence: every key a transaction writes in the cached tree is
//! invalidated after the transaction commits and before the writer returns,
//! and its new value cached (write-through; what a rolled-back member wrote
//! is only invalidated). A reader records its shard's generation
//! before it reads the store, and inserts what it read only if no
//! invalidation in that shard happened meanwhile, so a value read before a
//! commit never lands in the cache after it. Between a commit and its
//! invalidation a reader may still see the old value; the write has not
//! returned yet, so it is not acknowledged.
//!
//! Layout: each shard appends its records (key and value) to slabs of a
//! fixed size and evicts its oldest slab whole, so memory is the slabs plus
//! an index from a key's 64-bit hash to its record, and the budget counts
//! what is really held. A value allocated on its own rounds up to its
//! allocator's size class and needed a second copy of its key for the
//! eviction order: with 1 KB items that held 1.3 to 1.5 times the bytes it
//! counted (BENCHMARKS.md). A record found through the index is a hit only
//! if its key is the key asked for, so two keys with one hash cost a miss,
//! never a wrong answer. A record of an invalidated key stays in its slab,
//! unreachable, until the slab goes: evicted, or freed as soon as none of
//! its records is reachable.
//!
//! Every handle on one file shares one cache (a table's handle is replaced
//! when its description changes, and requests holding the old handle may
//! still write through it). A file created anew gets a fresh cache.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What all caches of the process may hold together, in bytes, unless
/// [`set_budget`] says otherwise.
///
/// 128 MiB of slabs holds 100,000 items of 1 KB (96 MiB held four in five
/// of them when every value had an allocation of its own and the budget
/// counted less than was resident), and keeps a server with a million items
/// under 300 MB once the cache is full (BENCHMARKS.md).
pub(crate) const DEFAULT_BUDGET: usize = 128 * 1024 * 1024;

/// The process's budget, shared by the caches of all its stores.
static POOL: Pool = Pool {
    budget: AtomicUsize::new(DEFAULT_BUDGET),
    held: AtomicUsize::new(0),
};

/// Sets what all caches of the process may hold together; 0 turns caching
/// off. Caches above a lowered budget shrink as they are next filled.
pub(crate) fn set_budget(bytes: usize) {
    POOL.budget.store(bytes, Ordering::Relaxed);
}

/// Bytes that caches share: their budget and what they hold.
pub(crate) struct Pool {
    budget: AtomicUsize,
    held: AtomicUsize,
}

/// The unit of allocation and of eviction.
const SLAB_BYTES: usize = 256 * 1024;
/// Larger values are not cached: one would displace hundreds of small ones.
const LARGEST_VALUE: usize = 64 * 1024;
/// A record's header in its slab: the key's length (u16), the value's (u32).
const RECORD_HEADER: usize = 6;
/// What an index entry costs (slot, control byte, the table's spare room),
/// charged to the slab that holds its record.
const INDEX_ENTRY: usize = 32;
const SHARDS: usize = 16;

/// Where a record starts: its slab's sequence number and the offset in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Slot {
    slab: u32,
    offset: u32,
}

struct Slab {
    /// Empty once freed.
    records: Vec<u8>,
    /// Bytes of records plus their index entries: what the slab may still
    /// take is `SLAB_BYTES - charged`.
    charged: usize,
    /// Records the index leads to. A slab none of whose records is reachable
    /// any more (its keys were all written) is freed at once, not when it
    /// would be evicted: writes give memory back as they did when every
    /// value had an allocation of its own.
    live: usize,
    held: bool,
}

/// The index's keys are hashes already: its hasher passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    index: HashMap<u64, Slot, BuildHasherDefault<Prehashed>>,
    /// Oldest first; `slabs[0]` has the sequence number `first_slab`.
    slabs: VecDeque<Slab>,
    first_slab: u32,
    /// Slabs not yet freed.
    allocated: usize,
    /// Bumped by every invalidation in this shard.
    generation: u64,
    /// The memory of the slab evicted last, for the next one: a full
    /// cache evicts a slab for every one it fills, and need not give the
    /// allocator 256 KiB back only to ask for as much again. (Outside the
    /// budget: one slab a shard at most.)
    spare: Option<Vec<u8>>,
}

/// A record's key and value, read from its slab.
fn record_at(slab: &Slab, offset: usize) -> Option<(&[u8], &[u8])> {
    let header = slab.records.get(offset..offset + RECORD_HEADER)?;
    let key_len = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let value_len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let key_start = offset + RECORD_HEADER;
    let key = slab.records.get(key_start..key_start + key_len)?;
    let value_start = key_start + key_len;
    let value = slab.records.get(value_start..value_start + value_len)?;
    Some((key, value))
}

impl Shard {
    fn slab(&self, number: u32) -> Option<&Slab> {
        self.slabs
            .get(number.wrapping_sub(self.first_slab) as usize)
    }

    fn slab_mut(&mut self, number: u32) -> Option<&mut Slab> {
        self.slabs
            .get_mut(number.wrapping_sub(self.first_slab) as usize)
    }

    /// The sequence number of the newest slab, the one being filled.
    fn newest(&self) -> u32 {
        self.first_slab
            .wrapping_add(self.slabs.len() as u32)
            .wrapping_sub(1)
    }

    /// Gives a slab's memory back to the pool; its place in the sequence
    /// stays until it is the oldest.
    fn free(&mut self, number: u32, pool: &Pool) {
        let Some(slab) = self.slab_mut(number) else {
            return;
        };
        if slab.held {
            slab.records = Vec::new();
            slab.held = false;
            self.allocated -= 1;
            pool.held.fetch_sub(SLAB_BYTES, Ordering::Relaxed);
        }
        while self.slabs.front().is_some_and(|s| !s.held) {
            self.slabs.pop_front();
            self.first_slab = self.first_slab.wrapping_add(1);
        }
    }

    /// Notes that the index no longer leads to the record at `slot`.
    fn unlink(&mut self, slot: Slot, pool: &Pool) {
        let newest = self.newest();
        let Some(slab) = self.slab_mut(slot.slab) else {
            return;
        };
        slab.live = slab.live.saturating_sub(1);
        if slab.live == 0 && slot.slab != newest {
            self.free(slot.slab, pool);
        }
    }

    /// The value of `key` if the record its hash leads to is that key's.
    fn value(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        let slot = self.index.get(&hash)?;
        let (k, v) = record_at(self.slab(slot.slab)?, slot.offset as usize)?;
        (k == key).then_some(v)
    }

    /// Drops the oldest slab and the index entries that lead into it.
    /// False if there is none.
    fn evict_oldest(&mut self, pool: &Pool, hasher: &RandomState) -> bool {
        let Some(slab) = self.slabs.pop_front() else {
            return false;
        };
        let number = self.first_slab;
        self.first_slab = number.wrapping_add(1);
        if !slab.held {
            return true;
        }
        self.allocated -= 1;
        let mut offset = 0;
        while let Some((key, value)) = record_at(&slab, offset) {
            let hash = hasher.hash_one(key);
            let here = Slot {
                slab: number,
                offset: offset as u32,
            };
            // A key written and cached again since has a newer record.
            if self.index.get(&hash) == Some(&here) {
                self.index.remove(&hash);
            }
            offset += RECORD_HEADER + key.len() + value.len();
        }
        pool.held.fetch_sub(SLAB_BYTES, Ordering::Relaxed);
        let mut records = slab.records;
        records.clear();
        self.spare = Some(records);
        true
    }

    /// Evicts the oldest slabs until a new one fits the budget and this
    /// shard's share of it (a sixteenth: shards that filled first would
    /// otherwise keep more for good, and older records than the rest).
    /// False if this shard has nothing left to give.
    fn make_room(&mut self, pool: &Pool, hasher: &RandomState) -> bool {
        let budget = pool.budget.load(Ordering::Relaxed);
        let share = (budget / SHARDS).max(SLAB_BYTES);
        while pool.held.load(Ordering::Relaxed) + SLAB_BYTES > budget
            || (self.allocated + 1) * SLAB_BYTES > share
        {
            if !self.evict_oldest(pool, hasher) {
                return false;
            }
        }
        true
    }
}

pub(crate) struct Cache {
    /// The cached tree, once a caller asked for one.
    tree: OnceLock<String>,
    pool: &'static Pool,
    /// Hashes keys for the shards and their indexes (keyed per process, so
    /// that nobody can choose keys that collide).
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    /// Held from a commit through the cache's update ([`Cache::commit`]).
    /// Handles on one file have writers of their own but share this cache:
    /// without it, a handle that committed first could write its (older)
    /// values in after another's newer ones.
    commit_order: Mutex<()>,
}

/// A key of the cached tree a transaction wrote and the value it wrote
/// (`None`: deleted, or not to be cached).
pub(crate) type Written = (Vec<u8>, Option<Vec<u8>>);

/// What a reader must hand back to [`Cache::fill`] after a miss.
#[derive(Debug)]
pub(crate) struct Ticket {
    hash: u64,
    generation: u64,
}

impl Cache {
    fn new(pool: &'static Pool) -> Cache {
        Cache {
            tree: OnceLock::new(),
            pool,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            commit_order: Mutex::new(()),
        }
    }

    /// Caches reads of `tree` from now on (the first tree asked for wins).
    pub(crate) fn enable(&self, tree: &str) {
        let _ = self.tree.set(tree.to_owned());
    }

    /// Whether a value that size would be cached now (values are copied
    /// for [`Cache::written`] only if so).
    pub(crate) fn takes(&self, value_len: usize) -> bool {
        value_len <= LARGEST_VALUE && self.pool.budget.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn covers(&self, tree: &str) -> bool {
        self.tree.get().is_some_and(|t| t == tree)
    }

    /// The shard of a hash: bits the index's table does not use (it takes
    /// its buckets from the low bits and its control bytes from the top).
    fn lock(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        let shard = (hash >> 32) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the cached value, or the ticket to fill it after reading
    /// the store.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Vec<u8>, Ticket> {
        self.get_hashed(self.hasher.hash_one(key), key)
    }

    fn get_hashed(&self, hash: u64, key: &[u8]) -> Result<Vec<u8>, Ticket> {
        let s = self.lock(hash);
        match s.value(hash, key) {
            Some(v) => Ok(v.to_vec()),
            None => Err(Ticket {
                hash,
                generation: s.generation,
            }),
        }
    }

    /// Stores what a reader read after a miss, unless a write in the shard
    /// came in between (the value may then be older than that write).
    pub(crate) fn fill(&self, ticket: Ticket, key: &[u8], value: &[u8]) {
        let Ok(key_len) = u16::try_from(key.len()) else {
            return;
        };
        if value.len() > LARGEST_VALUE {
            return;
        }
        let hash = ticket.hash;
        let mut s = self.lock(hash);
        if s.generation != ticket.generation || s.value(hash, key).is_some() {
            return;
        }
        self.insert(&mut s, hash, key_len, key, value);
    }

    /// Appends a record of `key` and `value` to the shard and points the
    /// index at it.
    fn insert(&self, s: &mut Shard, hash: u64, key_len: u16, key: &[u8], value: &[u8]) {
        let charge = RECORD_HEADER + key.len() + value.len() + INDEX_ENTRY;
        let fits = s
            .slabs
            .back()
            .is_some_and(|slab| slab.charged + charge <= SLAB_BYTES);
        if !fits {
            // The slab being filled is done: free now if nothing in it is
            // reachable.
            if s.slabs.back().is_some_and(|slab| slab.live == 0) {
                let newest = s.newest();
                s.free(newest, self.pool);
            }
            if !s.make_room(self.pool, &self.hasher) {
                return;
            }
            self.pool.held.fetch_add(SLAB_BYTES, Ordering::Relaxed);
            s.allocated += 1;
            s.slabs.push_back(Slab {
                records: s
                    .spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(SLAB_BYTES - INDEX_ENTRY)),
                charged: 0,
                live: 0,
                held: true,
            });
        }
        let number = s.newest();
        let slab = s.slabs.back_mut().expect("a slab was just ensured");
        let offset = slab.records.len() as u32;
        slab.records.extend_from_slice(&key_len.to_le_bytes());
        slab.records
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        slab.records.extend_from_slice(key);
        slab.records.extend_from_slice(value);
        slab.charged += charge;
        slab.live += 1;
        let slot = Slot {
            slab: number,
            offset,
        };
        // Another key's record under the same hash is unreachable now.
        if let Some(other) = s.index.insert(hash, slot) {
            s.unlink(other, self.pool);
        }
    }

    /// Forgets keys a committed transaction wrote.
    pub(crate) fn invalidate<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        for key in keys {
            let hash = self.hasher.hash_one(key.as_ref());
            self.forget(&mut self.lock(hash), hash);
        }
    }

    /// Runs `commit` and takes in `writes` (what the transaction wrote, in
    /// order) as it turns out: cached if it committed, only invalidated if
    /// not. Commits of every handle on the file, with their updates, run
    /// one at a time, so writes reach the cache in commit order.
    pub(crate) fn commit<T, E>(
        &self,
        writes: impl IntoIterator<Item = Written>,
        commit: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let _order = self.commit_order.lock().unwrap_or_else(|p| p.into_inner());
        let committed = commit();
        if committed.is_ok() {
            self.written(writes);
        } else {
            self.invalidate(writes.into_iter().map(|(key, _)| key));
        }
        committed
    }

    /// Takes in what a committed transaction wrote, in the order written
    /// (write-through): each key's new value is cached, and a key without
    /// one (deleted, or written by a member that rolled back) forgotten.
    ///
    /// The write is the one moment the value is at hand: an item read soon
    /// after it is written (and the items of a table just loaded, up to the
    /// budget) is a hit, where it was a miss that read the store. GetItem
    /// +9%, mixed +17% right after loading 100,000 items (BENCHMARKS.md).
    fn written(&self, writes: impl IntoIterator<Item = Written>) {
        for (key, value) in writes {
            let hash = self.hasher.hash_one(&key);
            let mut s = self.lock(hash);
            self.forget(&mut s, hash);
            let (Some(value), Ok(key_len)) = (value, u16::try_from(key.len())) else {
                continue;
            };
            if self.takes(value.len()) {
                self.insert(&mut s, hash, key_len, &key, &value);
            }
        }
    }

    /// Drops the record the hash leads to (whichever key's: at worst a
    /// miss) and refuses the fills of readers that read before.
    fn forget(&self, s: &mut Shard, hash: u64) {
        s.generation += 1;
        if let Some(slot) = s.index.remove(&hash) {
            s.unlink(slot, self.pool);
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let slabs: usize = self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).allocated)
            .sum();
        self.pool
            .held
            .fetch_sub(slabs * SLAB_BYTES, Ordering::Relaxed);
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
    let cache = Arc::new(Cache::new(&POOL));
    registry.insert(path.to_owned(), Arc::downgrade(&cache));
    cache
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with a budget of its own (tests run side by side).
    fn cache(budget: usize) -> Cache {
        let pool = Box::leak(Box::new(Pool {
            budget: AtomicUsize::new(budget),
            held: AtomicUsize::new(0),
        }));
        let cache = Cache::new(pool);
        cache.enable("items");
        cache
    }

    fn put(cache: &Cache, key: &[u8], value: &[u8]) {
        if let Err(ticket) = cache.get(key) {
            cache.fill(ticket, key, value);
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let cache = cache(DEFAULT_BUDGET);
        let ticket = cache.get(b"k").unwrap_err();
        // A write commits and invalidates between the read and the fill.
        cache.invalidate([b"k"]);
        cache.fill(ticket, b"k", b"old");
        assert!(cache.get(b"k").is_err());
        let ticket = cache.get(b"k").unwrap_err();
        cache.fill(ticket, b"k", b"new");
        assert_eq!(cache.get(b"k").unwrap(), b"new");
        cache.invalidate([b"k"]);
        assert!(cache.get(b"k").is_err());
        // Cached again after the write, from the newer read.
        put(&cache, b"k", b"newer");
        assert_eq!(cache.get(b"k").unwrap(), b"newer");
    }

    #[test]
    fn writes_are_cached_through_in_their_order() {
        let cache = cache(DEFAULT_BUDGET);
        put(&cache, b"k", b"read");
        put(&cache, b"gone", b"old");
        put(&cache, b"big", b"small");
        let raced = cache.get(b"new").unwrap_err();
        cache.written([
            (b"k".to_vec(), Some(b"first".to_vec())),
            (b"gone".to_vec(), None),
            (b"k".to_vec(), Some(b"second".to_vec())),
            (b"big".to_vec(), Some(vec![7; LARGEST_VALUE + 1])),
            (b"new".to_vec(), Some(b"written".to_vec())),
        ]);
        assert_eq!(cache.get(b"k").unwrap(), b"second");
        assert!(cache.get(b"gone").is_err());
        assert!(cache.get(b"big").is_err());
        assert_eq!(cache.get(b"new").unwrap(), b"written");
        // A read from before the write does not replace what it wrote.
        cache.fill(raced, b"new", b"stale");
        assert_eq!(cache.get(b"new").unwrap(), b"written");
        // Without a budget nothing is cached, written or read.
        let off = super::tests::cache(0);
        off.written([(b"k".to_vec(), Some(b"v".to_vec()))]);
        assert!(off.get(b"k").is_err());
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

    /// The budget is what the slabs hold; within it, 1 KB values cost
    /// little more than their bytes, and the oldest go first.
    #[test]
    fn the_budget_holds_and_the_oldest_go() {
        let budget = 32 * 1024 * 1024;
        let cache = cache(budget);
        let value = vec![7u8; 1024];
        let key = |i: u32| format!("item{i}").into_bytes();
        let n = 60_000;
        for i in 0..n {
            put(&cache, &key(i), &value);
            assert!(cache.pool.held.load(Ordering::Relaxed) <= budget);
        }
        let cached: Vec<u32> = (0..n).filter(|i| cache.get(&key(*i)).is_ok()).collect();
        // A record and its index entry take 1,068 bytes: 31,400 would fill
        // the budget, and each shard's newest slab is half full on average
        // (eight slabs a shard here), so about 29,000 stay.
        assert!(cached.len() > 27_000, "{}", cached.len());
        // What is left is the newest: evictions took the oldest slabs, and
        // no shard keeps more than its share.
        assert!(
            cached.iter().all(|i| *i >= n - 34_000),
            "{:?}",
            &cached[..5]
        );
        assert_eq!(cache.get(&key(n - 1)).unwrap(), value);
        // Large values are not cached; a budget of 0 caches nothing.
        put(&cache, b"large", &vec![1u8; LARGEST_VALUE + 1]);
        assert!(cache.get(b"large").is_err());
        let off = super::tests::cache(0);
        put(&off, b"k", b"v");
        assert!(off.get(b"k").is_err());
    }

    /// A slab whose records were all written (invalidated) goes back to
    /// the pool at once; the slab being filled stays.
    #[test]
    fn a_slab_whose_keys_were_all_written_is_freed() {
        let cache = cache(DEFAULT_BUDGET);
        let shard_of = |key: &[u8]| (cache.hasher.hash_one(key) >> 32) as usize % SHARDS;
        let keys: Vec<Vec<u8>> = (0..)
            .map(|i: u32| format!("k{i}").into_bytes())
            .filter(|k| shard_of(k) == 0)
            .take(70)
            .collect();
        let value = vec![5u8; 4000];
        for key in &keys {
            put(&cache, key, &value);
        }
        assert_eq!(cache.pool.held.load(Ordering::Relaxed), 2 * SLAB_BYTES);
        cache.invalidate(&keys[..69]);
        assert_eq!(cache.pool.held.load(Ordering::Relaxed), SLAB_BYTES);
        assert_eq!(cache.get(&keys[69]).unwrap(), value);
        cache.invalidate(&keys[69..]);
        assert_eq!(cache.pool.held.load(Ordering::Relaxed), SLAB_BYTES);
        // Filling goes on in the newest slab, then in fresh ones.
        for key in &keys {
            put(&cache, key, &value);
        }
        assert_eq!(cache.pool.held.load(Ordering::Relaxed), 2 * SLAB_BYTES);
        assert!(keys.iter().all(|k| cache.get(k).is_ok()));
        let shard = cache.lock(cache.hasher.hash_one(&keys[0]));
        assert_eq!((shard.slabs.len(), shard.allocated), (2, 2));
    }

    /// Two keys behind one hash: each read of either is its own value or
    /// a miss, never the other's.
    #[test]
    fn keys_that_share_a_hash_never_answer_for_each_other() {
        let cache = cache(DEFAULT_BUDGET);
        let hash = 0x1234_5678_9abc_def0;
        let a = cache.get_hashed(hash, b"a").unwrap_err();
        cache.fill(a, b"a", b"value of a");
        assert_eq!(cache.get_hashed(hash, b"a").unwrap(), b"value of a");
        let b = cache.get_hashed(hash, b"b").unwrap_err();
        cache.fill(b, b"b", b"value of b");
        assert_eq!(cache.get_hashed(hash, b"b").unwrap(), b"value of b");
        assert!(cache.get_hashed(hash, b"a").is_err());
    }

    /// Evicting a slab drops the entries of its records but keeps those
    /// of keys cached again since in a newer one; the cache's bytes go back
    /// to the pool when it goes.
    #[test]
    fn eviction_spares_newer_records_and_drop_returns_the_bytes() {
        let cache = cache(DEFAULT_BUDGET);
        let shard_of = |key: &[u8]| (cache.hasher.hash_one(key) >> 32) as usize % SHARDS;
        let first = b"k0".to_vec();
        // Keys of the same shard as the first, enough for two slabs.
        let same_shard: Vec<Vec<u8>> = (1..)
            .map(|i: u32| format!("k{i}").into_bytes())
            .filter(|k| shard_of(k) == shard_of(&first))
            .take(70)
            .collect();
        let value = vec![3u8; 4000];
        put(&cache, &first, b"old");
        cache.invalidate([&first]);
        for key in &same_shard {
            put(&cache, key, &value);
        }
        put(&cache, &first, b"new");
        assert_eq!(cache.lock(cache.hasher.hash_one(&first)).slabs.len(), 2);
        assert!(cache
            .lock(cache.hasher.hash_one(&first))
            .evict_oldest(cache.pool, &cache.hasher));
        assert_eq!(cache.get(&first).unwrap(), b"new");
        assert!(cache.get(&same_shard[0]).is_err());
        assert_eq!(cache.get(&same_shard[69]).unwrap(), value);
        let pool = cache.pool;
        assert_eq!(pool.held.load(Ordering::Relaxed), SLAB_BYTES);
        drop(cache);
        assert_eq!(pool.held.load(Ordering::Relaxed), 0);
    }
}
