//! DynamoDB on-demand backups: consistent copies while writes go on,
//! restores (also into another region), listing and deletion, encryption of
//! backup files, and a damaged backup refused.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as AV, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use common::{files_under, Moat, TempDir};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::{code, def, ks};

fn s(v: &str) -> AV {
    AV::S(v.to_owned())
}

fn client(moat: &Moat, region: &str) -> Client {
    sdk::dynamodb_client_in(moat, region, sdk::root(moat))
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
        .table_name("BKMARKERTABLE")
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
            .table_name("BKMARKERTABLE")
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
        .table_name("BKMARKERTABLE")
        .backup_name("bk1")
        .send()
        .await
        .unwrap()
        .backup_details()
        .unwrap()
        .backup_arn()
        .to_owned();
    // Every object of the backup: sealed, so no marker (of the items or of
    // the table's name) in any of them.
    let objects = files_under(&dir.path().join("objects"));
    let chunks: Vec<_> = objects
        .iter()
        .filter(|f| f.parent().is_some_and(|p| p.ends_with("chunks")))
        .collect();
    assert!(!chunks.is_empty(), "{objects:?}");
    for f in &objects {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"BKMARKER"),
            "{} holds a marker",
            f.display()
        );
    }
    let chunk = chunks[0];
    let mut bytes = std::fs::read(chunk).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x20;
    std::fs::write(chunk, &bytes).unwrap();
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

