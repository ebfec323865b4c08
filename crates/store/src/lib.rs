//! The encrypted embedded store: ordered key-value trees in one file per
//! store, with atomic transactions, durable commits and consistent snapshots.
//!
//! The engine is SQLCipher (SQLite with page encryption) through rusqlite's
//! bundled build. Every page of the database, its write-ahead log and its
//! snapshots is encrypted with AES-256 and authenticated with an HMAC (see
//! `FORMAT`), so no key, value or tree name is in any file in plaintext, and
//! a flipped byte is reported as corruption instead of being read as data.
//! Temporary data is kept in memory, never in temporary files.
//!
//! Architecture invariant: knows nothing of Moat's services or of where its
//! key comes from; the caller hands it the database key (from `moat-keys`).
//! The rest of Moat reaches the engine only through [`Db`] and [`Tx`].

mod cache;
mod checkpoint;
mod cipher;
mod wal_writes;

use std::any::Any;
use std::cell::RefCell;
use std::ops::{Bound, Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use cipher::PageCipher;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is damaged, or was not written with this key.
    #[error("the store {path} is corrupt or was encrypted with another key")]
    Corrupt { path: String },
    #[error("the store {path} failed: {message}")]
    Engine { path: String, message: String },
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A change to one stored value that adds up with its kind's others, such
/// as a count. A group commit's members add theirs up ([`Tx::tally`]) and
/// the group writes the sum once, just before its COMMIT, instead of each
/// member reading and writing the value (a fifth of the writer's work per
/// PutItem was its table's count and size).
///
/// The stored value must change only through tallies while a group is
/// open: a member that reads it sees neither its group's tallies nor its
/// own. Read it in a transaction of its own ([`Db::lock`]), which commits
/// any open group, tallies included, first.
pub trait Tally: Send + 'static {
    /// Adds `other`, a tally of the same name (and so of the same type).
    fn absorb(&mut self, other: &dyn Any);
    /// Writes the sum into the store: reads the stored value and writes it
    /// changed.
    fn write(&self, tx: &Tx<'_>) -> Result<(), StoreError>;
    fn as_any(&self) -> &dyn Any;
}

/// Tallies by name, at most one of each.
type Tallies = Vec<(&'static str, Box<dyn Tally>)>;

fn add_tally(tallies: &mut Tallies, name: &'static str, tally: Box<dyn Tally>) {
    match tallies.iter_mut().find(|(n, _)| *n == name) {
        Some((_, sum)) => sum.absorb(tally.as_any()),
        None => tallies.push((name, tally)),
    }
}

/// One encrypted store file.
pub struct Db {
    path: PathBuf,
    /// Shared with the checkpointer, which opens connections of its own.
    key_hex: Arc<Mutex<String>>,
    format: Format,
    /// The writer: every transaction.
    conn: Mutex<Writer>,
    /// Transactions waiting for the writer (threads in [`Db::transaction`],
    /// tasks in [`Db::transaction_async`]): while there are any, a finished
    /// transaction leaves the group open for them, and the last one commits
    /// the whole group with one fsync.
    joiners: AtomicUsize,
    /// Times every commit (a group's, or a transaction's of its own
    /// through [`Db::lock`]).
    commit_clock: CommitClock,
    /// [`IN_PLACE_NOW`] (a test gives its store a count of its own, apart
    /// from the tests running beside it).
    in_place_now: &'static AtomicUsize,
    /// Tasks waiting for the writer, woken whenever it is released.
    waiting_tasks: Wakers,
    /// Readers for reads outside a transaction. With the write-ahead log
    /// they read the last commit while the writer commits the next, so a
    /// read never waits for a writer's fsync. Opened on demand, kept for
    /// reuse (at most `MAX_READERS`).
    readers: Mutex<Vec<Connection>>,
    /// Reads of one tree answered from memory (see [`Db::cache_reads`]).
    cache: Arc<cache::Cache>,
    /// How long a group's commit pauses between COMMIT and the cache's
    /// update (tests hold a commit there).
    #[cfg(test)]
    pause_after_commit: std::sync::atomic::AtomicU64,
    /// Group commits run in `block_in_place`.
    #[cfg(test)]
    handed_over: AtomicUsize,
}

/// What the read caches of all stores of the process hold together unless
/// [`set_read_cache_budget`] says otherwise.
pub const DEFAULT_READ_CACHE_BYTES: usize = cache::DEFAULT_BUDGET;

/// Sets how many bytes the read caches of all stores of the process may hold
/// together; 0 turns them off.
pub fn set_read_cache_budget(bytes: usize) {
    cache::set_budget(bytes);
}

const MAX_READERS: usize = 4;
/// The most transactions one group commit holds (a bound on latency).
const MAX_GROUP: usize = 128;
/// A group of at most this many writes (puts and deletes), of at most
/// [`IN_PLACE_BYTES`] of keys and values, may commit on its task's worker
/// thread; see [`Db::transaction_async`] for the other conditions.
const IN_PLACE_WRITES: usize = 32;
const IN_PLACE_BYTES: usize = 64 << 10;
/// A group commit that took this long or longer was slow.
const QUICK_COMMIT: std::time::Duration = std::time::Duration::from_millis(1);
/// Commits running on worker threads, in all stores of the process: at
/// most one fewer than the runtime's workers, so that one always goes on.
static IN_PLACE_NOW: AtomicUsize = AtomicUsize::new(0);

/// Whether a store's last commit was slow: one that took
/// [`QUICK_COMMIT`] or longer (tests set a longer threshold, so that their
/// commits count as quick on a slow machine too).
struct CommitClock {
    slow: AtomicBool,
    quick: std::time::Duration,
}

impl CommitClock {
    /// Runs `commit`, noting whether it was slow.
    fn time<R>(&self, commit: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let out = commit();
        self.slow
            .store(started.elapsed() >= self.quick, Ordering::Relaxed);
        out
    }

    fn last_was_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }
}

/// A place among the commits running in place ([`IN_PLACE_NOW`]), given
/// back when dropped.
struct InPlace(&'static AtomicUsize);

impl InPlace {
    fn take(now: &'static AtomicUsize, workers: usize) -> Option<InPlace> {
        let before = now.fetch_add(1, Ordering::SeqCst);
        if before + 1 < workers {
            Some(InPlace(now))
        } else {
            now.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The writer connection and its open group, if any.
struct Writer {
    conn: Connection,
    /// The group whose transaction is open on `conn`.
    group: Option<Arc<Group>>,
    members: usize,
    /// The puts and deletes of the open group's kept members, and the
    /// bytes of the keys and values they put.
    writes: usize,
    written_bytes: usize,
    /// What the open group wrote in the cached tree, taken in by the cache
    /// once it commits.
    touched: Vec<cache::Written>,
    /// What the open group's kept members tallied, written at its commit.
    tallies: Tallies,
    /// Runs the checkpoints `conn` asks for; declared after it, so it
    /// outlives it (`conn`'s log hook points at it).
    checkpointer: Arc<checkpoint::Checkpointer>,
}

/// Tasks to wake when something they wait for happens.
#[derive(Default)]
struct Wakers(Mutex<Vec<Waker>>);

impl Wakers {
    fn add(&self, waker: &Waker) {
        let mut wakers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The writer, held. Releasing it wakes the tasks waiting for it.
struct WriterGuard<'a> {
    guard: Option<MutexGuard<'a, Writer>>,
    waiting_tasks: &'a Wakers,
}

impl Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if let Some(writer) = &self.guard {
            // A group left open keeps what it wrote; with no transaction
            // open, anything still gathered was rolled back.
            if writer.conn.is_autocommit() {
                wal_writes::discard_unpublished(&writer.conn);
            }
        }
        drop(self.guard.take());
        self.waiting_tasks.wake_all();
    }
}

/// One group commit's outcome, awaited by its members: threads on the
/// condition variable, tasks through their wakers.
#[derive(Default)]
struct Group {
    outcome: Mutex<GroupOutcome>,
    decided: Condvar,
}

#[derive(Default)]
struct GroupOutcome {
    decided: Option<Result<(), StoreError>>,
    waiting_tasks: Vec<Waker>,
}

impl Group {
    fn finish(&self, outcome: Result<(), StoreError>) {
        let wakers = {
            let mut state = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            state.decided = Some(outcome);
            std::mem::take(&mut state.waiting_tasks)
        };
        self.decided.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    fn wait(&self) -> Result<(), StoreError> {
        let mut state = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(o) = state.decided.as_ref() {
                return o.clone();
            }
            state = self.decided.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn poll_decided(&self, cx: &Context<'_>) -> Poll<Result<(), StoreError>> {
        let mut state = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        match state.decided.as_ref() {
            Some(o) => Poll::Ready(o.clone()),
            None => {
                // A task polled again (woken for something else) is not
                // listed twice.
                if !state.waiting_tasks.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiting_tasks.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// A member that has run in its group ([`Db::join_group`]).
struct Joined<T, E> {
    group: Arc<Group>,
    /// What the member's transaction returned.
    out: Result<T, E>,
    /// Whether this member must commit the group now: no transaction is
    /// waiting to join, or the group is full.
    last: bool,
}

/// A task counted among the joiners until it holds the writer. A task that
/// gives up waiting may have been the one a member left its group open
/// for: if no joiner is left, it commits that group itself.
struct Joining<'a> {
    db: &'a Db,
    waiting: bool,
}

impl<'a> Joining<'a> {
    fn new(db: &'a Db) -> Joining<'a> {
        db.joiners.fetch_add(1, Ordering::SeqCst);
        Joining { db, waiting: true }
    }

    fn joined(mut self) {
        self.waiting = false;
        self.db.joiners.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if self.waiting && self.db.joiners.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut writer = self.db.lock_writer();
            if self.db.joiners.load(Ordering::SeqCst) == 0 {
                let _ = self.db.commit_group(&mut writer);
            }
        }
    }
}

/// A write transaction: everything in it commits durably together, or nothing does.
pub struct Tx<'a> {
    tx: TxConn<'a>,
    path: &'a Path,
    cache: &'a cache::Cache,
    /// What this transaction wrote in the cached tree.
    touched: RefCell<Vec<cache::Written>>,
    /// What this group member tallied, for its group to write if it is kept.
    tallies: RefCell<Tallies>,
    /// Its puts and deletes so far, and the bytes of what it put.
    writes: std::cell::Cell<usize>,
    written_bytes: std::cell::Cell<usize>,
}

/// A transaction of its own (across tables, see [`Db::lock`]), or a member
/// of a group commit (a savepoint in the group's transaction).
enum TxConn<'a> {
    /// With its store's clock, which times its commit as a group's.
    Own(rusqlite::Transaction<'a>, &'a CommitClock),
    Member(&'a Connection),
}

/// Runs one statement of the group commit's, prepared once per connection:
/// every transaction runs three of them, and parsing them anew each time was
/// 3% of a PutItem.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn engine_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let corrupt = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt)
    );
    if corrupt {
        StoreError::Corrupt {
            path: path.display().to_string(),
        }
    } else {
        StoreError::Engine {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// How a store file's pages are laid out and sealed. Every page is
/// encrypted with AES-256 under the store's key and authenticated with an
/// HMAC (SQLCipher's design); the format picks the page size, the HMAC's
/// hash and the cipher's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Format {
    page_size: u32,
    /// The value of SQLCipher's `cipher_hmac_algorithm`.
    hmac: &'static str,
    cipher: PageCipher,
}

/// The format of new stores.
///
/// 4 KiB pages: each write seals and writes every page it changed, and each
/// read that misses the caches opens (decrypts and authenticates) an index
/// leaf and a table leaf, so smaller pages are cheaper both ways. With rows
/// in a rowid table, a leaf keeps a row of up to about 4 KB whole; larger
/// items go on overflow pages, twice as many of them as with 8 KiB pages.
/// Against 8 KiB pages, PutItem of 1 KB items is about 8% faster (14% on a
/// table of a million items) and GetItem on a million items up to 30% while
/// the caches are cold, PutItem of 100 KB items 10% slower (BENCHMARKS.md);
/// DynamoDB's items are mostly small.
///
/// HMAC-SHA256 instead of SQLCipher's default, HMAC-SHA512: this machine
/// class hashes SHA-256 in hardware at twice SHA-512's speed (1.66 against
/// 0.75 GB/s), and the HMAC was the larger half of sealing a page at commit
/// and of opening one on a read (BENCHMARKS.md). It remains a 256-bit MAC
/// under a key of its own.
///
/// AES-256-CTR instead of SQLCipher's CBC: a page seals four times faster
/// ([`PageCipher::Ctr`]), and PutItem gained 5-8% (BENCHMARKS.md).
const FORMAT: Format = Format {
    page_size: 4096,
    hmac: "HMAC_SHA256",
    cipher: PageCipher::Ctr,
};

/// Formats of stores written before, still opened (found by trying, newest
/// first), all in CBC: 4 KiB, 8 KiB and 16 KiB pages with HMAC-SHA256, 16
/// KiB pages with SQLCipher's default HMAC, and SQLCipher's defaults
/// throughout (4 KiB pages with HMAC-SHA512, as snapshots still are).
const OLDER_FORMATS: [Format; 5] = [
    Format {
        page_size: 4096,
        hmac: "HMAC_SHA256",
        cipher: PageCipher::Cbc,
    },
    Format {
        page_size: 8 * 1024,
        hmac: "HMAC_SHA256",
        cipher: PageCipher::Cbc,
    },
    Format {
        page_size: 16 * 1024,
        hmac: "HMAC_SHA256",
        cipher: PageCipher::Cbc,
    },
    Format {
        page_size: 16 * 1024,
        hmac: "HMAC_SHA512",
        cipher: PageCipher::Cbc,
    },
    SNAPSHOT_FORMAT,
];

/// Snapshots are written in SQLCipher's defaults (4 KiB pages, HMAC-SHA512,
/// CBC), which the `sqlcipher` shell opens with the key alone.
const SNAPSHOT_FORMAT: Format = Format {
    page_size: 4096,
    hmac: "HMAC_SHA512",
    cipher: PageCipher::Cbc,
};

/// Opens a connection; in `format` if known, else found by trying.
/// Returns the connection and its format.
fn open_connection(
    path: &Path,
    key_hex: &str,
    flags: OpenFlags,
    format: Option<Format>,
) -> Result<(Connection, Format), StoreError> {
    if let Some(format) = format {
        return Ok((open_in_format(path, key_hex, flags, format)?, format));
    }
    let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        || Path::new(&format!("{}-wal", path.display())).exists();
    if !exists {
        return Ok((open_in_format(path, key_hex, flags, FORMAT)?, FORMAT));
    }
    // A wrong guess fails page 1's authentication, which SQLCipher reports
    // on stderr: quiet while guessing, so that an older store does not log
    // errors at every start. The last guess speaks (a wrong key, a damaged
    // file). Its log level is process-wide, hence one prober at a time.
    static PROBING: Mutex<()> = Mutex::new(());
    // SQLCipher started before the level is set (see `set_cipher_log_level`).
    cipher::install();
    let _probing = PROBING.lock().unwrap_or_else(|p| p.into_inner());
    let formats: Vec<Format> = std::iter::once(FORMAT).chain(OLDER_FORMATS).collect();
    let mut tried = Err(StoreError::Corrupt {
        path: path.display().to_string(),
    });
    for (n, &format) in formats.iter().enumerate() {
        let last = n + 1 == formats.len();
        set_cipher_log_level(if last { "WARN" } else { "NONE" });
        tried = open_in_format(path, key_hex, flags, format).map(|conn| (conn, format));
        // Only a page that fails authentication says "another format (or
        // key)"; any other error is the answer.
        if !matches!(tried, Err(StoreError::Corrupt { .. })) {
            break;
        }
    }
    set_cipher_log_level("WARN");
    tried
}

/// Refuses a connection whose pages would be sealed in another mode than
/// `format`'s: read so, a CTR store would look damaged; written so, it
/// would be. (SQLCipher's own provider, in place if Moat's could not be
/// installed, knows only CBC.)
fn check_page_cipher(conn: &Connection, path: &Path, format: Format) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA cipher", [], |r| r.get(0))
        .map_err(|e| engine_error(path, e))?;
    let wanted = format.cipher.name().to_str().unwrap_or_default();
    if mode == wanted {
        return Ok(());
    }
    Err(StoreError::Engine {
        path: path.display().to_string(),
        message: format!("the store's pages are in {wanted}, and the page cipher here is {mode}"),
    })
}

/// Another connection to an open store, with its current key.
fn open_again(
    path: &Path,
    key_hex: &Mutex<String>,
    flags: OpenFlags,
    format: Format,
) -> Result<Connection, StoreError> {
    let key_hex = key_hex.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(open_connection(path, &key_hex, flags, Some(format))?.0)
}

/// Sets SQLCipher's (process-wide) log level; WARN is its default.
///
/// SQLCipher sets its logging up when the process's first codec starts,
/// which would undo a level set before: `cipher::install`, which every
/// open runs first, has started one.
fn set_cipher_log_level(level: &str) {
    if let Ok(conn) = Connection::open_in_memory() {
        let _ = conn.query_row(
            &format!("PRAGMA cipher_log_level = {level}"),
            [],
            |_| Ok(()),
        );
    }
}

fn open_in_format(
    path: &Path,
    key_hex: &str,
    flags: OpenFlags,
    format: Format,
) -> Result<Connection, StoreError> {
    let err = |e| engine_error(path, e);
    // Before the first key: a codec made before takes SQLCipher's provider.
    cipher::install();
    // Log writes gathered per commit (`wal_writes`) where the VFS could be
    // registered; SQLite's own otherwise.
    let conn = if wal_writes::registered() {
        Connection::open_with_flags_and_vfs(path, flags, wal_writes::NAME)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(err)?;
    // A raw 256-bit key: no passphrase derivation, the key hierarchy made it.
    cipher::keyed_as(format.cipher, || {
        conn.execute_batch(&format!(
            "PRAGMA key = \"x'{key_hex}'\"; PRAGMA cipher_page_size = {}; \
             PRAGMA cipher_hmac_algorithm = {};",
            format.page_size, format.hmac
        ))
    })
    .map_err(err)?;
    check_page_cipher(&conn, path, format)?;
    // cipher_memory_security would mlock and wipe every allocation: two
    // system calls per malloc, most of a read's CPU time (see
    // BENCHMARKS.md). Decrypted pages stay in this process's memory either
    // way; swap must be off or encrypted on a machine that holds secrets
    // (README, "Encryption at rest").
    //
    // The writer keeps 16 MiB of pages (readers set less below): every
    // store has one, so this is per table, and writes touch leaves all over
    // a large table, where twice as much would still miss most of them.
    //
    // Every connection commits with a sync: the log's writes are gathered
    // until the commit's sync (`wal_writes`), and a commit published
    // without one would point readers at frames not yet written.
    conn.execute_batch(
        "PRAGMA cipher_memory_security = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;
         PRAGMA synchronous = FULL;",
    )
    .map_err(err)?;
    // Reading the schema proves the key (and the first page) are right.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(err)?;
    Ok(conn)
}

impl Db {
    /// Opens (creating if needed) the store at `path` with its 32-byte key.
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<Db, StoreError> {
        let key_hex = hex(key);
        let created = !path.exists();
        let (conn, format) = open_connection(
            path,
            &key_hex,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            None,
        )?;
        let err = |e| engine_error(path, e);
        // WAL with full sync: a commit that returned is on disk.
        //
        // Rows live in a rowid table, found through the primary key's index
        // (tree, k). A WITHOUT ROWID table, as stores made before 2026-11-30
        // have, keeps whole rows in its B-tree, interior pages included:
        // with 1 KB values an interior page held about seven of them, so a
        // table of a million items was seven levels deep, a read opened
        // about six pages and an insert rewrote three (BENCHMARKS.md). The
        // index holds only keys (hundreds a page), and new rows append to
        // the table's last leaf. Both layouts answer the same statements;
        // older stores keep theirs.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 tree BLOB NOT NULL,
                 k BLOB NOT NULL,
                 v BLOB NOT NULL,
                 PRIMARY KEY (tree, k)
             );",
        )
        .map_err(err)?;
        set_private(path);
        let key_hex = Arc::new(Mutex::new(key_hex));
        let checkpointer = checkpoint::Checkpointer::new(path.to_owned(), format, key_hex.clone());
        checkpointer.watch(&conn);
        Ok(Db {
            path: path.to_owned(),
            key_hex,
            format,
            conn: Mutex::new(Writer {
                conn,
                group: None,
                members: 0,
                writes: 0,
                written_bytes: 0,
                touched: Vec::new(),
                tallies: Vec::new(),
                checkpointer,
            }),
            joiners: AtomicUsize::new(0),
            commit_clock: CommitClock {
                slow: AtomicBool::new(false),
                quick: QUICK_COMMIT,
            },
            in_place_now: &IN_PLACE_NOW,
            waiting_tasks: Wakers::default(),
            readers: Mutex::new(Vec::new()),
            cache: cache::for_file(path, created),
            #[cfg(test)]
            pause_after_commit: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            handed_over: AtomicUsize::new(0),
        })
    }

    /// Answers reads of `tree` outside transactions from memory where it
    /// can, within a process-wide budget. Writes keep it exact (see the
    /// `cache` module). One tree per store.
    pub fn cache_reads(&self, tree: &str) {
        self.cache.enable(tree);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection (opening one if none is free).
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let conn = open_again(
                    &self.path,
                    &self.key_hex,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    self.format,
                )?;
                // Each reader caches pages of its own; hot items live in the
                // shared item cache instead, so readers keep little more than
                // the B-tree's inner pages.
                conn.execute_batch("PRAGMA cache_size = -8192;")
                    .map_err(|e| engine_error(&self.path, e))?;
                conn
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_READERS {
            pool.push(conn);
        }
        out
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.cache.covers(tree) {
            return self.read(|conn| get(conn, &self.path, tree, key));
        }
        let ticket = match self.cache.get(key) {
            Ok(hit) => return Ok(Some(hit)),
            Err(ticket) => ticket,
        };
        let value = self.read(|conn| get(conn, &self.path, tree, key))?;
        if let Some(v) = &value {
            self.cache.fill(ticket, key, v);
        }
        Ok(value)
    }

    /// Up to `limit` entries of `tree` in key order within the bounds.
    pub fn scan(
        &self,
        tree: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.read(|conn| scan(conn, &self.path, tree, start, end, limit, Order::Ascending))
    }

    /// Up to `limit` entries of `tree` in descending key order within the
    /// bounds: the last ones first.
    pub fn scan_descending(
        &self,
        tree: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.read(|conn| scan(conn, &self.path, tree, start, end, limit, Order::Descending))
    }

    pub fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.transaction(|tx| tx.put(tree, key, value))
    }

    pub fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        self.transaction(|tx| tx.delete(tree, key))
    }

    /// Holds the store for a caller that needs several stores in one
    /// decision (a transaction across tables): lock them in one global order,
    /// `begin` on each, then `commit` each. Dropping a `Tx` rolls it back.
    pub fn lock(&self) -> Locked<'_> {
        let mut writer = self.lock_writer();
        // A group left open for joiners is committed first: this caller
        // does not join it.
        let _ = self.commit_group(&mut writer);
        Locked {
            conn: writer,
            path: &self.path,
            cache: &self.cache,
            commit_clock: &self.commit_clock,
        }
    }

    /// The writer, waiting for it if another transaction holds it.
    fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            guard: Some(self.conn.lock().unwrap_or_else(|p| p.into_inner())),
            waiting_tasks: &self.waiting_tasks,
        }
    }

    /// The writer if it is free; else `cx` is woken once it is released.
    fn poll_writer(&self, cx: &Context<'_>) -> Poll<WriterGuard<'_>> {
        let try_lock = || match self.conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        // Tried again after registering: a release in between is not missed.
        let guard = try_lock().or_else(|| {
            self.waiting_tasks.add(cx.waker());
            try_lock()
        });
        match guard {
            Some(guard) => Poll::Ready(WriterGuard {
                guard: Some(guard),
                waiting_tasks: &self.waiting_tasks,
            }),
            None => Poll::Pending,
        }
    }

    /// Runs `f` in one transaction; commits (durably) if it returns `Ok`,
    /// and returns once the commit is on disk.
    ///
    /// Group commit: transactions that arrive while another holds the
    /// writer join one open SQLite transaction, each in a savepoint of its
    /// own (a refused one rolls back alone). The last to arrive commits
    /// the group with one fsync; the others wait for that commit. A failed
    /// commit fails every member: none of them took effect.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.joiners.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.lock_writer();
        self.joiners.fetch_sub(1, Ordering::SeqCst);
        let joined = self.join_group(&mut writer, f)?;
        if joined.last {
            self.commit_group(&mut writer)?;
            return joined.out;
        }
        drop(writer);
        // A refused transaction left nothing in the group: no need to wait.
        let value = joined.out?;
        joined.group.wait()?;
        Ok(value)
    }

    /// [`Db::transaction`] for a task: it waits for the writer and for its
    /// group's commit without holding a thread, and runs `f` in place (so
    /// `f` must be quick: reads and writes of a few keys). (A thread per
    /// waiting write, handed over and woken, was a fifth of PutItem's time:
    /// BENCHMARKS.md.) Only the member that commits a group blocks. A small
    /// group (at most [`IN_PLACE_WRITES`] writes and [`IN_PLACE_BYTES`])
    /// commits right on its worker thread if the store's last commit was
    /// quick, its log is not about to need the writer's own checkpoint,
    /// and another worker of the runtime is not committing in place too: it
    /// holds up that worker's other tasks for about an fsync. Any other
    /// commit, on the multi-threaded runtime, runs in `block_in_place`,
    /// which hands the worker's tasks to another thread first. That
    /// hand-over cost more than the commit it made room for: PutItem +16%
    /// on 21% less server CPU without it (BENCHMARKS.md). Dropping the
    /// future leaves the store as consistent as a thread that never came: a
    /// member already in a group commits with it.
    pub async fn transaction_async<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let (group, value) = {
            let joining = Joining::new(self);
            let mut writer = std::future::poll_fn(|cx| self.poll_writer(cx)).await;
            joining.joined();
            let joined = self.join_group(&mut writer, f)?;
            if joined.last {
                let runtime = tokio::runtime::Handle::try_current().ok();
                let multi_thread = runtime.as_ref().is_some_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                let small = writer.writes <= IN_PLACE_WRITES
                    && writer.written_bytes <= IN_PLACE_BYTES
                    && !self.commit_clock.last_was_slow()
                    && !writer.checkpointer.inline_checkpoint_near();
                // In place only while another worker goes on meanwhile.
                let in_place = small
                    .then(|| {
                        runtime.and_then(|h| {
                            InPlace::take(self.in_place_now, h.metrics().num_workers())
                        })
                    })
                    .flatten();
                if multi_thread && in_place.is_none() {
                    #[cfg(test)]
                    self.handed_over.fetch_add(1, Ordering::SeqCst);
                    tokio::task::block_in_place(|| self.commit_group(&mut writer))?;
                } else {
                    self.commit_group(&mut writer)?;
                }
                return joined.out;
            }
            drop(writer);
            (joined.group, joined.out?)
        };
        std::future::poll_fn(|cx| group.poll_decided(cx)).await?;
        Ok(value)
    }

    /// Runs `f` as a member of the open group (opening one if there is
    /// none), in a savepoint of its own. A panic in `f` is rolled back, the
    /// group committed if this member was its last, and the panic resumed.
    fn join_group<T, E: From<StoreError>>(
        &self,
        writer: &mut Writer,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<Joined<T, E>, E> {
        let err = |e| engine_error(&self.path, e);
        if writer.group.is_none() {
            run_cached(&writer.conn, "BEGIN IMMEDIATE").map_err(err)?;
            writer.group = Some(Arc::new(Group::default()));
            writer.members = 0;
            writer.writes = 0;
            writer.written_bytes = 0;
        }
        let group = writer.group.clone().unwrap_or_default();
        if let Err(e) = run_cached(&writer.conn, "SAVEPOINT member") {
            let e = err(e);
            self.abort_group(writer, &e);
            return Err(e.into());
        }
        let (ran, touched, tallies, writes, written_bytes) = {
            let tx = Tx::new(TxConn::Member(&writer.conn), &self.path, &self.cache);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&tx)));
            (
                ran,
                tx.touched.take(),
                tx.tallies.take(),
                tx.writes.get(),
                tx.written_bytes.get(),
            )
        };
        let keep = matches!(ran, Ok(Ok(_)));
        // A rolled-back member's keys are invalidated all the same
        // (harmless, and simpler than telling them apart), but what it
        // wrote is not cached.
        writer.touched.extend(
            touched
                .into_iter()
                .map(|(key, value)| (key, value.filter(|_| keep))),
        );
        let ended = if keep {
            run_cached(&writer.conn, "RELEASE member")
        } else {
            writer
                .conn
                .execute_batch("ROLLBACK TO member; RELEASE member")
        };
        if let Err(e) = ended {
            // The savepoint is in an unknown state: the whole group goes.
            let e = err(e);
            self.abort_group(writer, &e);
            return match ran {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(_) => Err(e.into()),
            };
        }
        if keep {
            for (name, tally) in tallies {
                add_tally(&mut writer.tallies, name, tally);
            }
            writer.writes += writes;
            writer.written_bytes += written_bytes;
        }
        writer.members += 1;
        let last = self.joiners.load(Ordering::SeqCst) == 0 || writer.members >= MAX_GROUP;
        match ran {
            Ok(out) => Ok(Joined { group, out, last }),
            Err(panic) => {
                // Rolled back; the group must still be committed by someone.
                if last {
                    let _ = self.commit_group(writer);
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Commits the open group, if any, and tells its waiting members.
    fn commit_group(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let Some(group) = writer.group.take() else {
            return Ok(());
        };
        let result = self.commit_clock.time(|| self.commit_open(writer));
        // Every member gets the committer's error, a corrupt file's included.
        group.finish(result.clone());
        result
    }

    /// Writes the open group's tallies and commits its transaction.
    fn commit_open(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let tallied = self.write_tallies(writer);
        // Before any member returns: a read after its write must see it.
        let conn = &writer.conn;
        self.cache.commit(writer.touched.drain(..), || {
            let result = tallied
                .and_then(|()| run_cached(conn, "COMMIT").map_err(|e| engine_error(&self.path, e)));
            if result.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            #[cfg(test)]
            std::thread::sleep(std::time::Duration::from_millis(
                self.pause_after_commit.load(Ordering::SeqCst),
            ));
            result
        })
    }

    /// Writes the open group's tallies into its transaction.
    fn write_tallies(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let tallies = std::mem::take(&mut writer.tallies);
        if tallies.is_empty() {
            return Ok(());
        }
        let tx = Tx::new(TxConn::Member(&writer.conn), &self.path, &self.cache);
        // A tally that panics fails the group (it is rolled back) instead
        // of leaving its members waiting.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tallies.iter().try_for_each(|(_, tally)| tally.write(&tx))
        }))
        .unwrap_or_else(|_| {
            Err(StoreError::Engine {
                path: self.path.display().to_string(),
                message: "a count kept with the commit could not be written".into(),
            })
        });
        let touched = tx.touched.take();
        writer.touched.extend(touched);
        written
    }

    /// Rolls the open group back: none of its members took effect.
    fn abort_group(&self, writer: &mut Writer, why: &StoreError) {
        if let Some(group) = writer.group.take() {
            let _ = writer.conn.execute_batch("ROLLBACK");
            writer.touched.clear();
            writer.tallies.clear();
            group.finish(Err(why.clone()));
        }
    }

    /// Copies a consistent snapshot of the store to `dest`, encrypted with
    /// `dest_key`. Writes may go on meanwhile: the copy is read on a
    /// connection of its own, at one point of the write-ahead log.
    pub fn snapshot_to(&self, dest: &Path, dest_key: &[u8; 32]) -> Result<(), StoreError> {
        // Read-write and create only so that ATTACH may create the copy
        // (attached files take the main connection's flags); the store itself
        // is only read.
        let conn = open_again(
            &self.path,
            &self.key_hex,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.format,
        )?;
        let dest_str = dest.to_str().ok_or_else(|| StoreError::Engine {
            path: dest.display().to_string(),
            message: "the path is not UTF-8".into(),
        })?;
        // The attached file takes SQLCipher's defaults, not the store's
        // page size and HMAC; its mode is set here.
        cipher::keyed_as(SNAPSHOT_FORMAT.cipher, || {
            conn.execute(
                "ATTACH DATABASE ?1 AS snapshot KEY ?2",
                params![dest_str, format!("x'{}'", hex(dest_key))],
            )
        })
        .map_err(|e| engine_error(dest, e))?;
        conn.query_row("SELECT sqlcipher_export('snapshot')", [], |_| Ok(()))
            .map_err(|e| engine_error(dest, e))?;
        conn.execute_batch("DETACH DATABASE snapshot")
            .map_err(|e| engine_error(dest, e))?;
        set_private(dest);
        Ok(())
    }

    /// Re-encrypts every page under a new key (rotating the database key).
    pub fn rekey(&self, new_key: &[u8; 32]) -> Result<(), StoreError> {
        let mut writer = self.lock_writer();
        self.commit_group(&mut writer)?;
        writer
            .conn
            .execute_batch(&format!("PRAGMA rekey = \"x'{}'\";", hex(new_key)))
            .map_err(|e| engine_error(&self.path, e))?;
        // Readers opened with the old key are of no use any more.
        *self.key_hex.lock().unwrap_or_else(|p| p.into_inner()) = hex(new_key);
        writer.checkpointer.rekeyed();
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// Checks every page: `Err(Corrupt)` if any fails authentication.
    pub fn verify(&self) -> Result<(), StoreError> {
        let mut writer = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_group(&mut writer)?;
        let result: String = writer
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| engine_error(&self.path, e))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.path.display().to_string(),
            })
        }
    }
}

