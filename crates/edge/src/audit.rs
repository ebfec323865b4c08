//! The audit log: one JSON line per request, written by one background
//! writer, in files readable only by Moat's user and rotated by size.
//!
//! A record holds who, what, from where and how it ended; never a secret, a
//! signature, a session token or a request body.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// One audited request. Field names are the documented log format.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub request_id: String,
    /// `ip:port` of the client.
    pub source: String,
    pub principal: Option<String>,
    /// For a web-identity session: the provider and the user's subject
    /// (`HOST:SUB`), the person behind the assumed role.
    pub web_identity: Option<String>,
    pub access_key_id: Option<String>,
    pub service: Option<String>,
    pub operation: Option<String>,
    pub resource: Option<String>,
    /// The policy statement that decided authorisation, where one did.
    pub decided_by: Option<String>,
    /// `allowed`, `denied`, `malformed` or `error`.
    pub outcome: String,
    pub status: u16,
    pub error_code: Option<String>,
    pub user_agent: Option<String>,
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    /// Rotate once the current file would grow past this size.
    pub max_file_bytes: u64,
    /// How many rotated files to keep (`audit.log.1` is the newest).
    pub keep_files: usize,
}

/// How long the writer lets records gather after a busy write; bounds how far
/// the file lags behind the requests.
const GATHER_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

enum Message {
    Record(Box<AuditRecord>),
    Close(oneshot::Sender<()>),
}

/// A handle to the writer. Cloning is cheap; records are written in the order sent.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Opens (creating, 0700/0600) the log directory and starts the writer thread.
    pub fn open(config: AuditConfig) -> io::Result<AuditLog> {
        create_private_dir(&config.dir)?;
        let mut writer = Writer::open(config)?;
        let (tx, mut rx) = mpsc::channel::<Message>(4096);
        std::thread::Builder::new()
            .name("moat-audit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    loop {
                        // Write everything already queued before flushing once.
                        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                            match msg {
                                Message::Record(r) => writer.write(&r),
                                Message::Close(done) => {
                                    writer.sync();
                                    let _ = done.send(());
                                    return;
                                }
                            }
                        }
                        writer.flush();
                        // Under load, let records gather for a moment instead of
                        // parking on the channel: a parked writer costs every request
                        // a thread wake-up, a sleeping one costs none.
                        std::thread::sleep(GATHER_PAUSE);
                        match rx.try_recv() {
                            Ok(msg) => next = Some(msg),
                            Err(_) => break,
                        }
                    }
                }
                writer.sync();
            })?;
        Ok(AuditLog { tx })
    }

    /// Queues a record. Waits (back-pressure) rather than drop one when the queue is full.
    pub async fn record(&self, record: AuditRecord) {
        if self
            .tx
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            tracing::error!("the audit log is closed; a record was not written");
        }
    }

    /// Writes every queued record, syncs the file and stops the writer.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    config: AuditConfig,
    file: io::BufWriter<File>,
    size: u64,
    /// The line being written, kept for the next one's bytes.
    line: Vec<u8>,
}

impl Writer {
    fn open(config: AuditConfig) -> io::Result<Writer> {
        let path = config.dir.join("audit.log");
        let file = open_private_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            config,
            file: io::BufWriter::new(file),
            size,
            line: Vec::new(),
        })
    }

    fn write(&mut self, record: &AuditRecord) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        if let Err(e) = serde_json::to_writer(&mut line, record) {
            tracing::error!(error = %e, "cannot encode an audit record");
            self.line = line;
            return;
        }
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_file_bytes {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "cannot rotate the audit log");
            }
        }
        match self.file.write_all(&line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
        }
        self.line = line;
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
    }

    fn sync(&mut self) {
        self.flush();
        let _ = self.file.get_ref().sync_all();
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync();
        let dir = &self.config.dir;
        let name = |n: usize| dir.join(format!("audit.log.{n}"));
        let keep = self.config.keep_files.max(1);
        let _ = fs::remove_file(name(keep));
        for n in (1..keep).rev() {
            if name(n).exists() {
                fs::rename(name(n), name(n + 1))?;
            }
        }
        fs::rename(dir.join("audit.log"), name(1))?;
        self.file = io::BufWriter::new(open_private_append(&dir.join("audit.log"))?);
        self.size = 0;
        Ok(())
    }
}

fn open_private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Creates a directory (and its parents) that only its owner can enter.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: format!("req-{i}"),
            source: "127.0.0.1:1".into(),
            principal: None,
            web_identity: None,
            access_key_id: None,
            service: Some("sts".into()),
            operation: Some("GetCallerIdentity".into()),
            resource: None,
            decided_by: None,
            outcome: "denied".into(),
            status: 403,
            error_code: Some("MissingAuthenticationToken".into()),
            user_agent: None,
        }
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_files_private() {
        let dir = std::env::temp_dir().join(format!("moat-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let log = AuditLog::open(AuditConfig {
            dir: dir.clone(),
            max_file_bytes: 1000,
            keep_files: 2,
        })
        .unwrap();
        for i in 0..40 {
            log.record(record(i)).await;
        }
        log.close().await;
        let current = fs::read_to_string(dir.join("audit.log")).unwrap();
        assert!(current.len() <= 1000);
        assert!(current.ends_with("\"user_agent\":null}\n"));
        assert!(current.contains("\"request_id\":\"req-39\""));
        assert!(dir.join("audit.log.1").exists() && dir.join("audit.log.2").exists());
        assert!(!dir.join("audit.log.3").exists());
        for name in ["audit.log", "audit.log.1", "audit.log.2"] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = fs::remove_dir_all(&dir);
    }
}
