//! The audit log: one JSON line per request, written by one background
//! writer, in files readable only by Moat's user and rotated by size.
//!
//! A record holds who, what, from where and how it ended; never a secret, a
//! signature, a session token or a request body.
//!
//! A request writes its line itself, on its own thread, into a buffer the
//! writer takes whole every few milliseconds: no allocation, no message and
//! no wake-up per request. (Each request sending its record, a dozen
//! strings in a box, to the writer through a channel cost GetItem a fifth
//! of its throughput: BENCHMARKS.md.)

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};

/// One audited request, borrowed from it. The fields are written in this
/// order, under these names: the documented log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord<'a> {
    /// Written as RFC 3339 UTC with milliseconds.
    pub time: SystemTime,
    pub request_id: &'a str,
    /// The client, written as `ip:port`.
    pub source: SocketAddr,
    pub principal: Option<&'a str>,
    /// For a web-identity session: the provider and the user's subject
    /// (`HOST:SUB`), the person behind the assumed role.
    pub web_identity: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub service: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub resource: Option<&'a str>,
    /// The policy statement that decided authorisation, where one did.
    pub decided_by: Option<&'a str>,
    /// `allowed`, `denied`, `malformed` or `error`.
    pub outcome: &'a str,
    pub status: u16,
    pub error_code: Option<&'a str>,
    pub user_agent: Option<&'a str>,
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

/// How long the writer lets lines gather after a busy write; bounds how far
/// the file lags behind the requests.
const GATHER_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The most bytes of lines waiting for the writer; past it, requests wait
/// (a line is never dropped).
const MOST_PENDING: usize = 4 << 20;

/// Lines written and not yet taken by the writer.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// Asked to write everything, sync and stop (by `close` or the last
    /// handle going): every later record is refused. Never reset.
    closing: bool,
    /// Told once everything is written and synced.
    closers: Vec<oneshot::Sender<()>>,
    /// The writer has stopped.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer is parked (or about to park) until a line arrives.
    parked: AtomicBool,
    /// The writer took the pending lines: there is room again.
    room: Notify,
    /// [`MOST_PENDING`], but in tests.
    most_pending: usize,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer, stopped (after writing every line) once no handle is left.
struct Handle {
    shared: Arc<Shared>,
    writer: Thread,
}

impl Handle {
    /// Unparks the writer if it is parked. Read before it is written, so
    /// that requests do not write the flag's line while the writer is awake.
    fn wake(&self) {
        let parked = &self.shared.parked;
        if parked.load(Ordering::SeqCst) && parked.swap(false, Ordering::SeqCst) {
            self.writer.unpark();
        }
    }

    fn stop(&self) {
        self.shared.parked.store(false, Ordering::SeqCst);
        self.writer.unpark();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.pending().closing = true;
        self.stop();
    }
}

/// Stops the log for good if its writer ends in any way (a panic
/// included): requests and `close` must not wait for a writer that is gone.
struct WriterGone<'a>(&'a Shared);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        let closers = {
            let mut pending = self.0.pending();
            pending.closing = true;
            pending.closed = true;
            std::mem::take(&mut pending.closers)
        };
        self.0.room.notify_waiters();
        for done in closers {
            let _ = done.send(());
        }
    }
}

/// A handle to the writer. Cloning is cheap; records are written in the order sent.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

impl AuditLog {
    /// Opens (creating, 0700/0600) the log directory and starts the writer thread.
    pub fn open(config: AuditConfig) -> io::Result<AuditLog> {
        AuditLog::open_with_room(config, MOST_PENDING)
    }

    /// As [`AuditLog::open`], with room for `most_pending` bytes of lines
    /// (tests make it small).
    fn open_with_room(config: AuditConfig, most_pending: usize) -> io::Result<AuditLog> {
        create_private_dir(&config.dir)?;
        let mut writer = Writer::open(config)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            parked: AtomicBool::new(false),
            room: Notify::new(),
            most_pending,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("moat-audit".into())
            .spawn(move || {
                let _gone = WriterGone(&thread_shared);
                writer.run(&thread_shared);
            })?;
        Ok(AuditLog {
            handle: Arc::new(Handle {
                shared,
                writer: thread.thread().clone(),
            }),
        })
    }

