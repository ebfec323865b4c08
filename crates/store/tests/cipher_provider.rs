//! Stores written by SQLCipher's OpenSSL provider (every Moat before
//! 2026-11-30; `data/` holds two, one per page-authentication algorithm)
//! open, read and write under Moat's own provider, and a changed byte in
//! one is still caught.

use std::path::{Path, PathBuf};

use moat_store::Db;

/// The key `data/*.db` were written under.
const KEY: [u8; 32] = [0x5a; 32];

/// The rows both were written with: tree `t`, `k1` = `v1`, `k2` = 3,000
/// bytes counting up modulo 251.
fn big() -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8).collect()
}

fn copy(name: &str, dir: &Path) -> PathBuf {
    // The crate's directory as the test runs, not as it was built: a test
    // binary built in another clone (a shared target directory) is reused.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let from = Path::new(&crate_dir).join("tests/data").join(name);
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moat-cipher-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn stores_written_by_openssl_open_read_and_write() {
    for name in ["openssl-4k-sha256.db", "openssl-4k-sha512.db"] {
        let dir = temp(name);
        let path = copy(name, &dir);
        let db = Db::open(&path, &KEY).unwrap();
        assert_eq!(db.get("t", b"k1").unwrap().unwrap(), b"v1", "{name}");
        assert_eq!(db.get("t", b"k2").unwrap().unwrap(), big(), "{name}");
        db.put("t", b"k3", b"v3").unwrap();
        drop(db);
        let db = Db::open(&path, &KEY).unwrap();
        assert_eq!(db.get("t", b"k3").unwrap().unwrap(), b"v3", "{name}");
        assert_eq!(db.get("t", b"k2").unwrap().unwrap(), big(), "{name}");
        drop(db);
        assert!(Db::open(&path, &[0x5b; 32]).is_err(), "{name}: wrong key");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_changed_byte_in_a_page_fails_its_authentication() {
    let dir = temp("tampered");
    let path = copy("openssl-4k-sha256.db", &dir);
    // Page 2 holds the rows (page 1 the schema): change one byte of its
    // ciphertext.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096 + 2000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let db = Db::open(&path, &KEY).unwrap();
    assert!(db.get("t", b"k1").is_err());
    assert!(db.get("t", b"k2").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
