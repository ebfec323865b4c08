//! A CI-sized run of the benchmark harness (`moat-bench`), so that it never
//! rots: every workload for a moment over TLS against a real Moat. It
//! asserts that nothing failed, never how fast anything was.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Moat, TempDir};
use moat_bench::{Data, RunConfig, Target, Workload};

#[tokio::test(flavor = "multi_thread")]
async fn every_workload_runs_without_errors() {
    let dir = TempDir::new("bench-smoke");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let target = Target::new(
        &moat.endpoint,
        Some(&moat.ca_pem()),
        "us-east-1",
        &id,
        &secret,
        None,
    )
    .unwrap();
    let data = Arc::new(Data {
        table: "bench".into(),
        items: 300,
        item_bytes: 1000,
        partitions: 20,
    });
    moat_bench::setup(&target, &data, 4).await.unwrap();
    for workload in ["get", "put", "query", "mixed", "batch", "batchget"] {
        let report = moat_bench::run(
            &target,
            data.clone(),
            &RunConfig {
                workload: Workload::parse(workload).unwrap(),
                connections: 4,
                warmup: Duration::from_millis(200),
                duration: Duration::from_millis(700),
                server_pid: Some(moat.pid()),
                rate: None,
            },
        )
        .await
        .unwrap();
        assert!(report.requests > 0, "{workload}: {report:?}");
        assert_eq!(report.errors, 0, "{workload}: {:?}", report.first_error);
        assert!(
            report.p50_us > 0 && report.p50_us <= report.p99_us && report.p99_us <= report.p999_us
        );
        assert!(report.server_cpu_seconds.is_some() && report.server_peak_rss_mb.is_some());
    }
    // A wrong secret is refused: the harness really signs.
    let wrong = Target::new(
        &moat.endpoint,
        Some(&moat.ca_pem()),
        "us-east-1",
        &id,
        "wrong",
        None,
    )
    .unwrap();
    let (status, _) = wrong
        .connect()
        .await
        .unwrap()
        .call("ListTables", b"{}")
        .await
        .unwrap();
    assert_eq!(status, 400);
    // And refused requests are errors, never throughput: a server that
    // answers every request with an error must not look fast.
    let refused = moat_bench::run(
        &wrong,
        data.clone(),
        &RunConfig {
            workload: Workload::Get,
            connections: 2,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            server_pid: None,
            rate: None,
        },
    )
    .await
    .unwrap();
    assert!(
        refused.requests > 0
            && refused.errors == refused.requests
            && refused.throughput == 0.0
            && refused.p50_us == 0,
        "{refused:?}"
    );
    assert!(
        refused
            .first_error
            .as_deref()
            .is_some_and(|e| e.contains("InvalidSignatureException")),
        "{refused:?}"
    );

    // At a set rate, the harness sends about that many requests.
    let paced = moat_bench::run(
        &target,
        data.clone(),
        &RunConfig {
            workload: Workload::Get,
            connections: 2,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(1000),
            server_pid: None,
            rate: Some(100.0),
        },
    )
    .await
    .unwrap();
    assert!(
        (60..=140).contains(&paced.requests) && paced.errors == 0,
        "{paced:?}"
    );

    // The query workload reads whole partitions of 10.
    let mut conn = target.connect().await.unwrap();
    let (status, body) = conn
        .call(
            "Query",
            br#"{"TableName":"bench","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{":p":{"S":"q3"}}}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Count"], 10);
}
