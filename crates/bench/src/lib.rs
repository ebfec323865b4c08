//! A load generator for DynamoDB-compatible endpoints.
//!
//! It signs each request with SigV4 as an SDK does, and keeps N HTTP/1.1
//! connections open (TLS or plain). It runs a named workload for a set time
//! after a warm-up, and reports throughput, latency percentiles, errors and
//! the server's CPU time and peak resident memory (read from `/proc`).
//!
//! The client is deliberately minimal. It writes requests and reads
//! `Content-Length` or chunked responses by hand, so that the measurement
//! costs little next to what it measures.

pub mod baseline;
mod client;
mod sign;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::{Conn, Target};
use serde_json::{json, Value};

/// What the workers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// GetItem of 1 KB items from the preloaded set.
    Get,
    /// PutItem of new 1 KB items.
    Put,
    /// Query returning the 10 items (200 B each) of a partition.
    Query,
    /// 80% GetItem, 20% PutItem over the preloaded set.
    Mixed,
    /// BatchWriteItem of 25 new 1 KB items.
    Batch,
    /// BatchGetItem of 25 distinct items of the preloaded set.
    BatchGet,
}

impl Workload {
    pub fn parse(name: &str) -> Option<Workload> {
        Some(match name {
            "get" => Workload::Get,
            "put" => Workload::Put,
            "query" => Workload::Query,
            "mixed" => Workload::Mixed,
            "batch" => Workload::Batch,
            "batchget" => Workload::BatchGet,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Query => "query",
            Workload::Mixed => "mixed",
            Workload::Batch => "batch",
            Workload::BatchGet => "batchget",
        }
    }
}

/// The table every workload uses: `pk` (S) and `sk` (N).
pub struct Data {
    pub table: String,
    /// Items `item{i}` (sk 0) preloaded for `get` and `mixed`.
    pub items: u64,
    /// Bytes of the `v` attribute of a `get`/`put` item.
    pub item_bytes: usize,
    /// Partitions `q{p}` of 10 items of 200 B, for `query`.
    pub partitions: u64,
}

pub struct RunConfig {
    pub workload: Workload,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// The server's process, for CPU time and memory.
    pub server_pid: Option<u32>,
    /// Requests per second across all connections (`None`: as fast as the
    /// server answers). Latency at a set rate is what a service sees below
    /// its peak.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub workload: &'static str,
    pub connections: usize,
    /// Requests sent in the measured period, errors included.
    pub requests: u64,
    /// Requests answered with anything but HTTP 200, or not at all.
    pub errors: u64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Successful answers a second; the latencies are theirs too.
    pub throughput: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub server_cpu_seconds: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "workload": self.workload, "connections": self.connections,
            "requests": self.requests, "errors": self.errors, "first_error": self.first_error,
            "seconds": self.seconds, "throughput": self.throughput,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "p999_us": self.p999_us,
            "server_cpu_seconds": self.server_cpu_seconds,
            "server_peak_rss_mb": self.server_peak_rss_mb,
        })
    }
}

/// A small, fast generator: each worker draws its own keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn padding(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn item(pk: &str, sk: u64, value: &str) -> Value {
    json!({"pk": {"S": pk}, "sk": {"N": sk.to_string()}, "v": {"S": value}})
}

