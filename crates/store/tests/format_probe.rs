//! Opening a store in an older format finds the format by trying, and the
//! wrong guesses must not reach the log: SQLCipher reports each page that
//! fails authentication on stderr, and a user upgrading Moat would see
//! "hmac check failed" at every start. The probe runs in a process where
//! SQLCipher has not started yet (a test binary of its own, one test), as a
//! server's first store open does.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use moat_store::Db;

const KEY: [u8; 32] = [5u8; 32];

/// Writes a store as Moat wrote them with 8 KiB pages (2026-11-30) or 4
/// KiB pages in CBC (before 2026-12-07), with rusqlite directly: run in a
/// child process, so that this process's SQLCipher starts with the probe.
/// A wrong guess of the page size fails page 1's authentication; a wrong
/// guess of the mode passes it and decrypts page 1 to noise.
fn write_old_store(path: &Path, page_size: &str) {
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{key_hex}'\"; PRAGMA cipher_page_size = {page_size};
         PRAGMA cipher_hmac_algorithm = HMAC_SHA256; PRAGMA journal_mode = WAL;
         CREATE TABLE kv (tree BLOB NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
             PRIMARY KEY (tree, k));
         INSERT INTO kv VALUES (X'74', X'61', X'7878');"
    ))
    .unwrap();
    // Left open: the child exits with every page, page 1 included, still
    // only in the write-ahead log, as after a crash.
    std::mem::forget(conn);
}

#[test]
fn opening_a_store_in_an_older_format_logs_no_failed_guess() {
    if let Some(dir) = std::env::var_os("MOAT_WRITE_OLD_STORES") {
        for page_size in ["8192", "4096"] {
            write_old_store(
                &Path::new(&dir).join(format!("old{page_size}.db")),
                page_size,
            );
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("moat-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let written = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "opening_a_store_in_an_older_format_logs_no_failed_guess",
        ])
        .env("MOAT_WRITE_OLD_STORES", &dir)
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    assert!(dir.join("old4096.db-wal").exists());

    // SQLCipher writes to file descriptor 2 itself: point it at a file
    // while the stores open.
    let log_path = dir.join("stderr");
    let log = std::fs::File::create(&log_path).unwrap();
    // SAFETY: plain descriptor juggling on descriptors this test owns; the
    // test binary runs this one test, so nothing else writes meanwhile.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    unsafe { libc::dup2(log.as_raw_fd(), 2) };
    let opened: Vec<_> = ["old8192.db", "old4096.db"]
        .iter()
        .map(|name| Db::open(&dir.join(name), &KEY).and_then(|db| db.get("t", b"a")))
        .collect();
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    for opened in opened {
        assert_eq!(opened.unwrap().as_deref(), Some(b"xx".as_slice()));
    }
    let mut logged = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut logged)
        .unwrap();
    assert!(!logged.contains("ERROR"), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}
