//! IAM's state as one record of the encrypted system store.
//!
//! A file left by an older Moat (`state/iam.json`) is moved in on first load
//! and deleted.

use std::path::PathBuf;
use std::sync::Arc;

use moat_iam::StateStore;
use moat_store::Db;

pub struct StoredState {
    db: Arc<Db>,
    legacy_file: PathBuf,
}

impl StoredState {
    const TREE: &'static str = "iam";
    const KEY: &'static [u8] = b"state";

    pub fn new(db: Arc<Db>, legacy_file: PathBuf) -> StoredState {
        StoredState { db, legacy_file }
    }
}

fn io(e: moat_store::StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl StateStore for StoredState {
    fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.db.get(Self::TREE, Self::KEY).map_err(io)? {
            return Ok(Some(bytes));
        }
        if self.legacy_file.exists() {
            let bytes = std::fs::read(&self.legacy_file)?;
            self.save(&bytes)?;
            std::fs::remove_file(&self.legacy_file)?;
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.db.put(Self::TREE, Self::KEY, bytes).map_err(io)
    }
}
