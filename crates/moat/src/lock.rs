//! One Moat per data directory. Two servers on one directory would each
//! keep their own item cache, key ring and audit writer over the same files:
//! each would answer reads from a cache the other's writes never reach, and
//! a key rotation in one would be invisible to the other.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The data directory's lock, held until dropped (or the process ends,
/// however it ends: the kernel releases it with the file descriptor).
pub struct DataDirLock {
    _file: File,
}

/// Takes the lock of `data_dir` (created if missing, private), or says who
/// holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, String> {
    moat_edge::audit::create_private_dir(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let path = data_dir.join("moat.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let error = std::io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            format!(
                "another Moat is using the data directory {} (it holds {})",
                data_dir.display(),
                path.display()
            )
        } else {
            format!("{}: {error}", path.display())
        });
    }
    Ok(DataDirLock { _file: file })
}