/// One request of a workload: (operation, body).
///
/// Every write stores something new: `put` and `batch` write keys of their
/// own run (`run` differs between runs), and `mixed` overwrites preloaded
/// items with a stamp of its own. An item rewritten as it was changes no
/// page of the store, so a rerun would otherwise measure writes that write
/// nothing.
fn request(
    workload: Workload,
    data: &Data,
    rng: &mut Rng,
    (run, worker, seq): (u64, usize, u64),
    pad: &str,
) -> (&'static str, String) {
    let stamp = format!("{run:x}-{worker}-{seq}");
    let get = |rng: &mut Rng| {
        let i = rng.below(data.items);
        (
            "GetItem",
            json!({"TableName": data.table, "Key": {"pk": {"S": format!("item{i}")}, "sk": {"N": "0"}}})
                .to_string(),
        )
    };
    let put = |pk: String| {
        let mut item = item(&pk, 0, pad);
        item["w"] = json!({"S": stamp});
        (
            "PutItem",
            json!({"TableName": data.table, "Item": item}).to_string(),
        )
    };
    match workload {
        Workload::Get => get(rng),
        Workload::Put => put(format!("put{stamp}")),
        Workload::Query => {
            let p = rng.below(data.partitions);
            (
                "Query",
                json!({
                    "TableName": data.table,
                    "KeyConditionExpression": "pk = :p",
                    "ExpressionAttributeValues": {":p": {"S": format!("q{p}")}}
                })
                .to_string(),
            )
        }
        Workload::Mixed => {
            if rng.below(10) < 8 {
                get(rng)
            } else {
                put(format!("item{}", rng.below(data.items)))
            }
        }
        Workload::Batch => {
            let requests: Vec<Value> = (0..25)
                .map(
                    |j| json!({"PutRequest": {"Item": item(&format!("batch{stamp}-{j}"), 0, pad)}}),
                )
                .collect();
            (
                "BatchWriteItem",
                json!({"RequestItems": {data.table.clone(): requests}}).to_string(),
            )
        }
        Workload::BatchGet => {
            // Evenly spaced from a random start: distinct (a batch may not
            // name a key twice) however few items there are.
            let count = data.items.clamp(1, 25);
            let (start, stride) = (rng.below(data.items), (data.items / 25).max(1));
            let keys: Vec<Value> = (0..count)
                .map(|j| {
                    let i = (start + j * stride) % data.items.max(1);
                    json!({"pk": {"S": format!("item{i}")}, "sk": {"N": "0"}})
                })
                .collect();
            (
                "BatchGetItem",
                json!({"RequestItems": {data.table.clone(): {"Keys": keys}}}).to_string(),
            )
        }
    }
}

/// CPU seconds (user + system) of a process so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc counts in USER_HZ, which is 100 on Linux.
    Some((utime + stime) / 100.0)
}

