//! DynamoDB on-demand backups: consistent copies while writes go on,
//! restores (also into another region), listing and deletion, encryption of
//! backup files, and a damaged backup refused.

mod common;

use std::collections::HashMap;

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as AV, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use common::{Moat, TempDir};

#[path = "common/sdk.rs"]
mod sdk;

fn s(v: &str) -> AV {
    AV::S(v.to_owned())
}

fn code<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

fn client(moat: &Moat, region: &str) -> Client {
    let (id, secret) = moat.root_credentials();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(region.to_owned()))
        .endpoint_url(&moat.endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "root"))
        .http_client(sdk::http_client(moat))
        .build();
    Client::from_conf(config)
}

async fn all_items(db: &Client, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.clone())
            .send()
            .await
            .unwrap();
        out.extend(
            page.items()
                .iter()
                .map(|i| format!("{}={}", i["pk"].as_s().unwrap(), i["v"].as_s().unwrap())),
        );
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_restore_what_was_there() {
    let dir = TempDir::new("backups");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    db.create_table()
        .table_name("orders")
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
    for i in 0..40 {
        db.put_item()
            .table_name("orders")
            .item("pk", s(&format!("k{i:02}")))
            .item("v", s(&format!("BACKUPMARKER{i}")))
            .send()
            .await
            .unwrap();
    }
    let before = all_items(&db, "orders").await;

    // A writer keeps going while the backup is taken.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                db.put_item()
                    .table_name("orders")
                    .item("pk", s(&format!("late{i:02}")))
                    .item("v", s("late"))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let backup = db
        .create_backup()
        .table_name("orders")
        .backup_name("nightly")
        .send()
        .await
        .unwrap();
    let arn = backup.backup_details().unwrap().backup_arn().to_owned();
    writer.await.unwrap();
    assert!(arn.starts_with(&format!(
        "arn:aws:dynamodb:us-east-1:{}:table/orders/backup/",
        moat.account
    )));

    // Damage after the backup: it must not show in the restore.
    for i in 0..10 {
        db.delete_item()
            .table_name("orders")
            .key("pk", s(&format!("k{i:02}")))
            .send()
            .await
            .unwrap();
    }
    db.restore_table_from_backup()
        .target_table_name("restored")
        .backup_arn(&arn)
        .send()
        .await
        .unwrap();
    let restored = all_items(&db, "restored").await;
    let original: Vec<&String> = restored.iter().filter(|i| !i.starts_with("late")).collect();
    assert_eq!(
        original,
        before.iter().collect::<Vec<_>>(),
        "every item of before the backup, none of the deletions after"
    );
    let late = restored.len() - original.len();
    assert!(late <= 40, "late writes are a consistent prefix: {late}");
    let desc = db
        .describe_table()
        .table_name("restored")
        .send()
        .await
        .unwrap();
    assert_eq!(desc.table().unwrap().key_schema()[0].attribute_name(), "pk");

    assert_eq!(
        code(
            db.restore_table_from_backup()
                .target_table_name("restored")
                .backup_arn(&arn)
                .send()
                .await
        ),
        "TableAlreadyExistsException"
    );

    // Listing, describing, paging and deleting.
    db.create_backup()
        .table_name("orders")
        .backup_name("second")
        .send()
        .await
        .unwrap();
    db.create_backup()
        .table_name("restored")
        .backup_name("of-restored")
        .send()
        .await
        .unwrap();
    let listed = db.list_backups().table_name("orders").send().await.unwrap();
    assert_eq!(listed.backup_summaries().len(), 2);
    let page = db.list_backups().limit(1).send().await.unwrap();
    assert_eq!(page.backup_summaries().len(), 1);
    let rest = db
        .list_backups()
        .exclusive_start_backup_arn(page.last_evaluated_backup_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.backup_summaries().len(), 2);
    let described = db.describe_backup().backup_arn(&arn).send().await.unwrap();
    let details = described.backup_description().unwrap();
    // The count is the copy's own: the 40 items of before plus the late writes it caught.
    assert_eq!(
        details.source_table_details().unwrap().item_count(),
        Some(restored.len() as i64)
    );

    // Restore into another region, from a backup taken in this one.
    let eu = client(&moat, "eu-west-1");
    eu.restore_table_from_backup()
        .target_table_name("orders-eu")
        .backup_arn(&arn)
        .send()
        .await
        .unwrap();
    let eu_desc = eu
        .describe_table()
        .table_name("orders-eu")
        .send()
        .await
        .unwrap();
    assert!(eu_desc
        .table()
        .unwrap()
        .table_arn()
        .unwrap()
        .starts_with("arn:aws:dynamodb:eu-west-1:"));
    assert_eq!(
        code(db.describe_table().table_name("orders-eu").send().await),
        "ResourceNotFoundException"
    );
    let eu_items = all_items(&eu, "orders-eu").await;
    assert_eq!(eu_items, restored);

    db.delete_backup().backup_arn(&arn).send().await.unwrap();
    assert_eq!(
        code(db.describe_backup().backup_arn(&arn).send().await),
        "BackupNotFoundException"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_files_are_encrypted_and_a_damaged_one_is_refused() {
    let dir = TempDir::new("backups-enc");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    db.create_table()
        .table_name("secrets")
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
    for i in 0..30 {
        db.put_item()
            .table_name("secrets")
            .set_item(Some(HashMap::from([
                ("pk".to_owned(), s(&format!("BKMARKERKEY{i}"))),
                ("v".to_owned(), s("BKMARKERVALUE")),
            ])))
            .send()
            .await
            .unwrap();
    }
    let arn = db
        .create_backup()
        .table_name("secrets")
        .backup_name("bk1")
        .send()
        .await
        .unwrap()
        .backup_details()
        .unwrap()
        .backup_arn()
        .to_owned();
    let backups_dir = dir.path().join("dynamodb/backups");
    let files: Vec<_> = std::fs::read_dir(&backups_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "db")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"BKMARKER"),
            "{} holds a marker",
            f.display()
        );
    }
    let db_file = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "db"))
        .unwrap();
    let mut bytes = std::fs::read(db_file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(db_file, &bytes).unwrap();
    let refused = db
        .restore_table_from_backup()
        .target_table_name("from-damaged")
        .backup_arn(&arn)
        .send()
        .await;
    let err = refused.expect_err("a damaged backup does not restore");
    assert!(err.message().unwrap_or("").contains("corrupt"), "{err:?}");
    assert_eq!(
        code(db.describe_table().table_name("from-damaged").send().await),
        "ResourceNotFoundException"
    );
}