/// A store held by one caller (see [`Db::lock`]).
pub struct Locked<'a> {
    conn: WriterGuard<'a>,
    path: &'a Path,
    cache: &'a cache::Cache,
    /// Times this transaction's commit as a group's.
    commit_clock: &'a CommitClock,
}

impl Locked<'_> {
    /// Begins a write transaction on the held store.
    pub fn begin(&mut self) -> Result<Tx<'_>, StoreError> {
        let tx = self
            .conn
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| engine_error(self.path, e))?;
        Ok(Tx::new(
            TxConn::Own(tx, self.commit_clock),
            self.path,
            self.cache,
        ))
    }
}

impl<'a> Tx<'a> {
    fn new(tx: TxConn<'a>, path: &'a Path, cache: &'a cache::Cache) -> Tx<'a> {
        Tx {
            tx,
            path,
            cache,
            touched: RefCell::default(),
            tallies: RefCell::default(),
            writes: std::cell::Cell::default(),
            written_bytes: std::cell::Cell::default(),
        }
    }

    /// Commits durably (a transaction of its own; a group member commits
    /// with its group).
    pub fn commit(self) -> Result<(), StoreError> {
        let path = self.path;
        match self.tx {
            TxConn::Own(tx, clock) => {
                let touched = self.touched.into_inner();
                clock.time(|| {
                    self.cache
                        .commit(touched, || tx.commit())
                        .map_err(|e| engine_error(path, e))
                })
            }
            // The group's commit takes in its members' writes.
            TxConn::Member(_) => Ok(()),
        }
    }

    /// Adds `tally` to the value it changes: in a group commit, to the
    /// group's tally of that name, written once before the group commits
    /// (and dropped if this member is refused); in a transaction of its
    /// own, at once.
    pub fn tally(&self, name: &'static str, tally: Box<dyn Tally>) -> Result<(), StoreError> {
        match self.tx {
            TxConn::Own(..) => tally.write(self),
            TxConn::Member(_) => {
                add_tally(&mut self.tallies.borrow_mut(), name, tally);
                Ok(())
            }
        }
    }

    fn conn(&self) -> &Connection {
        match &self.tx {
            TxConn::Own(tx, _) => tx,
            TxConn::Member(conn) => conn,
        }
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.conn(), self.path, tree, key)
    }