    /// Writes a record's line for the writer. Waits (back-pressure) rather
    /// than drop one when too many are waiting.
    pub async fn record(&self, record: &AuditRecord<'_>) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        // Written where the request ran, into a buffer the thread keeps.
        let mut line = LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            write_line(&mut line, record);
            if self.append(&line) {
                None
            } else {
                Some(line.clone())
            }
        });
        // A request that waited is not served before one that did not: under
        // overload without end a wait has no bound (the queue before this was
        // first come, first served). The writer takes everything each turn,
        // so in practice a wait lasts a turn or two.
        while let Some(waiting) = line.take() {
            let room = self.handle.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !self.append(&waiting) {
                line = Some(waiting);
                self.handle.wake();
                room.await;
            }
        }
    }

    /// Adds `line` to the pending lines unless they are full; true when
    /// done (or refused for good: the log is closed).
    fn append(&self, line: &[u8]) -> bool {
        let mut pending = self.handle.shared.pending();
        if pending.closing {
            drop(pending);
            tracing::error!("the audit log is closed; a record was not written");
            return true;
        }
        if !pending.lines.is_empty()
            && pending.lines.len() + line.len() > self.handle.shared.most_pending
        {
            return false;
        }
        pending.lines.extend_from_slice(line);
        drop(pending);
        self.handle.wake();
        true
    }

    /// Writes every pending record, syncs the file and stops the writer.
    /// Every caller waits for that, however many there are.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        {
            let mut pending = self.handle.shared.pending();
            if pending.closed {
                return;
            }
            pending.closing = true;
            pending.closers.push(done);
        }
        self.handle.stop();
        let _ = wait.await;
    }
}

/// Appends `record` as one JSON line, exactly as serde_json writes the
/// fields in their order (a test holds the two together).
fn write_line(out: &mut Vec<u8>, record: &AuditRecord<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    push_time(out, record.time);
    out.extend_from_slice(b"\",\"request_id\":");
    push_str(out, record.request_id);
    out.extend_from_slice(b",\"source\":\"");
    push_socket_addr(out, record.source);
    out.push(b'"');
    let optional: [(&[u8], Option<&str>); 8] = [
        (b"principal", record.principal),
        (b"web_identity", record.web_identity),
        (b"access_key_id", record.access_key_id),
        (b"service", record.service),
        (b"operation", record.operation),
        (b"resource", record.resource),
        (b"decided_by", record.decided_by),
        (b"outcome", Some(record.outcome)),
    ];
    for (name, value) in optional {
        push_field(out, name, value);
    }
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(record.status));
    push_field(out, b"error_code", record.error_code);
    push_field(out, b"user_agent", record.user_agent);
    out.extend_from_slice(b"}\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: Option<&str>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    match value {
        Some(value) => push_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// `text` as a JSON string, escaped as serde_json escapes: the quote, the
/// backslash and the control characters, nothing else.
fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most text needs no escape: checked sixteen bytes at a time, without
    // a branch per byte, it is copied whole.
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
    if bytes
        .chunks(16)
        .all(|chunk| chunk.iter().fold(true, |all, &b| all & plain(b)))
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `ip:port` as `SocketAddr` displays it; an IPv4 address without the
/// formatting machinery (it showed in a GetItem's profile).
fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
            out.push(b':');
            push_decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// `time` as RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`).
fn push_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::pipeline::with_iso8601_seconds(since.as_secs() as i64, |seconds| {
        // The 'Z' goes after the milliseconds.
        out.extend_from_slice(seconds.trim_end_matches('Z').as_bytes());
    });
    let millis = since.subsec_millis();
    out.push(b'.');
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(b'0' + digit as u8);
    }
    out.push(b'Z');
}

