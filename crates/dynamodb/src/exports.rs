//! Exports to and imports from the object store, in DynamoDB's layouts.
//!
//! An export of table T at time t writes, under `s3/BUCKET/PREFIX/`:
//! `AWSDynamoDB/ID/data/N.json.gz` (one `{"Item": …}` line per item, or
//! for an incremental export one `{"Metadata", "Keys", "NewImage",
//! "OldImage"}` line per changed item), `manifest-files.json` and
//! `manifest-summary.json`, as DynamoDB writes them to S3. Each object is
//! sealed under the export's own data key, which sits beside them wrapped by
//! the master key (`moat-data-key`): nothing plaintext reaches the store. An import reads sealed
//! objects, and plaintext ones a user put there, in DynamoDB JSON or CSV,
//! gzipped or not.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backups::{is_sealed, Opener};
use crate::tables::{DdbError, DdbErrorKind, Table, TableMeta, Tables, ITEMS};
use crate::value::{item_from_json, item_to_json, Item};

const EXPORTS: &str = "ddb-exports";
const IMPORTS: &str = "ddb-imports";
/// Lines per export data file.
const LINES_PER_FILE: usize = 10_000;
/// The largest object an import reads (a bound on memory).
const MAX_IMPORT_OBJECT: usize = 256 << 20;

fn internal(e: impl std::fmt::Display) -> DdbError {
    DdbError::new(DdbErrorKind::Internal, e.to_string())
}

/// An export, as `DescribeExport` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportMeta {
    pub arn: String,
    pub id: String,
    pub status: String,
    pub table_arn: String,
    pub table_id: String,
    pub start_time: f64,
    pub end_time: f64,
    pub export_time: f64,
    pub bucket: String,
    pub prefix: Option<String>,
    pub format: String,
    pub export_type: String,
    /// Incremental exports: the period (seconds) and view type.
    pub from_time: Option<f64>,
    pub to_time: Option<f64>,
    pub view_type: Option<String>,
    pub item_count: i64,
    pub billed_bytes: i64,
    /// The S3 key of `manifest-summary.json`.
    pub manifest: String,
    pub client_token: Option<String>,
    /// Why a `FAILED` export failed.
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_message: Option<String>,
}

/// What an export is asked for.
pub struct ExportRequest {
    pub id: String,
    pub bucket: String,
    pub prefix: Option<String>,
    /// `None`: a full export at `at`; `Some((from, to, view))`: the changes
    /// between two times (microseconds).
    pub incremental: Option<(u64, u64, String)>,
    pub at: u64,
    pub now: f64,
    pub client_token: Option<String>,
}

/// An import, as `DescribeImport` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportMeta {
    pub arn: String,
    pub id: String,
    pub status: String,
    pub table_arn: String,
    pub table_id: String,
    pub bucket: String,
    pub key_prefix: Option<String>,
    pub format: String,
    pub compression: String,
    pub start_time: f64,
    pub end_time: f64,
    pub processed_items: i64,
    pub processed_bytes: i64,
    pub imported_items: i64,
    pub errors: i64,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub client_token: Option<String>,
    /// The request's `TableCreationParameters`, echoed in descriptions.
    pub creation: Value,
}

/// What an import reads.
pub struct ImportRequest {
    pub id: String,
    pub bucket: String,
    pub key_prefix: Option<String>,
    /// `DYNAMODB_JSON` or `CSV`.
    pub format: String,
    /// `NONE` or `GZIP`.
    pub compression: String,
    pub csv_delimiter: char,
    pub csv_header: Option<Vec<String>>,
    pub now: f64,
    pub client_token: Option<String>,
    pub creation: Value,
}

fn s3_object(bucket: &str, key: &str) -> String {
    format!("s3/{bucket}/{key}")
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, DdbError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).map_err(internal)?;
    enc.finish().map_err(internal)
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_IMPORT_OBJECT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    if out.len() > MAX_IMPORT_OBJECT {
        return Err("an object larger than 256 MiB uncompressed".into());
    }
    Ok(out)
}

/// Writes an export's data files, `LINES_PER_FILE` lines each.
struct ExportWriter<'a> {
    tables: &'a Tables,
    key: crate::backups::DataKey,
    bucket: String,
    base: String,
    lines: Vec<u8>,
    in_file: usize,
    files: Vec<Value>,
    items: i64,
    bytes: i64,
}