    pub fn scan(
        &self,
        tree: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        scan(
            self.conn(),
            self.path,
            tree,
            start,
            end,
            limit,
            Order::Ascending,
        )
    }

    /// Notes a write of the cached tree (`None`: a deletion), for the
    /// cache to take in after the commit.
    fn touch(&self, tree: &str, key: &[u8], value: Option<&[u8]>) {
        if self.cache.covers(tree) {
            let value = value.filter(|v| self.cache.takes(v.len()));
            self.touched
                .borrow_mut()
                .push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }

    pub fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO kv (tree, k, v) VALUES (?1, ?2, ?3) ON CONFLICT (tree, k) DO UPDATE SET v = excluded.v",
            )
            .and_then(|mut stmt| stmt.execute(params![tree.as_bytes(), key, value]))
            .map_err(|e| engine_error(self.path, e))?;
        // Noted once written: a value that never reached the store is
        // never cached.
        self.touch(tree, key, Some(value));
        self.writes.set(self.writes.get() + 1);
        self.written_bytes
            .set(self.written_bytes.get() + key.len() + value.len());
        Ok(())
    }

    pub fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        // Noted first: a deletion whose outcome is unknown still
        // invalidates.
        self.touch(tree, key, None);
        self.writes.set(self.writes.get() + 1);
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE tree = ?1 AND k = ?2")
            .and_then(|mut stmt| stmt.execute(params![tree.as_bytes(), key]))
            .map(|_| ())
            .map_err(|e| engine_error(self.path, e))
    }
}

