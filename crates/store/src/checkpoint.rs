//! Checkpoints beside the writer: copying the write-ahead log's pages into
//! the store happens on a thread of its own, not inside a commit.
//!
//! SQLite's automatic checkpoint runs in the commit that takes the log past
//! 1,000 pages, so that commit (and every writer queued behind it) waited
//! while about 4 MB of pages were copied into the store and synced. With
//! the copying beside the writer, `mixed` (GetItem and PutItem over random
//! items) went from a p99.9 of 12.8-15.7 ms to 6.2-7.7, and put, mixed and
//! batch gained 5-8% (BENCHMARKS.md). Here the writer's log hook only asks; one process-wide
//! thread runs PASSIVE checkpoints on a connection of each store's own,
//! which never wait for (or hold up) its writer or readers. Past
//! [`INLINE_BYTES`] of log the writer checkpoints itself, copying what the
//! thread has not, so the log stays bounded.
//!
//! What this gains is fewer stalls, not shorter ones: the writer's own
//! checkpoint still runs, once per 64 MiB of log instead of per 4 MiB.
//!
//! A checkpoint copies pages as they are in the log, sealed; it decrypts
//! none, so a connection keyed before a rekey copies correctly. It is
//! dropped at a rekey all the same (it could no longer read the schema).

use std::ffi::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::{ffi, Connection, OpenFlags};

use crate::{open_again, Format};

/// How much the log grows between asks for a checkpoint (about SQLite's
/// own 1,000 pages, with 4 KiB pages).
const ASK_BYTES: i64 = 4 << 20;
/// The log's size at which the writer checkpoints itself. While writes go
/// on, a checkpoint beside the writer never copies the whole log (the
/// writer adds to it meanwhile), and only a log copied whole, with no
/// reader still in it, starts again from the top. So the log grows to
/// this size, and the writer's own checkpoint, copying what the thread has
/// not yet (at most about [`ASK_BYTES`]) lets it start again: a stall like
/// the ones SQLite's automatic checkpoint made at every 4 MiB, but sixteen
/// times rarer. The log file stays this large while the store is open.
const INLINE_BYTES: i64 = 64 << 20;

/// One store's checkpoints.
pub(crate) struct Checkpointer {
    path: PathBuf,
    format: Format,
    /// The store's current key, shared with its [`crate::Db`].
    key_hex: Arc<Mutex<String>>,
    /// Its own connection, opened at its first checkpoint.
    conn: Mutex<Option<Connection>>,
    /// Asked for and not yet begun.
    queued: AtomicBool,
    /// The log's length when a checkpoint was last asked for. While the
    /// writer goes on, a checkpoint leaves the log at its length (it
    /// restarts from the top only once all of it is copied and a writer
    /// begins), so asking at every commit past the threshold would run a
    /// checkpoint, and its two fsyncs, for every few commits.
    asked_at: AtomicI32,
    /// Checkpoints run (tests watch it).
    pub(crate) runs: AtomicUsize,
    /// The log's length in pages after the writer's last commit.
    log_pages: AtomicI32,
    /// [`ASK_BYTES`] and [`INLINE_BYTES`] in this store's pages.
    ask_pages: c_int,
    inline_pages: c_int,
}

impl Checkpointer {
    pub(crate) fn new(
        path: PathBuf,
        format: Format,
        key_hex: Arc<Mutex<String>>,
    ) -> Arc<Checkpointer> {
        Arc::new(Checkpointer {
            path,
            format,
            key_hex,
            conn: Mutex::new(None),
            queued: AtomicBool::new(false),
            asked_at: AtomicI32::new(0),
            runs: AtomicUsize::new(0),
            log_pages: AtomicI32::new(0),
            ask_pages: pages(ASK_BYTES, format),
            inline_pages: pages(INLINE_BYTES, format),
        })
    }