async fn state(db: &Client, table: &str) -> Vec<String> {
    let mut items: Vec<String> = db
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|i| format!("{}={}", i["pk"].as_s().unwrap(), i["v"].as_s().unwrap()))
        .collect();
    items.sort();
    items
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_recovery_returns_each_recorded_moment() {
    let dir = TempDir::new("pitr");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    db.create_table()
        .table_name("ledger")
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
    assert_eq!(
        code(
            db.restore_table_to_point_in_time()
                .source_table_name("ledger")
                .target_table_name("x")
                .use_latest_restorable_time(true)
                .send()
                .await
        ),
        "PointInTimeRecoveryUnavailableException"
    );
    db.put_item()
        .table_name("ledger")
        .item("pk", s("base"))
        .item("v", s("0"))
        .send()
        .await
        .unwrap();
    db.update_continuous_backups()
        .table_name("ledger")
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .recovery_period_in_days(7)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let described = db
        .describe_continuous_backups()
        .table_name("ledger")
        .send()
        .await
        .unwrap();
    let pitr = described
        .continuous_backups_description()
        .unwrap()
        .point_in_time_recovery_description()
        .unwrap();
    assert_eq!(
        pitr.point_in_time_recovery_status().unwrap().as_str(),
        "ENABLED"
    );
    let earliest = pitr.earliest_restorable_date_time().unwrap().as_secs_f64();

    let pause = || tokio::time::sleep(std::time::Duration::from_millis(60));
    let put = |k: &'static str, v: &'static str| {
        db.put_item()
            .table_name("ledger")
            .item("pk", s(k))
            .item("v", s(v))
            .send()
    };
    pause().await;
    put("a", "1").await.unwrap();
    put("b", "1").await.unwrap();
    pause().await;
    let t1 = now_secs();
    pause().await;
    put("a", "2").await.unwrap();
    db.delete_item()
        .table_name("ledger")
        .key("pk", s("b"))
        .send()
        .await
        .unwrap();
    put("c", "1").await.unwrap();
    pause().await;
    let t2 = now_secs();
    pause().await;
    put("c", "2").await.unwrap();
    put("d", "1").await.unwrap();
    db.delete_item()
        .table_name("ledger")
        .key("pk", s("base"))
        .send()
        .await
        .unwrap();
    pause().await;
    let t3 = now_secs();

    let expected: [(&str, f64, Vec<&str>); 3] = [
        ("at-t1", t1, vec!["a=1", "b=1", "base=0"]),
        ("at-t2", t2, vec!["a=2", "base=0", "c=1"]),
        ("at-t3", t3, vec!["a=2", "c=2", "d=1"]),
    ];
    for (target, at, want) in &expected {
        db.restore_table_to_point_in_time()
            .source_table_name("ledger")
            .target_table_name(*target)
            .restore_date_time(aws_smithy_types::DateTime::from_secs_f64(*at))
            .send()
            .await
            .unwrap();
        assert_eq!(state(&db, target).await, *want, "restored to {target}");
    }
    db.restore_table_to_point_in_time()
        .source_table_name("ledger")
        .target_table_name("latest")
        .use_latest_restorable_time(true)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&db, "latest").await, state(&db, "ledger").await);
    assert_eq!(
        code(
            db.restore_table_to_point_in_time()
                .source_table_name("ledger")
                .target_table_name("too-early")
                .restore_date_time(aws_smithy_types::DateTime::from_secs_f64(earliest - 10.0))
                .send()
                .await
        ),
        "InvalidRestoreTimeException"
    );

    // From another region, by ARN: the restored table is in the caller's region.
    let eu = client(&moat, "eu-west-1");
    eu.restore_table_to_point_in_time()
        .source_table_arn(format!(
            "arn:aws:dynamodb:us-east-1:{}:table/ledger",
            moat.account
        ))
        .target_table_name("ledger-eu")
        .restore_date_time(aws_smithy_types::DateTime::from_secs_f64(t2))
        .send()
        .await
        .unwrap();
    assert_eq!(state(&eu, "ledger-eu").await, vec!["a=2", "base=0", "c=1"]);
}