fn bytes_under(dir: &std::path::Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
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

/// The `by-value` index's entries as `pk=v`, sorted.
async fn index_state(db: &Client, table: &str) -> Vec<String> {
    let mut items: Vec<String> = db
        .scan()
        .table_name(table)
        .index_name("by-value")
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
    // An index on the value: restores rebuild it to the same moment.
    db.create_table()
        .table_name("ledger")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("v", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .global_secondary_indexes(sdk::global_index(
            "by-value",
            "v",
            None,
            aws_sdk_dynamodb::types::ProjectionType::KeysOnly,
        ))
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
        assert_eq!(
            index_state(&db, target).await,
            *want,
            "the index of {target}"
        );
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
    moat.dynamodb_at(
        std::time::Duration::from_secs(offset),
        operation,
        &body.to_string(),
    )
}

fn shifted(dir: &std::path::Path, days: u64) -> Moat {
    Moat::must_start_shifted(dir, &format!("+{days}d"))
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

async fn backup_arn(db: &Client, table: &str, name: &str) -> String {
    db.create_backup()
        .table_name(table)
        .backup_name(name)
        .send()
        .await
        .unwrap()
        .backup_details()
        .unwrap()
        .backup_arn()
        .to_owned()
}

async fn group_count(db: &Client, table: &str, group: &str) -> usize {
    db.query()
        .table_name(table)
        .index_name("by-group")
        .key_condition_expression("g = :g")
        .expression_attribute_values(":g", s(group))
        .send()
        .await
        .unwrap()
        .count() as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_backups_store_only_changes_restore_completely_and_survive_rotation() {
    let dir = TempDir::new("backups-incr");
    let mut moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    db.create_table()
        .table_name("catalog")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("g", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .global_secondary_indexes(sdk::global_index(
            "by-group",
            "g",
            None,
            aws_sdk_dynamodb::types::ProjectionType::All,
        ))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let padding = "x".repeat(200);
    for i in 0..640 {
        db.put_item()
            .table_name("catalog")
            .item("pk", s(&format!("item{i:04}")))
            .item("g", s(&format!("grp{}", i % 4)))
            .item("v", s(&format!("v{i}-{padding}")))
            .send()
            .await
            .unwrap();
    }
    let objects = dir.path().join("objects");
    let first = backup_arn(&db, "catalog", "first").await;
    let full_size = bytes_under(&objects);

    // One item changes: the second backup adds about one chunk.
    db.put_item()
        .table_name("catalog")
        .item("pk", s("item0006"))
        .item("g", s("grp3"))
        .item("v", s("changed"))
        .send()
        .await
        .unwrap();
    let second = backup_arn(&db, "catalog", "second").await;
    let added = bytes_under(&objects) - full_size;
    assert!(
        added * 6 < full_size,
        "the second backup stored {added} bytes, the first {full_size}"
    );
    // Both describe the whole table.
    for arn in [&first, &second] {
        let described = db.describe_backup().backup_arn(arn).send().await.unwrap();
        let details = described.backup_description().unwrap();
        assert_eq!(
            details.source_table_details().unwrap().item_count(),
            Some(640)
        );
    }
    let current = all_items(&db, "catalog").await;

    // The first backup goes; the second, which shares most of its chunks,
    // still restores completely, its index rebuilt.
    db.delete_backup().backup_arn(&first).send().await.unwrap();
    db.restore_table_from_backup()
        .target_table_name("catalog-restored")
        .backup_arn(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(all_items(&db, "catalog-restored").await, current);
    assert_eq!(group_count(&db, "catalog-restored", "grp3").await, 161);
    assert_eq!(group_count(&db, "catalog-restored", "grp2").await, 159);
    drop(db);

    // A new master key: the backup's key is re-wrapped with the rest.
    assert!(moat.must_stop());
    let new_key = dir.path().join("new-master.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["rotate-master-key", "--data-dir"])
        .arg(dir.path())
        .arg("--new-master-key-file")
        .arg(&new_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moat = Moat::must_start_with(
        dir.path(),
        &["--master-key-file", new_key.to_str().unwrap()],
        &[],
    );
    let db = client(&moat, "us-east-1");
    db.restore_table_from_backup()
        .target_table_name("after-rotation")
        .backup_arn(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(all_items(&db, "after-rotation").await, current);

    // The last backup of the set goes: so do its chunks and its key.
    db.delete_backup().backup_arn(&second).send().await.unwrap();
    let left: Vec<_> = files_under(&objects.join("dynamodb/backups"));
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_incremental_copy_converges_in_another_region() {
    let dir = TempDir::new("backup-plan");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("moat.toml"),
        r#"
[[backup_plans]]
name = "orders-copy"
region = "us-east-1"
table = "orders"
every_secs = 1
retain = 2
copy_to_region = "eu-west-1"
copy_to_table = "orders-replica"
"#,
    )
    .unwrap();
    let moat = Moat::must_start(dir.path());
    let db = client(&moat, "us-east-1");
    let eu = client(&moat, "eu-west-1");
    db.create_table()
        .table_name("orders")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    for i in 0..150 {
        db.put_item()
            .table_name("orders")
            .item("pk", s(&format!("o{i:03}")))
            .item("v", s(&format!("first{i}")))
            .send()
            .await
            .unwrap();
    }
    let converged = |expected: Vec<String>| {
        let eu = eu.clone();
        async move {
            for _ in 0..60 {
                if eu
                    .describe_table()
                    .table_name("orders-replica")
                    .send()
                    .await
                    .is_ok()
                    && all_items(&eu, "orders-replica").await == expected
                {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            false
        }
    };
    let source = all_items(&db, "orders").await;
    assert!(converged(source).await, "the copy never caught up");

    // Changes, deletions and new items reach the copy too.
    for i in 0..10 {
        db.put_item()
            .table_name("orders")
            .item("pk", s(&format!("o{i:03}")))
            .item("v", s("second"))
            .send()
            .await
            .unwrap();
        db.delete_item()
            .table_name("orders")
            .key("pk", s(&format!("o{:03}", 100 + i)))
            .send()
            .await
            .unwrap();
        db.put_item()
            .table_name("orders")
            .item("pk", s(&format!("new{i}")))
            .item("v", s("third"))
            .send()
            .await
            .unwrap();
    }
    let source = all_items(&db, "orders").await;
    assert_eq!(source.len(), 150);
    assert!(converged(source.clone()).await, "the copy never caught up");
    assert!(eu
        .describe_table()
        .table_name("orders-replica")
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .table_arn()
        .unwrap()
        .starts_with("arn:aws:dynamodb:eu-west-1:"));

    // The runs are listed as AWS_BACKUP backups, the plan's retention kept.
    let runs = db
        .list_backups()
        .table_name("orders")
        .backup_type(aws_sdk_dynamodb::types::BackupTypeFilter::AwsBackup)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = runs
        .backup_summaries()
        .iter()
        .map(|b| b.backup_name().unwrap())
        .collect();
    assert!(
        (1..=2).contains(&names.len()) && names.iter().all(|n| n.starts_with("orders-copy-")),
        "{names:?}"
    );
    let user = db.list_backups().table_name("orders").send().await.unwrap();
    assert!(user.backup_summaries().is_empty());
    // The newest run restores to the table as it is now.
    let newest = runs
        .backup_summaries()
        .last()
        .unwrap()
        .backup_arn()
        .unwrap();
    db.restore_table_from_backup()
        .target_table_name("from-plan")
        .backup_arn(newest)
        .send()
        .await
        .unwrap();
    assert_eq!(all_items(&db, "from-plan").await, source);
}
