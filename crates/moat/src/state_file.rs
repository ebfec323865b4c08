//! IAM state in a file of the data directory, until the encrypted store exists.
//!
//! Each save writes a temporary file (0600), syncs it and renames it over the
//! old one, so a crash leaves either the old state or the new one.

use std::path::PathBuf;

use moat_iam::StateStore;

pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    pub fn new(path: PathBuf) -> FileStateStore {
        FileStateStore { path }
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
        crate::init::write_private(&self.path, bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