    /// Has the writer `conn` ask for checkpoints instead of running them.
    /// `self` must outlive `conn` (the writer holds both, `conn` dropped
    /// first).
    pub(crate) fn watch(self: &Arc<Self>, conn: &Connection) {
        // SAFETY: the hook's context is this checkpointer, which outlives
        // the connection (see above); the handle is the connection's own.
        unsafe {
            ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(on_commit),
                Arc::as_ptr(self).cast_mut().cast::<c_void>(),
            );
        }
    }

    /// Whether the writer's next commits may take the log past
    /// [`INLINE_BYTES`], and so run the writer's own checkpoint (within one
    /// ask of it).
    pub(crate) fn inline_checkpoint_near(&self) -> bool {
        self.log_pages.load(Ordering::Relaxed) + self.ask_pages >= self.inline_pages
    }

    /// The store was rekeyed: later checkpoints open with the new key.
    pub(crate) fn rekeyed(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn ask(self: Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = worker().is_some_and(|sender| {
            let sender = sender.lock().unwrap_or_else(|p| p.into_inner());
            sender.send(self).is_ok()
        });
        if !sent {
            // The writer still checkpoints itself at INLINE_BYTES: the log
            // stays bounded, and commits stall more often.
            static TOLD: AtomicBool = AtomicBool::new(false);
            if !TOLD.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the checkpoint thread is not running: stores checkpoint inside their commits"
                );
            }
        }
    }

    fn run(&self) {
        self.queued.store(false, Ordering::Release);
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            // Never created here: a store deleted meanwhile stays deleted.
            let opened = open_again(
                &self.path,
                &self.key_hex,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                self.format,
            );
            let Ok(opened) = opened else {
                return;
            };
            // Synced as the writer is: a checkpoint syncs the store before
            // it marks the log's pages copied, after which the writer may
            // write over them. It copies log frames and needs no page cache.
            if opened
                .execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -256;")
                .is_err()
            {
                return;
            }
            *conn = Some(opened);
        }
        let Some(c) = conn.as_ref() else {
            return;
        };
        // A store deleted since (its table dropped): reading it now would
        // make SQLite create its log and shared memory files again, beside
        // no store.
        if !self.path.exists() {
            *conn = None;
            return;
        }
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {
                self.runs.fetch_add(1, Ordering::Relaxed);
            }
            // Opened afresh next time.
            Err(_) => *conn = None,
        }
    }
}

/// `bytes` of log in pages of `format`.
fn pages(bytes: i64, format: Format) -> c_int {
    let page = i64::from(format.page_size.max(512));
    c_int::try_from(bytes / page).unwrap_or(c_int::MAX).max(1)
}

/// SQLite's log hook on a writer: called after each commit with the log's
/// length in pages.
unsafe extern "C" fn on_commit(
    context: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    pages: c_int,
) -> c_int {
    let context = context.cast_const().cast::<Checkpointer>();
    // SAFETY: `context` is `Arc::as_ptr` of a checkpointer the writer holds
    // (see `watch`), alive while its connection commits.
    let this = unsafe { &*context };
    this.log_pages.store(pages, Ordering::Relaxed);
    if pages >= this.inline_pages {
        // SAFETY: the connection and database name SQLite passed.
        unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                db,
                name,
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        this.asked_at.store(0, Ordering::Relaxed);
        return ffi::SQLITE_OK;
    }
    let asked_at = &this.asked_at;
    // Only the writer's commits call this: the loads and stores do not race.
    let mut since = asked_at.load(Ordering::Relaxed);
    if pages < since {
        // The log restarted from the top.
        since = 0;
        asked_at.store(0, Ordering::Relaxed);
    }
    if pages - since >= this.ask_pages {
        asked_at.store(pages, Ordering::Relaxed);
        // SAFETY: as above; a strong count is added for the copy made.
        let checkpointer = unsafe {
            Arc::increment_strong_count(context);
            Arc::from_raw(context)
        };
        checkpointer.ask();
    }
    ffi::SQLITE_OK
}

/// The thread that runs every store's checkpoints, started on first use.
fn worker() -> Option<&'static Mutex<Sender<Arc<Checkpointer>>>> {
    static WORKER: OnceLock<Option<Mutex<Sender<Arc<Checkpointer>>>>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (sender, jobs) = channel::<Arc<Checkpointer>>();
            std::thread::Builder::new()
                .name("moat-checkpoint".into())
                .spawn(move || {
                    for job in jobs {
                        job.run();
                    }
                })
                .ok()?;
            Some(Mutex::new(sender))
        })
        .as_ref()
}