impl ExportWriter<'_> {
    fn line(&mut self, value: &Value) -> Result<(), DdbError> {
        let text = value.to_string();
        self.bytes += text.len() as i64;
        self.lines.extend_from_slice(text.as_bytes());
        self.lines.push(b'\n');
        self.in_file += 1;
        self.items += 1;
        if self.in_file >= LINES_PER_FILE {
            self.flush()?;
        }
        Ok(())
    }

    fn put(&self, key: &str, plain: &[u8]) -> Result<(), DdbError> {
        let object = s3_object(&self.bucket, key);
        let sealed = self.tables.seal_object(&self.key, &object, plain)?;
        self.tables.objects.put(&object, &sealed).map_err(internal)
    }

    fn flush(&mut self) -> Result<(), DdbError> {
        if self.in_file == 0 {
            return Ok(());
        }
        let key = format!("{}/data/{:05}.json.gz", self.base, self.files.len());
        self.put(&key, &gzip(&self.lines)?)?;
        self.files
            .push(json!({"itemCount": self.in_file, "dataFileS3Key": key}));
        self.lines.clear();
        self.in_file = 0;
        Ok(())
    }
}

impl Tables {
    /// Starts exporting the table as it was at `request.at` (or its changes
    /// between two times) and returns the export `IN_PROGRESS`, as DynamoDB
    /// does: a thread of its own writes the objects and then records the
    /// export `COMPLETED` (or `FAILED`, with the reason), so a large table
    /// does not hold the request past the client's timeout. Needs
    /// point-in-time recovery, as in DynamoDB; a request outside its window
    /// fails at once.
    pub fn export(
        self: &Arc<Self>,
        meta: &TableMeta,
        request: ExportRequest,
    ) -> Result<ExportMeta, DdbError> {
        let (first, last) = match &request.incremental {
            Some((from, to, _)) => (*from, *to),
            None => (request.at, request.at),
        };
        self.check_export_window(meta, first, last)?;
        // Each export holds a thread and a temporary copy of the table.
        let slot = ExportSlot::take().ok_or_else(|| {
            DdbError::new(
                DdbErrorKind::LimitExceeded,
                format!("There are already {MAX_RUNNING_EXPORTS} exports in progress; try again when one has finished"),
            )
        })?;
        let seconds = |micros: u64| micros as f64 / 1e6;
        let base = export_base(&request);
        let started = ExportMeta {
            arn: format!("{}/export/{}", meta.arn, request.id),
            id: request.id.clone(),
            status: "IN_PROGRESS".into(),
            table_arn: meta.arn.clone(),
            table_id: meta.id.clone(),
            start_time: request.now,
            end_time: 0.0,
            export_time: seconds(request.at),
            bucket: request.bucket.clone(),
            prefix: request.prefix.clone(),
            format: "DYNAMODB_JSON".into(),
            export_type: if request.incremental.is_some() {
                "INCREMENTAL_EXPORT".into()
            } else {
                "FULL_EXPORT".into()
            },
            from_time: request.incremental.as_ref().map(|i| seconds(i.0)),
            to_time: request.incremental.as_ref().map(|i| seconds(i.1)),
            view_type: request.incremental.as_ref().map(|i| i.2.clone()),
            item_count: 0,
            billed_bytes: 0,
            manifest: format!("{base}/manifest-summary.json"),
            client_token: request.client_token.clone(),
            failure_code: None,
            failure_message: None,
        };
        self.save_export(&started)?;
        let (tables, meta, record) = (self.clone(), meta.clone(), started.clone());
        let spawned = std::thread::Builder::new()
            .name("moat-export".into())
            .spawn(move || {
                let _slot = slot;
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tables.write_export(&meta, &request, record.clone())
                }));
                let finished = match written {
                    Ok(Ok(done)) => done,
                    Ok(Err(e)) => failed(record, e.message),
                    Err(_) => failed(record, "the export stopped on an internal error".into()),
                };
                if let Err(e) = tables.save_export(&finished) {
                    tracing::error!(export = %finished.arn, error = %e.message, "recording an export failed");
                }
            });
        if let Err(e) = spawned {
            self.save_export(&failed(started, "the export could not be started".into()))?;
            return Err(internal(e));
        }
        Ok(started)
    }

    fn save_export(&self, export: &ExportMeta) -> Result<(), DdbError> {
        self.catalog.put(
            EXPORTS,
            export.arn.as_bytes(),
            &serde_json::to_vec(export).map_err(internal)?,
        )?;
        Ok(())
    }

    /// Exports a stop interrupted are recorded as failed (at start).
    pub fn fail_interrupted_exports(&self) -> Result<(), DdbError> {
        for export in self.records::<ExportMeta>(EXPORTS)? {
            if export.status == "IN_PROGRESS" {
                self.save_export(&failed(
                    export,
                    "Moat stopped while the export was written".into(),
                ))?;
            }
        }
        Ok(())
    }

    fn check_export_window(&self, meta: &TableMeta, first: u64, last: u64) -> Result<(), DdbError> {
        let pitr = meta.pitr.clone().ok_or_else(|| {
            DdbError::new(
                DdbErrorKind::PitrNotEnabled,
                format!(
                    "Point in time recovery is not enabled for table '{}'",
                    meta.name
                ),
            )
        })?;
        let now = crate::tables::now_micros();
        if first < pitr.earliest(now) || last > now {
            return Err(DdbError::new(
                DdbErrorKind::InvalidExportTime,
                "The export time is outside the table's point-in-time recovery window",
            ));
        }
        Ok(())
    }

    /// Writes the export's objects; returns its record, `COMPLETED`.
    fn write_export(
        &self,
        meta: &TableMeta,
        request: &ExportRequest,
        started: ExportMeta,
    ) -> Result<ExportMeta, DdbError> {
        let pitr = meta.pitr.clone().ok_or_else(|| {
            DdbError::new(
                DdbErrorKind::PitrNotEnabled,
                "Point in time recovery was disabled during the export",
            )
        })?;
        if crate::tables::fail_point("export-hold") {
            // Tests: an export still running when Moat stops.
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        let base = export_base(request);
        let mut writer = ExportWriter {
            tables: self,
            // Ids, not names: key objects are readable metadata.
            key: self.new_data_key(
                &format!("moat:dynamodb:export/{}/{}", meta.id, request.id),
                &s3_object(&request.bucket, &base),
            )?,
            bucket: request.bucket.clone(),
            base: base.clone(),
            lines: Vec::new(),
            in_file: 0,
            files: Vec::new(),
            items: 0,
            bytes: 0,
        };
        let table = self.table(&meta.region, &meta.name)?;
        match &request.incremental {
            None => {
                let state = self.state_at(meta, &Self::base_for(&pitr, request.at)?, request.at)?;
                crate::backups::for_each_entry(&state.db, ITEMS, |_, v| {
                    let item = Table::decode(v)?;
                    writer.line(&json!({"Item": item_to_json(&item)}))
                })?;
            }
            Some((from, to, view)) => {
                // The last change of each item in the period, in key order.
                let mut last: BTreeMap<Vec<u8>, crate::tables::Change> = BTreeMap::new();
                self.changes(&table, *from, *to, |batch| {
                    for change in batch {
                        last.insert(change.storage.clone(), change);
                    }
                    Ok(())
                })?;
                let before = if view == "NEW_AND_OLD_IMAGES" {
                    let at = from.saturating_sub(1);
                    Some(self.state_at(meta, &Self::base_for(&pitr, at)?, at)?)
                } else {
                    None
                };
                for (storage, change) in last {
                    let keys = match (&change.item, &change.deleted_key) {
                        (Some(item), _) => table.key_attributes(item),
                        (None, Some(k)) => k.clone(),
                        (None, None) => Item::new(),
                    };
                    let mut line = json!({
                        "Metadata": {"WriteTimestampMicros": {"N": change.time.to_string()}},
                        "Keys": item_to_json(&keys),
                    });
                    if let Some(item) = &change.item {
                        line["NewImage"] = item_to_json(item);
                    }
                    if let Some(state) = &before {
                        if let Some(old) = state.db.get(ITEMS, &storage)? {
                            line["OldImage"] = item_to_json(&Table::decode(&old)?);
                        }
                    }
                    writer.line(&line)?;
                }
            }
        }
        writer.flush()?;
        let files_key = format!("{base}/manifest-files.json");
        let files: String = writer.files.iter().map(|f| format!("{f}\n")).collect();
        writer.put(&files_key, files.as_bytes())?;
        let summary_key = started.manifest.clone();
        let export = ExportMeta {
            status: "COMPLETED".into(),
            end_time: crate::tables::now_micros() as f64 / 1e6,
            item_count: writer.items,
            billed_bytes: writer.bytes,
            ..started
        };
        let summary = json!({
            "version": "2020-06-30", "exportArn": export.arn, "startTime": export.start_time,
            "endTime": export.end_time, "tableArn": export.table_arn, "tableId": export.table_id,
            "exportTime": export.export_time, "s3Bucket": export.bucket, "s3Prefix": export.prefix,
            "s3SseAlgorithm": "AES256", "manifestFilesS3Key": files_key,
            "billedSizeBytes": export.billed_bytes, "itemCount": export.item_count,
            "outputFormat": "DYNAMODB_JSON", "exportType": export.export_type
        });
        writer.put(&summary_key, summary.to_string().as_bytes())?;
        Ok(export)
    }

    pub fn describe_export(&self, arn: &str) -> Result<ExportMeta, DdbError> {
        self.record(EXPORTS, arn, DdbErrorKind::ExportNotFound, "Export")
    }

    /// Every export, oldest first.
    pub fn exports(&self) -> Result<Vec<ExportMeta>, DdbError> {
        let mut out: Vec<ExportMeta> = self.records(EXPORTS)?;
        out.sort_by(|a, b| a.start_time.total_cmp(&b.start_time));
        Ok(out)
    }

    /// Creates `target` and fills it from every object under the request's
    /// prefix. Lines that are not valid items are counted as errors and
    /// skipped, as DynamoDB does; an unreadable object fails the import.
    pub fn import(
        &self,
        target: TableMeta,
        request: ImportRequest,
    ) -> Result<ImportMeta, DdbError> {
        let prefix = format!(
            "s3/{}/{}",
            request.bucket,
            request.key_prefix.as_deref().unwrap_or("")
        );
        let objects = self.objects.list(&prefix).map_err(internal)?;
        let meta = self.create(target)?;
        let table = self.table(&meta.region, &meta.name)?;
        let mut import = ImportMeta {
            arn: format!("{}/import/{}", meta.arn, request.id),
            id: request.id.clone(),
            status: "IN_PROGRESS".into(),
            table_arn: meta.arn.clone(),
            table_id: meta.id.clone(),
            bucket: request.bucket.clone(),
            key_prefix: request.key_prefix.clone(),
            format: request.format.clone(),
            compression: request.compression.clone(),
            start_time: request.now,
            end_time: 0.0,
            processed_items: 0,
            processed_bytes: 0,
            imported_items: 0,
            errors: 0,
            failure_code: None,
            failure_message: None,
            client_token: request.client_token.clone(),
            creation: request.creation.clone(),
        };
        let mut opener = Opener::new(self);
        let result = (|| {
            for object in &objects {
                let name = object.rsplit('/').next().unwrap_or_default();
                // An export's own manifests sit beside its data.
                if name.starts_with("manifest-")
                    || name.ends_with(".md5")
                    || name == crate::backups::KEY_OBJECT
                {
                    continue;
                }
                let Some(bytes) = self.objects.get(object).map_err(|e| e.to_string())? else {
                    continue;
                };
                let bytes = if is_sealed(&bytes) {
                    opener
                        .open(object, &bytes)
                        .map_err(|e| format!("{object}: {e}"))?
                } else {
                    bytes
                };
                let bytes = match request.compression.as_str() {
                    "GZIP" => gunzip(&bytes).map_err(|e| format!("{object}: {e}"))?,
                    _ => bytes,
                };
                import.processed_bytes += bytes.len() as i64;
                let text = String::from_utf8_lossy(&bytes);
                let items = match request.format.as_str() {
                    "CSV" => csv_items(&table, &text, &request, &mut import),
                    _ => json_items(&text, &mut import),
                };
                let mut batch = Vec::with_capacity(items.len());
                for item in items {
                    match table.key_of(&item, true) {
                        Ok(key)
                            if crate::value::item_size(&item) <= crate::tables::MAX_ITEM_BYTES =>
                        {
                            batch.push((key.storage, Some(item)))
                        }
                        _ => import.errors += 1,
                    }
                }
                import.imported_items += batch.len() as i64;
                table.load(&batch).map_err(|e| e.message.clone())?;
            }
            Ok::<(), String>(())
        })();
        import.end_time = crate::tables::now_micros() as f64 / 1e6;
        match result {
            Ok(()) => import.status = "COMPLETED".into(),
            Err(message) => {
                import.status = "FAILED".into();
                import.failure_code = Some("ItemValidationError".into());
                import.failure_message = Some(message);
            }
        }
        self.catalog.put(
            IMPORTS,
            import.arn.as_bytes(),
            &serde_json::to_vec(&import).map_err(internal)?,
        )?;
        Ok(import)
    }

    pub fn describe_import(&self, arn: &str) -> Result<ImportMeta, DdbError> {
        self.record(IMPORTS, arn, DdbErrorKind::ImportNotFound, "Import")
    }

    /// Every import, oldest first.
    pub fn imports(&self) -> Result<Vec<ImportMeta>, DdbError> {
        let mut out: Vec<ImportMeta> = self.records(IMPORTS)?;
        out.sort_by(|a, b| a.start_time.total_cmp(&b.start_time));
        Ok(out)
    }
}

