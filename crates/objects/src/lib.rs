//! The object store backups, exports and imports are kept in: named byte
//! strings under `/`-separated keys. Moat's default is a local directory;
//! anything that can put, get, list and delete whole objects (an
//! S3-compatible endpoint, for one) fills the same trait. Objects arrive
//! here already encrypted: the store never sees a plaintext byte of a table.
//! `LocalDir` keeps them as files, `S3Store` on an S3-compatible endpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

mod s3;
pub use s3::{S3Config, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object store I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    Remote(String),
}

/// Keys are relative, `/`-separated, with no empty, `.` or `..` segment.
pub(crate) fn check_key(key: &str) -> Result<(), ObjectError> {
    let valid = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\0'));
    if valid {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.to_owned()))
    }
}

/// Whole-object storage. Keys are relative, `/`-separated, without `.` or
/// `..` segments. A put is durable and atomic when it returns: a reader sees
/// the old object or the new one, never a part.
pub trait ObjectStore: Send + Sync {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ObjectError>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError>;
    /// Every key that starts with `prefix`, in byte order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError>;
    /// Deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), ObjectError>;
    /// The size of an object (`None` if missing).
    fn size(&self, key: &str) -> Result<Option<u64>, ObjectError>;
}

/// Objects as files under a directory (0600 files in 0700 directories).
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ObjectError + '_ {
        move |source| ObjectError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn create_dirs(dir: &Path) -> Result<(), ObjectError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Self::io(dir))
    }

    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), ObjectError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Self::io(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Self::io(dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Half-written files of an interrupted put.
            if name.starts_with(".tmp-") {
                continue;
            }
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(Self::io(dir))?;
            if kind.is_dir() {
                Self::walk(&entry.path(), &key, out)?;
            } else if kind.is_file() {
                out.push(key);
            }
        }
        Ok(())
    }
}

impl ObjectStore for LocalDir {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ObjectError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        // Directories made for this object are synced into their parents,
        // so that the object's path survives a crash along with its bytes.
        let mut made = Vec::new();
        let mut missing = dir.as_path();
        while !missing.exists() {
            made.push(missing.to_path_buf());
            match missing.parent() {
                Some(parent) => missing = parent,
                None => break,
            }
        }
        Self::create_dirs(&dir)?;
        for created in made.iter().rev() {
            if let Some(parent) = created.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(Self::io(parent))?;
            }
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Self::io(&tmp))?;
        file.write_all(bytes).map_err(Self::io(&tmp))?;
        file.sync_all().map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(Self::io(&dir))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        let path = self.path_of(key)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        // Walk only the directory the prefix's complete segments name.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        let mut out = Vec::new();
        Self::walk(&start, dir_part, &mut out)?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        let path = self.path_of(key)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> LocalDir {
        let dir = std::env::temp_dir().join(format!(
            "moat-objects-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        LocalDir::new(dir)
    }

    #[test]
    fn put_get_list_delete() {
        let store = temp();
        store.put("a/b/one", b"1").unwrap();
        store.put("a/b/two", b"22").unwrap();
        store.put("a/c", b"3").unwrap();
        store.put("a/b/one", b"111").unwrap();
        assert_eq!(store.get("a/b/one").unwrap().unwrap(), b"111");
        assert_eq!(store.get("a/b/none").unwrap(), None);
        assert_eq!(store.list("a/b/").unwrap(), vec!["a/b/one", "a/b/two"]);
        assert_eq!(store.list("a/").unwrap(), vec!["a/b/one", "a/b/two", "a/c"]);
        assert_eq!(store.list("a/b/t").unwrap(), vec!["a/b/two"]);
        assert_eq!(store.list("zz/").unwrap(), Vec::<String>::new());
        assert_eq!(store.size("a/b/two").unwrap(), Some(2));
        store.delete("a/b/one").unwrap();
        store.delete("a/b/one").unwrap();
        assert_eq!(store.list("a/b/").unwrap(), vec!["a/b/two"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.root().join("a/c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(store.root());
    }

    #[test]
    fn keys_cannot_leave_the_root() {
        let store = temp();
        for bad in ["", "/etc/passwd", "a/../../x", "a//b", "./a", "a/\0"] {
            assert!(matches!(
                store.put(bad, b"x"),
                Err(ObjectError::InvalidKey(_))
            ));
            assert!(store.get(bad).is_err());
        }
    }
}
