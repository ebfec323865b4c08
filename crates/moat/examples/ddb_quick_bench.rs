//! A quick GetItem/PutItem benchmark through the AWS SDK for Rust against a
//! running Moat (the performance issue brings the full harness).
//!
//! Usage: `ddb_quick_bench DATA_DIR ENDPOINT [SECONDS] [CONCURRENCY]`; see
//! `bench/ddb-quick.sh`, which starts Moat and runs this.

use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data_dir = std::path::PathBuf::from(&args[1]);
    let endpoint = &args[2];
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(16);
    let creds = std::fs::read_to_string(data_dir.join("aws/credentials")).unwrap();
    let field = |name: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .to_owned()
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(
                    TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(std::fs::read(data_dir.join("tls/ca.pem")).unwrap()),
                )
                .build()
                .unwrap(),
        )
        .build_https();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            field("aws_access_key_id"),
            field("aws_secret_access_key"),
            None,
            None,
            "bench",
        ))
        .http_client(http)
        .build();
    let db = aws_sdk_dynamodb::Client::from_conf(config);
    db.create_table()
        .table_name("bench")
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let payload = "x".repeat(1000);
    let keys = 10_000;
    println!("workload | concurrency | ops/s | p50 ms | p99 ms | errors");
    for workload in ["put", "get"] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (db, payload) = (db.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut i = t;
                while Instant::now() < deadline {
                    let key = format!("k{}", i % keys);
                    let start = Instant::now();
                    let ok = if workload == "put" {
                        db.put_item()
                            .table_name("bench")
                            .item("pk", AttributeValue::S(key))
                            .item("v", AttributeValue::S(payload.clone()))
                            .send()
                            .await
                            .is_ok()
                    } else {
                        db.get_item()
                            .table_name("bench")
                            .key("pk", AttributeValue::S(key))
                            .send()
                            .await
                            .is_ok()
                    };
                    lat.push(start.elapsed());
                    if !ok {
                        errors += 1;
                    }
                    i += concurrency;
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.unwrap();
            all.extend(lat);
            errors += e;
        }
        all.sort();
        let pct =
            |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "{workload:>8} | {concurrency:>11} | {:>5.0} | {:>6.2} | {:>6.2} | {errors}",
            all.len() as f64 / seconds as f64,
            pct(0.50),
            pct(0.99)
        );
    }
}