/// The most exports written at once.
const MAX_RUNNING_EXPORTS: usize = 4;

/// One of the `MAX_RUNNING_EXPORTS` places, given back when dropped.
struct ExportSlot;

static RUNNING_EXPORTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl ExportSlot {
    fn take() -> Option<ExportSlot> {
        use std::sync::atomic::Ordering;
        RUNNING_EXPORTS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_RUNNING_EXPORTS).then_some(n + 1)
            })
            .ok()
            .map(|_| ExportSlot)
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        RUNNING_EXPORTS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The export's record once it failed, ended now.
fn failed(export: ExportMeta, message: String) -> ExportMeta {
    ExportMeta {
        status: "FAILED".into(),
        end_time: crate::tables::now_micros() as f64 / 1e6,
        failure_code: Some("ExportFailed".into()),
        failure_message: Some(message),
        ..export
    }
}

/// Where an export's objects go: `[PREFIX/]AWSDynamoDB/ID`.
fn export_base(request: &ExportRequest) -> String {
    match &request.prefix {
        Some(p) if !p.is_empty() => {
            format!("{}/AWSDynamoDB/{}", p.trim_end_matches('/'), request.id)
        }
        _ => format!("AWSDynamoDB/{}", request.id),
    }
}

/// Items of DynamoDB JSON lines (`{"Item": {...}}`).
fn json_items(text: &str, import: &mut ImportMeta) -> Vec<Item> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        import.processed_items += 1;
        let item = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("Item").and_then(Value::as_object).cloned())
            .and_then(|m| item_from_json(&m).ok());
        match item {
            Some(item) => out.push(item),
            None => import.errors += 1,
        }
    }
    out
}