/// Resident memory of a process now, in MiB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Runs `config.workload` on `config.connections` connections: a warm-up
/// whose requests are not counted, then the measured period.
pub async fn run(target: &Target, data: Arc<Data>, config: &RunConfig) -> Result<Report, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let pad: Arc<str> = padding(data.item_bytes).into();
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut workers = Vec::new();
    for worker in 0..config.connections {
        let mut conn = target.connect().await?;
        let (stop, measuring, data, pad) =
            (stop.clone(), measuring.clone(), data.clone(), pad.clone());
        let workload = config.workload;
        // Each connection sends at its share of the rate, on a fixed
        // schedule (a slow answer does not make the next request later).
        let interval = config
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(config.connections as f64 / r));
        workers.push(tokio::spawn(async move {
            // Seeded by the run as well as the worker: a run that replayed
            // the keys of the run before it would find them in the server's
            // cache and measure a table of any size as if it were small.
            let mut rng = Rng((0x9E37_79B9_7F4A_7C15 ^ run)
                .wrapping_add((worker as u64 + 1).wrapping_mul(0x2545_F491))
                | 1);
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut first_error = None;
            let mut seq = 0u64;
            let mut next = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                if let Some(every) = interval {
                    next += every;
                    tokio::time::sleep_until(next).await;
                }
                let (op, body) = request(workload, &data, &mut rng, (run, worker, seq), &pad);
                let started = Instant::now();
                let result = conn.call(op, body.as_bytes()).await;
                let took = started.elapsed();
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                requests += 1;
                match result {
                    // Only successful answers count towards throughput and latency:
                    // a server that refuses fast must not look fast.
                    Ok((200, _)) => {
                        latencies.push(took.as_micros().min(u128::from(u32::MAX)) as u32)
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{op}: HTTP {status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{op}: {e}"));
                        // The connection may be gone: open another.
                        if let Ok(fresh) = conn.reconnect().await {
                            conn = fresh;
                        }
                    }
                }
            }
            (requests, errors, first_error, latencies)
        }));
    }
    tokio::time::sleep(config.warmup).await;
    let cpu_before = config.server_pid.and_then(cpu_seconds);
    let mut peak_rss = config.server_pid.and_then(rss_mb);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_millis(100).min(config.duration)).await;
        if let Some(now) = config.server_pid.and_then(rss_mb) {
            peak_rss = Some(peak_rss.map_or(now, |p: f64| p.max(now)));
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = config.server_pid.and_then(cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let (mut requests, mut errors, mut first_error) = (0, 0, None);
    for w in workers {
        let (r, e, f, l) = w.await.map_err(|e| e.to_string())?;
        requests += r;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
        all.extend(l);
    }
    all.sort_unstable();
    Ok(Report {
        workload: config.workload.name(),
        connections: config.connections,
        requests,
        errors,
        first_error,
        seconds,
        throughput: (requests - errors) as f64 / seconds,
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        p999_us: percentile(&all, 99.9),
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        server_peak_rss_mb: peak_rss,
    })
}

/// Creates the table (unless it exists) and loads what the workloads read:
/// `data.items` items of `data.item_bytes`, and `data.partitions` partitions
/// of 10 items of 200 B, with BatchWriteItem on `connections` connections.
pub async fn setup(target: &Target, data: &Data, connections: usize) -> Result<(), String> {
    let mut conn = target.connect().await?;
    let create = json!({
        "TableName": data.table,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"}
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"}
        ],
        "BillingMode": "PAY_PER_REQUEST"
    });
    let (status, body) = conn
        .call("CreateTable", create.to_string().as_bytes())
        .await?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 && !text.contains("ResourceInUseException") {
        return Err(format!("CreateTable: HTTP {status}: {text}"));
    }
    // Some servers take a moment to make a table ACTIVE.
    for _ in 0..600 {
        let (status, body) = conn
            .call(
                "DescribeTable",
                json!({"TableName": data.table}).to_string().as_bytes(),
            )
            .await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && v["Table"]["TableStatus"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pad = padding(data.item_bytes);
    let small = padding(200 - 40);
    let mut all: Vec<Value> = (0..data.items)
        .map(|i| item(&format!("item{i}"), 0, &pad))
        .collect();
    for p in 0..data.partitions {
        for sk in 0..10 {
            all.push(item(&format!("q{p}"), sk, &small));
        }
    }
    let batches: Vec<Vec<Value>> = all.chunks(25).map(|c| c.to_vec()).collect();
    let batches = Arc::new(std::sync::Mutex::new(batches));
    let mut loaders = Vec::new();
    for _ in 0..connections.max(1) {
        let mut conn = target.connect().await?;
        let (batches, table) = (batches.clone(), data.table.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let next = batches.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(items) = next else {
                    return Ok::<(), String>(());
                };
                let mut pending: Vec<Value> = items
                    .into_iter()
                    .map(|i| json!({"PutRequest": {"Item": i}}))
                    .collect();
                for attempt in 0..100 {
                    let body = json!({"RequestItems": {table.clone(): pending}}).to_string();
                    let (status, reply) = conn.call("BatchWriteItem", body.as_bytes()).await?;
                    if status != 200 {
                        return Err(format!(
                            "BatchWriteItem: HTTP {status}: {}",
                            String::from_utf8_lossy(&reply)
                        ));
                    }
                    let reply: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                    pending = reply["UnprocessedItems"][&table]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if pending.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
            }
        }));
    }
    for l in loaders {
        l.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writes of a workload, as the server would store them.
    fn writes(workload: Workload, run: u64) -> Vec<String> {
        let data = Data {
            table: "t".into(),
            items: 10,
            item_bytes: 10,
            partitions: 1,
        };
        let mut rng = Rng(7);
        (1..=20)
            .map(|seq| request(workload, &data, &mut rng, (run, 0, seq), "x").1)
            .filter(|body| body.contains("\"Item\""))
            .collect()
    }

    #[test]
    fn a_batch_get_names_distinct_keys() {
        for items in [1, 7, 25, 26, 1000, 100_000] {
            let data = Data {
                table: "t".into(),
                items,
                item_bytes: 10,
                partitions: 1,
            };
            let mut rng = Rng(7);
            for seq in 0..50 {
                let body = request(Workload::BatchGet, &data, &mut rng, (1, 0, seq), "x").1;
                let body: Value = serde_json::from_str(&body).unwrap();
                let keys = body["RequestItems"]["t"]["Keys"].as_array().unwrap();
                let distinct: std::collections::HashSet<_> = keys.iter().collect();
                assert_eq!(keys.len(), items.min(25) as usize);
                assert_eq!(distinct.len(), keys.len(), "{items} items: {keys:?}");
            }
        }
    }

    #[test]
    fn every_run_writes_something_new() {
        for workload in [Workload::Put, Workload::Mixed, Workload::Batch] {
            let (first, second) = (writes(workload, 1), writes(workload, 2));
            assert!(!first.is_empty(), "{workload:?} wrote nothing");
            for body in &second {
                assert!(!first.contains(body), "{workload:?} wrote {body} again");
            }
        }
    }
}
