//! The encrypted embedded store: ordered key-value trees in one file per
//! store, with atomic transactions, durable commits and consistent snapshots.
//!
//! The engine is SQLCipher (SQLite with page encryption) through rusqlite's
//! bundled build. Every page of the database, its write-ahead log and its
//! snapshots is encrypted with AES-256 and authenticated with HMAC-SHA512, so
//! no key, value or tree name is in any file in plaintext, and a flipped byte
//! is reported as corruption instead of being read as data. Temporary data is
//! kept in memory, never in temporary files.
//!
//! Architecture invariant: knows nothing of Moat's services or of where its
//! key comes from; the caller hands it the database key (from `moat-keys`).
//! The rest of Moat reaches the engine only through [`Db`] and [`Tx`].

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is damaged, or was not written with this key.
    #[error("the store {path} is corrupt or was encrypted with another key")]
    Corrupt { path: String },
    #[error("the store {path} failed: {message}")]
    Engine { path: String, message: String },
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One encrypted store file.
pub struct Db {
    path: PathBuf,
    key_hex: String,
    conn: Mutex<Connection>,
}

/// A write transaction: everything in it commits durably together, or nothing does.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
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

fn open_connection(path: &Path, key_hex: &str, flags: OpenFlags) -> Result<Connection, StoreError> {
    let err = |e| engine_error(path, e);
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    // A raw 256-bit key: no passphrase derivation, the key hierarchy made it.
    conn.execute_batch(&format!("PRAGMA key = \"x'{key_hex}'\";"))
        .map_err(err)?;
    conn.execute_batch(
        "PRAGMA cipher_memory_security = ON;
         PRAGMA temp_store = MEMORY;",
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
        let conn = open_connection(
            path,
            &key_hex,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let err = |e| engine_error(path, e);
        // WAL with full sync: a commit that returned is on disk.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 tree BLOB NOT NULL,
                 k BLOB NOT NULL,
                 v BLOB NOT NULL,
                 PRIMARY KEY (tree, k)
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        set_private(path);
        Ok(Db {
            path: path.to_owned(),
            key_hex,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        get(&conn, &self.path, tree, key)
    }

    /// Up to `limit` entries of `tree` in key order within the bounds.
    pub fn scan(
        &self,
        tree: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        scan(&conn, &self.path, tree, start, end, limit)
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
        Locked {
            conn: self.conn.lock().unwrap_or_else(|p| p.into_inner()),
            path: &self.path,
        }
    }

    /// Runs `f` in one transaction; commits (durably) if it returns `Ok`.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| engine_error(&self.path, e))?;
        let wrapped = Tx {
            tx,
            path: &self.path,
        };
        let out = f(&wrapped)?;
        wrapped
            .tx
            .commit()
            .map_err(|e| engine_error(&self.path, e))?;
        Ok(out)
    }

    /// Copies a consistent snapshot of the store to `dest`, encrypted with
    /// `dest_key`. Writes may go on meanwhile: the copy is read on a
    /// connection of its own, at one point of the write-ahead log.
    pub fn snapshot_to(&self, dest: &Path, dest_key: &[u8; 32]) -> Result<(), StoreError> {
        // Read-write and create only so that ATTACH may create the copy
        // (attached files take the main connection's flags); the store itself
        // is only read.
        let conn = open_connection(
            &self.path,
            &self.key_hex,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let dest_str = dest.to_str().ok_or_else(|| StoreError::Engine {
            path: dest.display().to_string(),
            message: "the path is not UTF-8".into(),
        })?;
        conn.execute(
            "ATTACH DATABASE ?1 AS snapshot KEY ?2",
            params![dest_str, format!("x'{}'", hex(dest_key))],
        )
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
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch(&format!("PRAGMA rekey = \"x'{}'\";", hex(new_key)))
            .map_err(|e| engine_error(&self.path, e))
    }

    /// Checks every page: `Err(Corrupt)` if any fails authentication.
    pub fn verify(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let result: String = conn
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
    conn: std::sync::MutexGuard<'a, Connection>,
    path: &'a Path,
}

impl Locked<'_> {
    /// Begins a write transaction on the held store.
    pub fn begin(&mut self) -> Result<Tx<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| engine_error(self.path, e))?;
        Ok(Tx {
            tx,
            path: self.path,
        })
    }
}

impl Tx<'_> {
    /// Commits durably.
    pub fn commit(self) -> Result<(), StoreError> {
        let path = self.path;
        self.tx.commit().map_err(|e| engine_error(path, e))
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        get(&self.tx, self.path, tree, key)
    }

    pub fn scan(
        &self,
        tree: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        scan(&self.tx, self.path, tree, start, end, limit)
    }

    pub fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT INTO kv (tree, k, v) VALUES (?1, ?2, ?3) ON CONFLICT (tree, k) DO UPDATE SET v = excluded.v",
                params![tree.as_bytes(), key, value],
            )
            .map(|_| ())
            .map_err(|e| engine_error(self.path, e))
    }

    pub fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        self.tx
            .execute(
                "DELETE FROM kv WHERE tree = ?1 AND k = ?2",
                params![tree.as_bytes(), key],
            )
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
    conn.query_row(
        "SELECT v FROM kv WHERE tree = ?1 AND k = ?2",
        params![tree.as_bytes(), key],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .optional()
    .map_err(|e| engine_error(path, e))
}

fn scan(
    conn: &Connection,
    path: &Path,
    tree: &str,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
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
    let sql = format!(
        "SELECT k, v FROM kv WHERE tree = ?1 AND k {lo_op} ?2 {hi_clause} ORDER BY k LIMIT ?4"
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

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