/// Items of CSV rows: the table's key attributes typed as the table
/// defines them, every other column a string, empty cells left out.
fn csv_items(
    table: &Table,
    text: &str,
    request: &ImportRequest,
    import: &mut ImportMeta,
) -> Vec<Item> {
    let mut rows = csv_rows(text, request.csv_delimiter).into_iter();
    let header = match &request.csv_header {
        Some(h) => h.clone(),
        None => match rows.next() {
            Some(h) => h,
            None => return Vec::new(),
        },
    };
    let kind_of = |name: &str| {
        table
            .meta
            .attribute_definitions
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.kind.clone())
            .unwrap_or_else(|| "S".to_owned())
    };
    let kinds: Vec<String> = header.iter().map(|h| kind_of(h)).collect();
    let mut out = Vec::new();
    for row in rows {
        import.processed_items += 1;
        if row.len() != header.len() {
            import.errors += 1;
            continue;
        }
        let mut map = serde_json::Map::new();
        for ((name, kind), cell) in header.iter().zip(&kinds).zip(row) {
            if !cell.is_empty() {
                map.insert(name.clone(), json!({ kind.as_str(): cell }));
            }
        }
        match item_from_json(&map) {
            Ok(item) => out.push(item),
            Err(_) => import.errors += 1,
        }
    }
    out
}