fn get(
    conn: &Connection,
    path: &Path,
    tree: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    conn.prepare_cached("SELECT v FROM kv WHERE tree = ?1 AND k = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![tree.as_bytes(), key], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })
        .map_err(|e| engine_error(path, e))
}

#[derive(Clone, Copy)]
enum Order {
    Ascending,
    Descending,
}

fn scan(
    conn: &Connection,
    path: &Path,
    tree: &str,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
    order: Order,
) -> Result<Entries, StoreError> {
    let (lo_op, lo): (&str, &[u8]) = match start {
        Bound::Included(k) => (">=", k),
        Bound::Excluded(k) => (">", k),
        Bound::Unbounded => (">=", b""),
    };
    let (hi_clause, hi): (&str, &[u8]) = match end {
        Bound::Included(k) => ("AND k <= ?3", k),
        Bound::Excluded(k) => ("AND k < ?3", k),
        Bound::Unbounded => ("AND ?3 IS NOT NULL", b""),
    };
    let direction = match order {
        Order::Ascending => "",
        Order::Descending => " DESC",
    };
    let sql = format!(
        "SELECT k, v FROM kv WHERE tree = ?1 AND k {lo_op} ?2 {hi_clause} ORDER BY k{direction} LIMIT ?4"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| engine_error(path, e))?;
    let rows = stmt
        .query_map(params![tree.as_bytes(), lo, hi, limit as i64], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|e| engine_error(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| engine_error(path, e))
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A store at `path` whose "items" are cached.
    fn cached_store(path: &Path, key: u8) -> Db {
        let db = Db::open(path, &[key; 32]).unwrap();
        db.cache_reads("items");
        db
    }

    /// With reads of a tree cached, every read after a write returned sees
    /// that write: through group commits, refused members, cross-table
    /// transactions, a second handle on the file, and a re-created file.
    #[test]
    fn cached_reads_never_go_back_in_time() {
        let dir = temp("cache");
        let path = dir.join("c.db");
        let db = std::sync::Arc::new(cached_store(&path, 5));
        let counter =
            |b: Option<Vec<u8>>| b.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        // Four writers each bump their own keys; readers check that what a
        // writer saw returned never reads as older afterwards.
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for n in 1..=300u64 {
                        let key = [w as u8, (n % 8) as u8];
                        db.transaction(|tx| tx.put("items", &key, &n.to_be_bytes()))
                            .unwrap();
                        assert_eq!(counter(db.get("items", &key).unwrap()), n);
                        // A refused write of the same key changes nothing.
                        let _: Result<(), StoreError> = db.transaction(|tx| {
                            tx.put("items", &key, &0u64.to_be_bytes())?;
                            Err(StoreError::Engine {
                                path: String::new(),
                                message: "refused".into(),
                            })
                        });
                        assert_eq!(counter(db.get("items", &key).unwrap()), n);
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut last = [[0u64; 8]; 4];
                    for _ in 0..3000 {
                        for (w, seen) in last.iter_mut().enumerate() {
                            for (k, last) in seen.iter_mut().enumerate() {
                                let v = counter(db.get("items", &[w as u8, k as u8]).unwrap());
                                assert!(v >= *last, "went back from {last} to {v}");
                                *last = v;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in writers.into_iter().chain(readers) {
            t.join().unwrap();
        }
        // What a group commit wrote is cached as it commits.
        db.transaction(|tx| tx.put("items", b"through", b"written"))
            .unwrap();
        assert_eq!(db.cache.get(b"through").unwrap(), b"written");
        // A cross-table transaction and a deletion.
        let mut held = db.lock();
        let tx = held.begin().unwrap();
        tx.put("items", &[0, 1], b"held").unwrap();
        tx.commit().unwrap();
        drop(held);
        assert_eq!(db.cache.get(&[0, 1]).unwrap(), b"held");
        assert_eq!(db.get("items", &[0, 1]).unwrap().unwrap(), b"held");
        db.delete("items", &[0, 1]).unwrap();
        assert!(db.get("items", &[0, 1]).unwrap().is_none());
        // A second handle on the same file shares the cache.
        assert_eq!(
            db.get("items", &[0, 2]).unwrap().unwrap(),
            298u64.to_be_bytes()
        );
        let other = cached_store(&path, 5);
        other.put("items", &[0, 2], b"other").unwrap();
        assert_eq!(db.get("items", &[0, 2]).unwrap().unwrap(), b"other");
        // A file deleted and created again starts with an empty cache.
        drop(other);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let fresh = cached_store(&path, 5);
        assert!(fresh.get("items", &[0, 2]).unwrap().is_none());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two handles on one file (a table's handle replaced while requests
    /// still hold the old one) write the same key: the first commits and
    /// is held before updating the cache while the second commits a newer
    /// value. The shared cache must end with the newer one.
    #[test]
    fn handles_on_one_file_cache_writes_in_commit_order() {
        let dir = temp("cache-order");
        let path = dir.join("c.db");
        let first = std::sync::Arc::new(cached_store(&path, 6));
        let second = cached_store(&path, 6);
        first.pause_after_commit.store(300, Ordering::SeqCst);
        let older = {
            let first = first.clone();
            std::thread::spawn(move || first.put("items", b"k", b"older").unwrap())
        };
        // The first has committed and is held before its cache update.
        std::thread::sleep(std::time::Duration::from_millis(100));
        second.put("items", b"k", b"newer").unwrap();
        older.join().unwrap();
        let stored = first
            .read(|conn| get(conn, &first.path, "items", b"k"))
            .unwrap();
        assert_eq!(stored.as_deref(), Some(&b"newer"[..]));
        assert_eq!(first.get("items", b"k").unwrap(), stored);
        assert_eq!(second.get("items", b"k").unwrap(), stored);
        drop((first, second));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The counter under `key` of the tree "count", inside a transaction.
    fn count_in(tx: &Tx<'_>, key: &[u8]) -> Result<u32, StoreError> {
        Ok(tx
            .get("count", key)?
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap())))
    }

    /// Adds `by` to the counter under `key`.
    fn bump(tx: &Tx<'_>, key: &[u8], by: u32) -> Result<(), StoreError> {
        let n = count_in(tx, key)?;
        tx.put("count", key, &(n + by).to_be_bytes())
    }

    /// The counter under `key`, as last committed.
    fn stored(db: &Db, key: &[u8]) -> u32 {
        db.get("count", key)
            .unwrap()
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    }

    /// Writes `key` and bumps the counter; refuses (after writing) if asked.
    fn counted_write(tx: &Tx<'_>, key: &[u8], refuse: bool) -> Result<(), StoreError> {
        tx.put("t", key, b"v")?;
        bump(tx, b"n", 1)?;
        if refuse {
            return Err(StoreError::Engine {
                path: String::new(),
                message: "refused".into(),
            });
        }
        Ok(())
    }

    /// Runs `per_thread` transactions on each of 8 threads at once, so that
    /// they commit in groups: `write` with the key `THREAD-I`, refusing
    /// every `refuse_every`-th (`I % refuse_every == 0`). After each kept one
    /// returns, `check(db, key, kept so far on its thread)`. Returns how
    /// many were kept.
    fn write_from_threads(
        db: &std::sync::Arc<Db>,
        per_thread: u32,
        refuse_every: u32,
        write: fn(&Tx<'_>, &[u8], bool) -> Result<(), StoreError>,
        check: fn(&Db, &[u8], u32),
    ) -> u32 {
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut kept = 0;
                    for i in 0..per_thread {
                        let key = format!("{t}-{i}");
                        let refuse = i % refuse_every == 0;
                        let result = db.transaction(|tx| write(tx, key.as_bytes(), refuse));
                        assert_eq!(result.is_err(), refuse);
                        if !refuse {
                            kept += 1;
                            check(&db, key.as_bytes(), kept);
                        }
                    }
                    kept
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    }

    #[test]
    fn concurrent_transactions_commit_in_groups_and_refusals_stay_alone() {
        let dir = temp("group");
        let db = std::sync::Arc::new(Db::open(&dir.join("g.db"), &[3u8; 32]).unwrap());
        // Every third transaction writes, then refuses.
        let kept = write_from_threads(&db, 150, 3, counted_write, |db, key, _| {
            // What returned is committed: a reader sees it.
            assert!(db.get("t", key).unwrap().is_some());
        });
        let rows = db
            .scan("t", Bound::Unbounded, Bound::Unbounded, 10_000)
            .unwrap();
        assert_eq!(rows.len() as u32, kept);
        assert!(rows.iter().all(|(k, _)| {
            let i: u32 = std::str::from_utf8(k)
                .unwrap()
                .split('-')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            i % 3 != 0
        }));
        // The counter saw each kept transaction once, and no refused one.
        assert_eq!(stored(&db, b"n"), kept);
        // A transaction that panics half-way leaves nothing behind.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), StoreError> = db.transaction(|tx| {
                tx.put("t", b"half-done", b"v")?;
                panic!("a bug in the middle of a write");
            });
        }));
        assert!(panicked.is_err());
        db.put("t", b"after", b"v").unwrap();
        assert!(db.get("t", b"half-done").unwrap().is_none());
        assert!(db.get("t", b"after").unwrap().is_some());
        // A store held by a cross-table caller commits any open group first.
        let mut held = db.lock();
        let tx = held.begin().unwrap();
        tx.put("t", b"held", b"v").unwrap();
        tx.commit().unwrap();
        drop(held);
        assert!(db.get("t", b"held").unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A count kept by [`Tally`]: what members add, written once a group.
    struct Added(u32);

    impl Tally for Added {
        fn absorb(&mut self, other: &dyn Any) {
            self.0 += other.downcast_ref::<Added>().map_or(0, |o| o.0);
        }
        fn write(&self, tx: &Tx<'_>) -> Result<(), StoreError> {
            bump(tx, b"tally", self.0)?;
            // The writes of the group's tallies are counted too.
            bump(tx, b"writes", 1)
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    /// A group writes its kept members' tallies once, added up; a refused
    /// or panicking member's tally is dropped with its writes, and a
    /// transaction of its own writes its tally at once.
    #[test]
    fn a_group_writes_the_sum_of_its_kept_members_tallies_once() {
        let dir = temp("tally");
        let db = std::sync::Arc::new(Db::open(&dir.join("t.db"), &[4u8; 32]).unwrap());
        let tallied_write = |tx: &Tx<'_>, key: &[u8], refuse: bool| {
            tx.tally("added", Box::new(Added(2)))?;
            tx.tally("added", Box::new(Added(1)))?;
            counted_write(tx, key, refuse)
        };
        let kept = write_from_threads(&db, 100, 4, tallied_write, |db, _, kept| {
            // What returned is committed, its tally too.
            assert!(stored(db, b"tally") >= 3 * kept);
        });
        assert_eq!(stored(&db, b"tally"), 3 * kept);
        assert_eq!(stored(&db, b"n"), kept);
        // Once per group, not per member: groups formed.
        let groups = stored(&db, b"writes");
        assert!(
            groups >= 1 && groups < kept,
            "{groups} writes for {kept} members"
        );
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), StoreError> = db.transaction(|tx| {
                tx.tally("added", Box::new(Added(100)))?;
                panic!("a bug after a tally");
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(stored(&db, b"tally"), 3 * kept);
        let mut held = db.lock();
        let tx = held.begin().unwrap();
        tx.tally("added", Box::new(Added(5))).unwrap();
        assert_eq!(
            tx.get("count", b"tally").unwrap(),
            Some((3 * kept + 5).to_be_bytes().to_vec())
        );
        tx.commit().unwrap();
        drop(held);
        assert_eq!(stored(&db, b"tally"), 3 * kept + 5);
        // A tally that panics as the group commits fails the group, which
        // is rolled back, and the store goes on.
        let failed = db.transaction(|tx| {
            tx.put("t", b"with-a-bad-tally", b"v")?;
            tx.tally("panics", Box::new(Panics))
        });
        assert!(failed.is_err());
        assert!(db.get("t", b"with-a-bad-tally").unwrap().is_none());
        db.put("t", b"after-a-bad-tally", b"v").unwrap();
        assert!(db.get("t", b"after-a-bad-tally").unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    struct Panics;

    impl Tally for Panics {
        fn absorb(&mut self, _: &dyn Any) {}
        fn write(&self, _: &Tx<'_>) -> Result<(), StoreError> {
            panic!("a bug in a tally");
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    /// One async transaction of [`counted_write`].
    async fn counted_async(db: &Db, key: String, refuse: bool) -> Result<(), StoreError> {
        db.transaction_async(|tx| counted_write(tx, key.as_bytes(), refuse))
            .await
    }

    #[test]
    fn tasks_and_threads_share_group_commits() {
        let dir = temp("async-group");
        let db = std::sync::Arc::new(Db::open(&dir.join("g.db"), &[4u8; 32]).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..8u32)
            .map(|t| {
                let db = db.clone();
                runtime.spawn(async move {
                    let mut kept = 0u32;
                    for i in 0..100u32 {
                        let refuse = i % 3 == 0;
                        let result = counted_async(&db, format!("task{t}-{i}"), refuse).await;
                        assert_eq!(result.is_err(), refuse);
                        if !refuse {
                            kept += 1;
                            assert!(db
                                .get("t", format!("task{t}-{i}").as_bytes())
                                .unwrap()
                                .is_some());
                        }
                    }
                    kept
                })
            })
            .collect();
        let threads: Vec<_> = (0..2u32)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..100u32 {
                        db.transaction(|tx| {
                            counted_write(tx, format!("thread{t}-{i}").as_bytes(), false)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        // A lost wake-up would leave a task waiting for ever.
        let all = async {
            let mut kept = 0;
            for task in tasks {
                kept += task.await.unwrap();
            }
            kept
        };
        let mut kept: u32 = runtime
            .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(60), all).await })
            .expect("every task finished");
        for thread in threads {
            thread.join().unwrap();
        }
        kept += 200;
        let rows = db
            .scan("t", Bound::Unbounded, Bound::Unbounded, 10_000)
            .unwrap();
        assert_eq!(rows.len() as u32, kept);
        let n = db.get("count", b"n").unwrap().unwrap();
        assert_eq!(u32::from_be_bytes(n.try_into().unwrap()), kept);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A group commits on its task's worker unless it is large, the
    /// store's last commit was slow, or no other worker would go on; either
    /// way every write is there.
    #[test]
    fn small_groups_commit_in_place_until_a_commit_is_slow() {
        let dir = temp("in-place");
        let mut db = Db::open(&dir.join("p.db"), &[6u8; 32]).unwrap();
        // Quick enough on any machine; a commit paused longer is slow.
        db.commit_clock.quick = std::time::Duration::from_secs(1);
        db.in_place_now = Box::leak(Box::new(AtomicUsize::new(0)));
        let runtime = |workers| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .build()
                .unwrap()
        };
        let two = runtime(2);
        let write = |runtime: &tokio::runtime::Runtime,
                     keys: std::ops::Range<u32>,
                     bytes: usize,
                     keep: bool| {
            runtime.block_on(db.transaction_async(|tx| {
                for k in keys.clone() {
                    tx.put("t", &k.to_be_bytes(), &vec![7; bytes])?;
                }
                if keep {
                    Ok(())
                } else {
                    Err(StoreError::Engine {
                        path: String::new(),
                        message: "refused".into(),
                    })
                }
            }))
        };
        let handed_over = || db.handed_over.load(Ordering::SeqCst);
        let all = IN_PLACE_WRITES as u32;
        write(&two, 0..all, 1, true).unwrap();
        assert_eq!(handed_over(), 0, "IN_PLACE_WRITES writes");
        write(&two, 100..101 + all, 1, true).unwrap();
        assert_eq!(handed_over(), 1, "more writes than IN_PLACE_WRITES");
        write(&two, 200..201 + all, 1, false).unwrap_err();
        assert_eq!(handed_over(), 1, "a refused member's writes do not count");
        write(&two, 300..301, IN_PLACE_BYTES + 1, true).unwrap();
        assert_eq!(handed_over(), 2, "more than IN_PLACE_BYTES");
        write(&runtime(1), 400..401, 1, true).unwrap();
        assert_eq!(handed_over(), 3, "no other worker");
        db.pause_after_commit.store(1_100, Ordering::SeqCst);
        write(&two, 500..501, 1, true).unwrap();
        db.pause_after_commit.store(0, Ordering::SeqCst);
        assert_eq!(handed_over(), 3, "the slow commit itself was in place");
        write(&two, 501..502, 1, true).unwrap();
        assert_eq!(handed_over(), 4, "after a slow commit");
        write(&two, 502..503, 1, true).unwrap();
        assert_eq!(handed_over(), 4, "quick again");
        let rows = db
            .scan("t", Bound::Unbounded, Bound::Unbounded, 1_000)
            .unwrap();
        assert_eq!(rows.len(), 2 * IN_PLACE_WRITES + 1 + 1 + 1 + 3);
        // A transaction across stores sets the flag as a group does.
        let lock_commit = |db: &Db| {
            let mut locked = db.lock();
            let tx = locked.begin().unwrap();
            tx.put("t", b"locked", b"v").unwrap();
            tx.commit().unwrap();
        };
        db.commit_clock.quick = std::time::Duration::ZERO;
        lock_commit(&db);
        assert!(db.commit_clock.last_was_slow(), "a slow Locked commit");
        db.commit_clock.quick = std::time::Duration::from_secs(1);
        lock_commit(&db);
        assert!(!db.commit_clock.last_was_slow(), "a quick Locked commit");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A member that finds a task waiting leaves its group open for it; if
    /// the task then gives up, the group must still commit.
    #[test]
    fn a_task_that_gives_up_waiting_strands_no_group() {
        let dir = temp("async-cancel");
        let db = std::sync::Arc::new(Db::open(&dir.join("c.db"), &[5u8; 32]).unwrap());
        let held = db.lock();
        // The task waits for the writer, counted as a joiner.
        let mut waiting = Box::pin(counted_async(&db, "task".into(), false));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // A thread queues behind the holder; once in, it sees the task and
        // leaves its group open.
        let thread = {
            let db = db.clone();
            std::thread::spawn(move || db.put("t", b"thread", b"v"))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(waiting);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread's group was never committed"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        thread.join().unwrap().unwrap();
        assert!(db.get("t", b"thread").unwrap().is_some());
        assert!(db.get("t", b"task").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Pages the writer wrote since the last call.
    fn pages_written(db: &Db) -> i32 {
        let writer = db.lock_writer();
        let (mut now, mut high) = (0, 0);
        // SAFETY: the handle is the writer's open connection, held for the call.
        unsafe {
            rusqlite::ffi::sqlite3_db_status(
                writer.conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE,
                &mut now,
                &mut high,
                1,
            )
        };
        now
    }

    #[test]
    fn an_insert_of_a_1_kb_value_into_a_large_tree_writes_about_three_pages() {
        let dir = temp("pages");
        let db = Db::open(&dir.join("p.db"), &[6u8; 32]).unwrap();
        let value = vec![b'v'; 1000];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut random_key = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("item{x:016x}").into_bytes()
        };
        for _ in 0..20 {
            db.transaction(|tx| {
                for _ in 0..500 {
                    tx.put("items", &random_key(), &value)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        }
        pages_written(&db);
        let inserts = 200;
        for _ in 0..inserts {
            db.put("items", &random_key(), &value).unwrap();
        }
        let per_insert = f64::from(pages_written(&db)) / f64::from(inserts);
        // An index leaf, the table's last leaf, now and then a split or the
        // header's page count: 3.0 measured with 4 KiB pages (2.5 with 8
        // KiB). Whole rows in the B-tree's interior pages (a WITHOUT ROWID
        // table) measured 4.5 (3.2 with 8 KiB).
        assert!(per_insert < 3.6, "{per_insert} pages per insert");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn checkpoints_run_beside_the_writer() {
        let dir = temp("checkpoint");
        let path = dir.join("c.db");
        let db = Db::open(&path, &[4u8; 32]).unwrap();
        let initial = std::fs::metadata(&path).unwrap().len();
        // About 1,500 pages of 4 KiB into the log, past where a commit asks.
        let value = vec![7u8; 4000];
        for i in 0..1500u32 {
            db.put("t", &i.to_be_bytes(), &value).unwrap();
        }
        let checkpointer = db.conn.lock().unwrap().checkpointer.clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // The checkpoint thread copies pages into the store; the writer
        // would only past 64 MiB of log, ten times what was written.
        let copied = || std::fs::metadata(&path).unwrap().len() > initial + 1_000_000;
        while checkpointer.runs.load(Ordering::Relaxed) == 0 || !copied() {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // After a rekey, the next checkpoints open with the new key.
        db.rekey(&[5u8; 32]).unwrap();
        let before = checkpointer.runs.load(Ordering::Relaxed);
        for i in 1500..3000u32 {
            db.put("t", &i.to_be_bytes(), &value).unwrap();
        }
        while checkpointer.runs.load(Ordering::Relaxed) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint after rekey"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(db);
        let db = Db::open(&path, &[5u8; 32]).unwrap();
        assert_eq!(db.get("t", &2999u32.to_be_bytes()).unwrap().unwrap(), value);
        assert_eq!(db.get("t", &0u32.to_be_bytes()).unwrap().unwrap(), value);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stores_encrypt_with_the_in_process_provider() {
        let dir = temp("provider");
        let db = Db::open(&dir.join("p.db"), &[3u8; 32]).unwrap();
        db.put("t", b"a", b"b").unwrap();
        let provider = |conn: &Connection| {
            conn.query_row("PRAGMA cipher_provider", [], |r| r.get::<_, String>(0))
                .map_err(|e| engine_error(&db.path, e))
        };
        let expected = cipher::PROVIDER_NAME.to_str().unwrap();
        let writer = provider(&db.conn.lock().unwrap().conn).unwrap();
        assert_eq!(writer, expected);
        assert_eq!(db.read(provider).unwrap(), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_connection_keyed_in_another_mode_is_refused() {
        let dir = temp("mode");
        let path = dir.join("m.db");
        cipher::install();
        let conn = Connection::open(&path).unwrap();
        // Keyed outside `keyed_as`: CBC, as SQLCipher's own provider would.
        conn.execute_batch(&format!("PRAGMA key = \"x'{}'\"", hex(&[2u8; 32])))
            .unwrap();
        let cbc = Format {
            cipher: PageCipher::Cbc,
            ..FORMAT
        };
        assert!(check_page_cipher(&conn, &path, cbc).is_ok());
        let refused = check_page_cipher(&conn, &path, FORMAT);
        assert!(
            matches!(&refused, Err(StoreError::Engine { message, .. }) if message.contains("AES-256-CTR")),
            "{refused:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The mode the store's writer encrypts pages in, as SQLCipher reports it.
    fn page_cipher(db: &Db) -> String {
        let writer = db.lock_writer();
        writer
            .conn
            .query_row("PRAGMA cipher", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn stores_in_older_formats_still_open() {
        let dir = temp("formats");
        let key = [9u8; 32];
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        // Every format stores have been written in, named here rather than
        // taken from OLDER_FORMATS so that dropping one from there fails,
        // and the current one; each with either layout (rows in a WITHOUT
        // ROWID table, as before 2026-11-30, or in a rowid table).
        let shipped = [
            (4096, "HMAC_SHA256"),
            (8192, "HMAC_SHA256"),
            (16384, "HMAC_SHA256"),
            (16384, "HMAC_SHA512"),
            (4096, "HMAC_SHA512"),
        ];
        let formats = shipped
            .map(|(page_size, hmac)| Format {
                page_size,
                hmac,
                cipher: PageCipher::Cbc,
            })
            .into_iter()
            .chain([FORMAT]);
        let stores = formats.flat_map(|f| [(f, " WITHOUT ROWID"), (f, "")]);
        for (n, (format, layout)) in stores.enumerate() {
            if format == FORMAT && layout.is_empty() {
                continue; // what a new store is, below
            }
            let path = dir.join(format!("old{n}.db"));
            let old = open_in_format(&path, &hex(&key), flags, format).unwrap();
            old.execute_batch(&format!(
                "CREATE TABLE kv (tree BLOB NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
                 PRIMARY KEY (tree, k)){layout};
                 INSERT INTO kv VALUES (X'74', X'61', X'7878');"
            ))
            .unwrap();
            drop(old);
            if format != FORMAT {
                // The new format cannot read it: the formats really differ.
                assert!(matches!(
                    open_in_format(&path, &hex(&key), flags, FORMAT),
                    Err(StoreError::Corrupt { .. })
                ));
            }
            let db = Db::open(&path, &key).unwrap();
            assert_eq!(db.format, format);
            let mode = match format.cipher {
                PageCipher::Cbc => "AES-256-CBC",
                PageCipher::Ctr => "AES-256-CTR",
            };
            assert_eq!(page_cipher(&db), mode);
            assert_eq!(db.get("t", b"a").unwrap().unwrap(), b"xx");
            db.put("t", b"b", b"y").unwrap();
            assert_eq!(db.get("t", b"b").unwrap().unwrap(), b"y");
            db.put("t", b"a", b"zz").unwrap();
            let rows = db
                .scan("t", Bound::Unbounded, Bound::Unbounded, 10)
                .unwrap();
            assert_eq!(
                rows,
                vec![
                    (b"a".to_vec(), b"zz".to_vec()),
                    (b"b".to_vec(), b"y".to_vec())
                ]
            );
            drop(db);
            // Still in its format after a write; the wrong key is still refused.
            assert_eq!(Db::open(&path, &key).unwrap().format, format);
            assert!(matches!(
                Db::open(&path, &[1u8; 32]),
                Err(StoreError::Corrupt { .. })
            ));
        }
        // A new store takes the new format.
        let fresh = Db::open(&dir.join("new.db"), &key).unwrap();
        assert_eq!(fresh.format, FORMAT);
        assert_eq!(page_cipher(&fresh), "AES-256-CTR");
        fresh.put("t", b"a", b"z").unwrap();
        drop(fresh);
        assert_eq!(Db::open(&dir.join("new.db"), &key).unwrap().format, FORMAT);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ordered_trees_transactions_and_snapshots() {
        let dir = temp("basic");
        let path = dir.join("a.db");
        let key = [7u8; 32];
        let db = Db::open(&path, &key).unwrap();
        for k in [b"b".as_slice(), b"a", b"c", b"d"] {
            db.put("t", k, k).unwrap();
        }
        db.put("other", b"a", b"x").unwrap();
        let all = db
            .scan("t", Bound::Unbounded, Bound::Unbounded, 100)
            .unwrap();
        assert_eq!(
            all.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(),
            [b"a", b"b", b"c", b"d"]
        );
        let mid = db
            .scan("t", Bound::Excluded(b"a"), Bound::Included(b"c"), 100)
            .unwrap();
        assert_eq!(mid.len(), 2);
        let last_two = db
            .scan_descending("t", Bound::Excluded(b"a"), Bound::Unbounded, 2)
            .unwrap();
        assert_eq!(
            last_two
                .iter()
                .map(|(k, _)| k.as_slice())
                .collect::<Vec<_>>(),
            [b"d", b"c"]
        );
        assert_eq!(
            db.scan("t", Bound::Unbounded, Bound::Unbounded, 1)
                .unwrap()
                .len(),
            1
        );
        // A failed transaction changes nothing.
        let failed: Result<(), StoreError> = db.transaction(|tx| {
            tx.put("t", b"z", b"z")?;
            tx.delete("t", b"a")?;
            Err(StoreError::Engine {
                path: String::new(),
                message: "abort".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(db.get("t", b"z").unwrap(), None);
        assert_eq!(db.get("t", b"a").unwrap(), Some(b"a".to_vec()));

        let snap = dir.join("snap.db");
        db.snapshot_to(&snap, &[9u8; 32]).unwrap();
        db.put("t", b"after", b"1").unwrap();
        let copy = Db::open(&snap, &[9u8; 32]).unwrap();
        // In SQLCipher's defaults, whatever the store's format.
        assert_eq!(copy.format, SNAPSHOT_FORMAT);
        assert_eq!(page_cipher(&copy), "AES-256-CBC");
        assert_eq!(copy.get("t", b"c").unwrap(), Some(b"c".to_vec()));
        assert_eq!(copy.get("t", b"after").unwrap(), None);
        drop(db);
        assert!(matches!(
            Db::open(&path, &[8u8; 32]),
            Err(StoreError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nothing_is_plaintext_and_flipped_bytes_are_corruption() {
        let dir = temp("tamper");
        let path = dir.join("t.db");
        let db = Db::open(&path, &[3u8; 32]).unwrap();
        for i in 0..200 {
            db.put(
                "MARKERTREE",
                format!("MARKERKEY{i}").as_bytes(),
                format!("MARKERVALUE{i}").as_bytes(),
            )
            .unwrap();
        }
        drop(db);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(6).any(|w| w == b"MARKER"));
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let outcome = Db::open(&path, &[3u8; 32]).and_then(|db| {
            db.verify()?;
            db.scan("MARKERTREE", Bound::Unbounded, Bound::Unbounded, 1000)
                .map(|_| ())
        });
        assert!(
            matches!(outcome, Err(StoreError::Corrupt { .. })),
            "{outcome:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