struct Writer {
    config: AuditConfig,
    file: io::BufWriter<File>,
    size: u64,
    /// The sync of the file last rotated out.
    syncing: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn open(config: AuditConfig) -> io::Result<Writer> {
        let path = config.dir.join("audit.log");
        let file = open_private_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            config,
            file: io::BufWriter::with_capacity(64 << 10, file),
            size,
            syncing: None,
        })
    }

    /// Takes the pending lines and writes them, until closed.
    fn run(&mut self, shared: &Shared) {
        // The buffer given back for the next lines, keeping its capacity.
        let mut taken = Vec::new();
        loop {
            // Closing, no line is added after this: every accepted line
            // is in what is taken here.
            let closing = {
                let mut pending = shared.pending();
                std::mem::swap(&mut pending.lines, &mut taken);
                pending.closing
            };
            shared.room.notify_waiters();
            let busy = !taken.is_empty();
            if busy {
                self.write(&taken);
                taken.clear();
                self.flush();
            }
            if closing {
                // `WriterGone` tells every closer.
                self.sync();
                return;
            }
            if busy {
                // Under load, let lines gather for a moment instead of
                // parking: a parked writer costs a request a wake-up, a
                // sleeping one costs none.
                std::thread::sleep(GATHER_PAUSE);
                continue;
            }
            shared.parked.store(true, Ordering::SeqCst);
            let idle = {
                let pending = shared.pending();
                pending.lines.is_empty() && !pending.closing
            };
            if idle {
                std::thread::park();
            }
            shared.parked.store(false, Ordering::SeqCst);
        }
    }

    /// Writes whole lines, rotating between two that would take the file
    /// past its size.
    fn write(&mut self, lines: &[u8]) {
        for line in lines.split_inclusive(|&b| b == b'\n') {
            if self.size > 0 && self.size + line.len() as u64 > self.config.max_file_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot rotate the audit log");
                }
            }
            match self.file.write_all(line) {
                Ok(()) => self.size += line.len() as u64,
                Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
    }

    fn sync(&mut self) {
        self.wait_for_sync();
        self.flush();
        let _ = self.file.get_ref().sync_all();
    }

    /// Renames the files one up and starts a new one. The file rotated out
    /// is synced on a thread of its own: synced here, 64 MiB at a time,
    /// it held the writer for over 100 ms, and requests waited for room.
    fn rotate(&mut self) -> io::Result<()> {
        self.flush();
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
        let file =
            io::BufWriter::with_capacity(64 << 10, open_private_append(&dir.join("audit.log"))?);
        let rotated = std::mem::replace(&mut self.file, file);
        self.size = 0;
        let rotated = rotated.into_inner().map_err(|e| e.into_error())?;
        // One sync at a time: the previous one has long finished unless
        // the files are tiny.
        self.wait_for_sync();
        let spawned = rotated.try_clone().and_then(|file| {
            std::thread::Builder::new()
                .name("moat-audit-sync".into())
                .spawn(move || {
                    let _ = file.sync_all();
                })
        });
        match spawned {
            Ok(syncing) => self.syncing = Some(syncing),
            // No thread: synced here, as before.
            Err(_) => {
                let _ = rotated.sync_all();
            }
        }
        Ok(())
    }

    fn wait_for_sync(&mut self) {
        if let Some(syncing) = self.syncing.take() {
            let _ = syncing.join();
        }
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

    fn record(request_id: &str) -> AuditRecord<'_> {
        AuditRecord {
            time: UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600),
            request_id,
            source: "127.0.0.1:1".parse().unwrap(),
            principal: None,
            web_identity: None,
            access_key_id: None,
            service: Some("sts"),
            operation: Some("GetCallerIdentity"),
            resource: None,
            decided_by: None,
            outcome: "denied",
            status: 403,
            error_code: Some("MissingAuthenticationToken"),
            user_agent: None,
        }
    }

    /// An empty directory of the test's own, under the system's temporary one.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A log in `dir` that never rotates, with `room` bytes of lines pending.
    fn unrotated_log(dir: &Path, room: usize) -> AuditLog {
        let config = AuditConfig {
            dir: dir.to_owned(),
            max_file_bytes: u64::MAX,
            keep_files: 1,
        };
        AuditLog::open_with_room(config, room).unwrap()
    }

    /// The line as serde_json writes the record's fields, the format the
    /// log had before it wrote its lines itself.
    #[derive(serde::Serialize)]
    struct Owned {
        time: String,
        request_id: String,
        source: String,
        principal: Option<String>,
        web_identity: Option<String>,
        access_key_id: Option<String>,
        service: Option<String>,
        operation: Option<String>,
        resource: Option<String>,
        decided_by: Option<String>,
        outcome: String,
        status: u16,
        error_code: Option<String>,
        user_agent: Option<String>,
    }

    fn serde_line(r: &AuditRecord<'_>, time: &str) -> String {
        let owned = |v: Option<&str>| v.map(str::to_owned);
        let mut line = serde_json::to_string(&Owned {
            time: time.to_owned(),
            request_id: r.request_id.to_owned(),
            source: r.source.to_string(),
            principal: owned(r.principal),
            web_identity: owned(r.web_identity),
            access_key_id: owned(r.access_key_id),
            service: owned(r.service),
            operation: owned(r.operation),
            resource: owned(r.resource),
            decided_by: owned(r.decided_by),
            outcome: r.outcome.to_owned(),
            status: r.status,
            error_code: owned(r.error_code),
            user_agent: owned(r.user_agent),
        })
        .unwrap();
        line.push('\n');
        line
    }

    proptest::proptest! {
        #[test]
        fn lines_are_what_serde_json_writes(
            texts in proptest::collection::vec(proptest::option::of(".{0,12}"), 11),
            status in proptest::prelude::any::<u16>(),
            ip in proptest::prelude::any::<std::net::IpAddr>(),
            port in proptest::prelude::any::<u16>(),
            millis in 0u64..4_102_444_800_000,
        ) {
            let text = |i: usize| texts[i].as_deref();
            let r = AuditRecord {
                time: UNIX_EPOCH + std::time::Duration::from_millis(millis),
                request_id: text(0).unwrap_or(""),
                source: SocketAddr::new(ip, port),
                principal: text(1),
                web_identity: text(2),
                access_key_id: text(3),
                service: text(4),
                operation: text(5),
                resource: text(6),
                decided_by: text(7),
                outcome: text(8).unwrap_or("allowed"),
                status,
                error_code: text(9),
                user_agent: text(10),
            };
            let mut line = Vec::new();
            write_line(&mut line, &r);
            let time = format!(
                "{}.{:03}Z",
                crate::pipeline::iso8601_seconds((millis / 1000) as i64).trim_end_matches('Z'),
                millis % 1000
            );
            proptest::prop_assert_eq!(String::from_utf8(line).unwrap(), serde_line(&r, &time));
        }
    }

    #[test]
    fn control_characters_quotes_and_backslashes_are_escaped() {
        let mut line = Vec::new();
        let mut r = record("a\"b\\c\u{1}\u{1f}\n\u{7f}é");
        r.user_agent = Some("\t\r\u{8}\u{c}");
        write_line(&mut line, &r);
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with("{\"time\":\"2026-01-01T00:00:00.000Z\",\"request_id\":\"a\\\"b\\\\c\\u0001\\u001f\\n\u{7f}é\",\"source\":\"127.0.0.1:1\","), "{line}");
        assert!(
            line.ends_with(",\"user_agent\":\"\\t\\r\\b\\f\"}\n"),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["request_id"], "a\"b\\c\u{1}\u{1f}\n\u{7f}é");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_wait_for_room_and_every_line_is_written_in_order() {
        let dir = fresh_dir("room");
        // Room for about a hundred lines: requests must wait for it.
        let log = unrotated_log(&dir, 64 << 10);
        // Four writers of 5,000 lines each.
        let long = "x".repeat(400);
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (log, long) = (log.clone(), long.clone());
                tokio::spawn(async move {
                    for i in 0..5000 {
                        let op = format!("{t}-{i}");
                        let mut r = record(&long);
                        r.operation = Some(&op);
                        log.record(&r).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        log.close().await;
        // Closed: a later record is refused, not written.
        log.record(&record("late")).await;
        let text = fs::read_to_string(dir.join("audit.log")).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let op = v["operation"].as_str().unwrap();
            let (t, i) = op.split_once('-').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "lines of one writer in order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
        assert!(!text.contains("late"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_close_waits_for_the_lines_and_a_late_one_returns() {
        let dir = fresh_dir("close");
        let lines = |dir: &Path| {
            fs::read_to_string(dir.join("audit.log"))
                .unwrap()
                .lines()
                .count()
        };
        let wait = std::time::Duration::from_secs(10);
        for round in 0..20 {
            let _ = fs::remove_dir_all(&dir);
            let log = unrotated_log(&dir, MOST_PENDING);
            for i in 0..200 {
                log.record(&record(&format!("{round}-{i}"))).await;
            }
            let closes: Vec<_> = (0..3)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move { log.close().await })
                })
                .collect();
            for close in closes {
                let closed = tokio::time::timeout(wait, close).await;
                assert!(closed.is_ok(), "a close never returned");
                // Whichever close returned, every line was written.
                assert_eq!(lines(&dir), 200);
            }
            let late = tokio::time::timeout(wait, log.close()).await;
            assert!(
                late.is_ok(),
                "a close after the writer stopped never returned"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_writes_what_is_pending_when_the_last_handle_goes() {
        let dir = fresh_dir("drop");
        let log = unrotated_log(&dir, MOST_PENDING);
        let shared = log.handle.shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(log.record(&record("before-drop")));
        drop(log);
        // The writer stops (dropping its share) once it has written everything.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&shared) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let text = fs::read_to_string(dir.join("audit.log")).unwrap();
        assert!(text.contains("\"request_id\":\"before-drop\""), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_files_private() {
        let dir = fresh_dir("rotate");
        let log = AuditLog::open(AuditConfig {
            dir: dir.clone(),
            max_file_bytes: 1000,
            keep_files: 2,
        })
        .unwrap();
        for i in 0..40 {
            log.record(&record(&format!("req-{i}"))).await;
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