/// RFC 4180 rows: quoted fields may hold the delimiter, quotes (doubled)
/// and line breaks.
fn csv_rows(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && field.is_empty() {
            quoted = true;
        } else if c == delimiter {
            row.push(std::mem::take(&mut field));
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            row.push(std::mem::take(&mut field));
            if !(row.len() == 1 && row[0].is_empty()) {
                rows.push(std::mem::take(&mut row));
            }
            row.clear();
        } else {
            field.push(c);
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn csv_quotes_delimiters_and_line_breaks() {
        let rows = csv_rows(
            "a,b,c\r\n1,\"x,y\",\"say \"\"hi\"\"\"\n2,,\"two\nlines\"\n",
            ',',
        );
        assert_eq!(
            rows,
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x,y", "say \"hi\""],
                vec!["2", "", "two\nlines"],
            ]
        );
        assert_eq!(csv_rows("a;b", ';'), vec![vec!["a", "b"]]);
        assert!(csv_rows("", ',').is_empty());
    }

    proptest! {
        #[test]
        fn csv_never_panics(text in ".{0,300}", d in prop::sample::select(vec![',', ';', '\t', '|'])) {
            let _ = csv_rows(&text, d);
        }

        #[test]
        fn gunzip_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = gunzip(&bytes);
        }
    }
}