/// A DynamoDB request signed `offset` seconds from now, for a Moat whose clock is shifted.
fn ddb_raw(
    moat: &Moat,
    operation: &str,
    body: serde_json::Value,
    offset: u64,
) -> common::RawResponse {
    let (id, secret) = moat.root_credentials();
    let signer = common::Signer {
        time: std::time::SystemTime::now() + std::time::Duration::from_secs(offset),
        ..common::Signer::new(&id, &secret, "dynamodb")
    };
    common::RawRequest::dynamodb(moat.port, operation, &body.to_string())
        .signed(&signer)
        .send(moat.port, &moat.ca_pem())
}

fn shifted(dir: &std::path::Path, days: u64) -> Moat {
    let shift = format!("+{days}d");
    Moat::must_start_with(
        dir,
        &[],
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME", shift.as_str()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

fn pitr_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("dynamodb/pitr"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_history_is_rebased_and_pruned_to_its_period() {
    let dir = TempDir::new("pitr-prune");
    let mut moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    db.create_table()
        .table_name("history")
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
    db.update_continuous_backups()
        .table_name("history")
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .recovery_period_in_days(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name("history")
        .item("pk", s("x"))
        .item("v", s("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(pitr_files(dir.path()), 1);
    let first_base: std::path::PathBuf = std::fs::read_dir(dir.path().join("dynamodb/pitr"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .unwrap();
    drop(db);
    assert!(moat.must_stop());

    // Two days on: a new base is taken at start; nothing is old enough to prune yet.
    let day = 86_400;
    moat = shifted(dir.path(), 2);
    for _ in 0..100 {
        if pitr_files(dir.path()) == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(pitr_files(dir.path()), 2, "a second base after a day");
    let put = ddb_raw(
        &moat,
        "PutItem",
        serde_json::json!({"TableName": "history", "Item": {"pk": {"S": "y"}, "v": {"S": "1"}}}),
        2 * day,
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert!(moat.must_stop());

    // Four days on: a third base, and the first base and the log before the
    // second one fall out of the one-day recovery period.
    moat = shifted(dir.path(), 4);
    for _ in 0..100 {
        if !first_base.exists() && pitr_files(dir.path()) == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !first_base.exists(),
        "the first base fell out of the recovery period"
    );
    assert_eq!(
        pitr_files(dir.path()),
        2,
        "the oldest base was pruned, a new one taken"
    );
    let too_old = ddb_raw(
        &moat,
        "RestoreTableToPointInTime",
        serde_json::json!({"SourceTableName": "history", "TargetTableName": "old", "RestoreDateTime":
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() + day as f64}),
        4 * day,
    );
    assert_eq!(too_old.error_code(), "InvalidRestoreTimeException");
    let latest = ddb_raw(
        &moat,
        "RestoreTableToPointInTime",
        serde_json::json!({"SourceTableName": "history", "TargetTableName": "latest", "UseLatestRestorableTime": true}),
        4 * day,
    );
    assert_eq!(latest.status, 200, "{}", latest.body);
    let scan = ddb_raw(
        &moat,
        "Scan",
        serde_json::json!({"TableName": "latest"}),
        4 * day,
    );
    let v: serde_json::Value = serde_json::from_str(&scan.body).unwrap();
    let mut keys: Vec<&str> = v["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pk"]["S"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["x", "y"],
        "the restore is complete from the kept base and its log"
    );
}
