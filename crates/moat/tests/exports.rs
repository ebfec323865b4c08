//! DynamoDB exports to and imports from the object store: a full export
//! round-trips every type through ImportTable, an incremental export holds
//! exactly the changes of its period, CSV imports type the key attributes,
//! and nothing is written to the store in plaintext.

mod common;

use std::collections::HashMap;

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::primitives::{Blob, DateTime};
use aws_sdk_dynamodb::types::{
    AttributeValue as AV, BillingMode, CsvOptions, ExportType, ExportViewType, ImportStatus,
    IncrementalExportSpecification, InputCompressionType, InputFormat, InputFormatOptions, KeyType,
    PointInTimeRecoverySpecification, S3BucketSource, ScalarAttributeType, TableCreationParameters,
};
use aws_sdk_dynamodb::Client;
use common::{files_under, Moat, TempDir};
use serde_json::Value;

#[path = "common/sdk.rs"]
mod sdk;
use sdk::{code, def, ks};

fn client(moat: &Moat) -> Client {
    sdk::dynamodb_client(moat, sdk::root(moat))
}

fn creation(name: &str) -> TableCreationParameters {
    TableCreationParameters::builder()
        .table_name(name)
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("sk", ScalarAttributeType::N))
        .key_schema(ks("pk", KeyType::Hash))
        .key_schema(ks("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .build()
        .unwrap()
}

/// An item with every attribute type, nested ones included.
fn every_type(i: usize) -> HashMap<String, AV> {
    HashMap::from([
        ("pk".to_owned(), AV::S(format!("EXPMARKER-{}", i % 3))),
        ("sk".to_owned(), AV::N(format!("{i}.25"))),
        ("s".to_owned(), AV::S("ünïcødé \"quoted\"\nline".to_owned())),
        (
            "n".to_owned(),
            AV::N("-12345678901234567890.0000000001".to_owned()),
        ),
        (
            "b".to_owned(),
            AV::B(Blob::new(vec![0u8, 1, 2, 255, i as u8])),
        ),
        ("t".to_owned(), AV::Bool(i % 2 == 0)),
        ("z".to_owned(), AV::Null(true)),
        ("ss".to_owned(), AV::Ss(vec!["a".into(), format!("b{i}")])),
        ("ns".to_owned(), AV::Ns(vec!["1".into(), "2.5".into()])),
        (
            "bs".to_owned(),
            AV::Bs(vec![Blob::new(b"x".to_vec()), Blob::new(b"y".to_vec())]),
        ),
        (
            "l".to_owned(),
            AV::L(vec![
                AV::S("in list".into()),
                AV::N("7".into()),
                AV::Null(true),
            ]),
        ),
        (
            "m".to_owned(),
            AV::M(HashMap::from([
                (
                    "deep".to_owned(),
                    AV::M(HashMap::from([("x".to_owned(), AV::Bool(true))])),
                ),
                ("empty".to_owned(), AV::L(vec![])),
            ])),
        ),
    ])
}

async fn scan_all(db: &Client, table: &str) -> Vec<HashMap<String, AV>> {
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
        out.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    out.sort_by_key(|i| format!("{:?}{:?}", i["pk"], i["sk"]));
    out
}

/// `moat read-object`: an object's plaintext, as a user reads an export.
fn read_object(moat: &Moat, key: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["read-object", "--data-dir"])
        .arg(&moat.data_dir)
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The export once it is over: an export starts `IN_PROGRESS` and a thread
/// of Moat's finishes it, as in DynamoDB.
async fn finished_export(db: &Client, arn: &str) -> aws_sdk_dynamodb::types::ExportDescription {
    for _ in 0..600 {
        let described = db.describe_export().export_arn(arn).send().await.unwrap();
        let export = described.export_description().unwrap().clone();
        if export.export_status().map(|s| s.as_str()) != Some("IN_PROGRESS") {
            return export;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the export {arn} did not finish in 30 s");
}

/// Point-in-time recovery on, which exports need.
async fn enable_pitr(db: &Client, table: &str) {
    db.update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn now() -> DateTime {
    DateTime::from(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_round_trip_through_imports() {
    let dir = TempDir::new("exports");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let p = creation("source");
    db.create_table()
        .table_name("source")
        .set_attribute_definitions(Some(p.attribute_definitions().to_vec()))
        .set_key_schema(Some(p.key_schema().to_vec()))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let table_arn = db
        .describe_table()
        .table_name("source")
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .table_arn()
        .unwrap()
        .to_owned();
    // Exports need point-in-time recovery, as in DynamoDB.
    assert_eq!(
        code(
            db.export_table_to_point_in_time()
                .table_arn(&table_arn)
                .s3_bucket("exports")
                .send()
                .await
        ),
        "PointInTimeRecoveryUnavailableException"
    );
    enable_pitr(&db, "source").await;
    for i in 0..30 {
        db.put_item()
            .table_name("source")
            .set_item(Some(every_type(i)))
            .send()
            .await
            .unwrap();
    }
    let source = scan_all(&db, "source").await;
    assert_eq!(source.len(), 30);

    // Bad requests change nothing.
    assert_eq!(
        code(
            db.export_table_to_point_in_time()
                .table_arn(&table_arn)
                .s3_bucket("Not_A_Bucket")
                .send()
                .await
        ),
        "ValidationException"
    );
    assert_eq!(
        code(
            db.describe_export()
                .export_arn(format!("{table_arn}/export/01234567890123-deadbeef"))
                .send()
                .await
        ),
        "ExportNotFoundException"
    );

    let export = db
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket("exports")
        .s3_prefix("ddb")
        .send()
        .await
        .unwrap();
    let export = export.export_description().unwrap();
    assert_eq!(export.export_status().unwrap().as_str(), "IN_PROGRESS");
    assert_eq!(export.item_count(), None, "counted once it is over");
    let export_arn = export.export_arn().unwrap().to_owned();
    let described = finished_export(&db, &export_arn).await;
    let described = &described;
    assert_eq!(described.export_status().unwrap().as_str(), "COMPLETED");
    assert!(described.end_time().is_some());
    assert_eq!(described.item_count(), Some(30));
    let listed = db
        .list_exports()
        .table_arn(&table_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.export_summaries().len(), 1);
    let export_id = export_arn.rsplit('/').next().unwrap().to_owned();

    // The objects are sealed; `moat read-object` reads them.
    let objects = dir.path().join("objects");
    let files = files_under(&objects);
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == b"EXPMARKER"),
            "{} holds a marker",
            f.display()
        );
    }
    let summary: Value = serde_json::from_str(&read_object(
        &moat,
        &format!("s3/exports/{}", described.export_manifest().unwrap()),
    ))
    .unwrap();
    assert_eq!(summary["itemCount"], 30);
    assert_eq!(summary["exportArn"], export_arn.as_str());
    let data = read_object(
        &moat,
        &format!("s3/exports/ddb/AWSDynamoDB/{export_id}/data/00000.json.gz"),
    );
    assert_eq!(data.lines().count(), 30);
    assert!(data.lines().all(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["Item"]["pk"]["S"]
            .as_str()
            .unwrap()
            .starts_with("EXPMARKER-")
    }));

    // Import the export's data into a new table: every value comes back exactly.
    let import = db
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("exports")
                .s3_key_prefix(format!("ddb/AWSDynamoDB/{export_id}/data/"))
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .input_compression_type(InputCompressionType::Gzip)
        .table_creation_parameters(creation("imported"))
        .send()
        .await
        .unwrap();
    let import_arn = import
        .import_table_description()
        .unwrap()
        .import_arn()
        .unwrap()
        .to_owned();
    // The same request again, with its ClientToken: the same import.
    let again = db
        .import_table()
        .client_token("import-once")
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("exports")
                .s3_key_prefix(format!("ddb/AWSDynamoDB/{export_id}/data/"))
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .input_compression_type(InputCompressionType::Gzip)
        .table_creation_parameters(creation("imported-once"))
        .send()
        .await
        .unwrap();
    let retried = db
        .import_table()
        .client_token("import-once")
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("exports")
                .s3_key_prefix(format!("ddb/AWSDynamoDB/{export_id}/data/"))
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .input_compression_type(InputCompressionType::Gzip)
        .table_creation_parameters(creation("imported-once"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.import_table_description().unwrap().import_arn(),
        retried.import_table_description().unwrap().import_arn()
    );
    let described = db
        .describe_import()
        .import_arn(&import_arn)
        .send()
        .await
        .unwrap();
    let described = described.import_table_description().unwrap();
    assert_eq!(described.import_status(), Some(&ImportStatus::Completed));
    assert_eq!(described.imported_item_count(), 30);
    assert_eq!(described.error_count(), 0);
    assert_eq!(scan_all(&db, "imported").await, source);
    assert_eq!(
        db.list_imports()
            .send()
            .await
            .unwrap()
            .import_summary_list()
            .len(),
        2,
        "the import, and the one retried with its ClientToken"
    );

    // An incremental export holds the period's changes: the last state of
    // each changed item, with its image before the period.
    let from = now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    db.put_item()
        .table_name("source")
        .item("pk", AV::S("EXPMARKER-0".into()))
        .item("sk", AV::N("0.25".into()))
        .item("s", AV::S("updated".into()))
        .send()
        .await
        .unwrap();
    db.delete_item()
        .table_name("source")
        .key("pk", AV::S("EXPMARKER-1".into()))
        .key("sk", AV::N("1.25".into()))
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name("source")
        .item("pk", AV::S("fresh".into()))
        .item("sk", AV::N("99".into()))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let to = now();
    let incremental = db
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket("exports")
        .s3_prefix("incr")
        .export_type(ExportType::IncrementalExport)
        .incremental_export_specification(
            IncrementalExportSpecification::builder()
                .export_from_time(from)
                .export_to_time(to)
                .export_view_type(ExportViewType::NewAndOldImages)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let incremental = finished_export(
        &db,
        incremental
            .export_description()
            .unwrap()
            .export_arn()
            .unwrap(),
    )
    .await;
    assert_eq!(incremental.item_count(), Some(3));
    let id = incremental
        .export_arn()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let lines: Vec<Value> = read_object(
        &moat,
        &format!("s3/exports/incr/AWSDynamoDB/{id}/data/00000.json.gz"),
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(lines.len(), 3);
    let by_pk = |pk: &str| {
        lines
            .iter()
            .find(|l| l["Keys"]["pk"]["S"] == pk)
            .unwrap_or_else(|| panic!("no line for {pk}: {lines:?}"))
    };
    let updated = by_pk("EXPMARKER-0");
    assert_eq!(updated["NewImage"]["s"]["S"], "updated");
    assert!(updated["NewImage"].get("m").is_none());
    assert_eq!(
        updated["OldImage"]["m"]["M"]["deep"]["M"]["x"]["BOOL"],
        true
    );
    let deleted = by_pk("EXPMARKER-1");
    assert!(deleted.get("NewImage").is_none());
    assert_eq!(deleted["Keys"]["sk"]["N"], "1.25");
    assert!(deleted["OldImage"].is_object());
    let fresh = by_pk("fresh");
    assert!(fresh.get("OldImage").is_none());
    assert!(fresh["Metadata"]["WriteTimestampMicros"]["N"].is_string());

    // Authorised with DynamoDB's actions, and audited: a user allowed to
    // export this table may not import, nor export another.
    let iam = sdk::iam_client(&moat, sdk::root(&moat));
    iam.create_user()
        .user_name("exporter")
        .send()
        .await
        .unwrap();
    iam.put_user_policy()
        .user_name("exporter")
        .policy_name("export-only")
        .policy_document(
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["dynamodb:ExportTableToPointInTime", "dynamodb:DescribeExport"],
                    "Resource": [table_arn.clone(), format!("{table_arn}/export/*")]
                }, {
                    "Effect": "Allow",
                    "Action": "s3:PutObject",
                    "Resource": "arn:aws:s3:::exports/mine/*"
                }]
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("exporter")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let exporter = sdk::dynamodb_client(
        &moat,
        Credentials::new(
            key.access_key_id(),
            key.secret_access_key(),
            None,
            None,
            "exporter",
        ),
    );
    let mine = exporter
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket("exports")
        .s3_prefix("mine/")
        .send()
        .await
        .unwrap();
    // The objects need S3's permission, as in AWS: not elsewhere.
    assert_eq!(
        code(
            exporter
                .export_table_to_point_in_time()
                .table_arn(&table_arn)
                .s3_bucket("exports")
                .s3_prefix("theirs/")
                .send()
                .await
        ),
        "AccessDeniedException"
    );
    let mine = finished_export(
        &exporter,
        mine.export_description().unwrap().export_arn().unwrap(),
    )
    .await;
    assert_eq!(mine.export_status().unwrap().as_str(), "COMPLETED");
    let denied = exporter
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("exports")
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .table_creation_parameters(creation("not-allowed"))
        .send()
        .await;
    let request_id = match &denied {
        Err(aws_sdk_dynamodb::error::SdkError::ServiceError(e)) => e
            .raw()
            .headers()
            .get("x-amzn-requestid")
            .unwrap()
            .to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(denied), "AccessDeniedException");
    let line = moat.must_find_audit(&request_id);
    assert_eq!(line["operation"], "ImportTable");
    assert_eq!(line["outcome"], "denied");
    assert_eq!(
        code(db.describe_table().table_name("not-allowed").send().await),
        "ResourceNotFoundException"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_imports_type_the_key_attributes() {
    let dir = TempDir::new("imports-csv");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let csv_dir = dir.path().join("objects/s3/uploads/people");
    std::fs::create_dir_all(&csv_dir).unwrap();
    std::fs::write(
        csv_dir.join("part1.csv"),
        "id;name;note\n1;Ann;\"likes ; and \"\"quotes\"\"\"\n2;Bob;\nnot-a-number;Eve;x\n",
    )
    .unwrap();
    std::fs::write(
        csv_dir.join("part2.csv"),
        "id;name;note\n3;Cy;multi\nline\n",
    )
    .unwrap();
    let import = db
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("uploads")
                .s3_key_prefix("people/")
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::Csv)
        .input_format_options(
            InputFormatOptions::builder()
                .csv(CsvOptions::builder().delimiter(";").build())
                .build(),
        )
        .table_creation_parameters(
            TableCreationParameters::builder()
                .table_name("people")
                .attribute_definitions(def("id", ScalarAttributeType::N))
                .key_schema(ks("id", KeyType::Hash))
                .billing_mode(BillingMode::PayPerRequest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let import = import.import_table_description().unwrap();
    assert_eq!(import.import_status(), Some(&ImportStatus::Completed));
    // "not-a-number" is not an N key; "line" has too few columns.
    assert_eq!(import.imported_item_count(), 3);
    assert_eq!(import.error_count(), 2);
    let ann = db
        .get_item()
        .table_name("people")
        .key("id", AV::N("1".into()))
        .send()
        .await
        .unwrap();
    let ann = ann.item().unwrap();
    assert_eq!(ann["name"], AV::S("Ann".into()));
    assert_eq!(ann["note"], AV::S("likes ; and \"quotes\"".into()));
    let bob = db
        .get_item()
        .table_name("people")
        .key("id", AV::N("2".into()))
        .send()
        .await
        .unwrap();
    assert!(
        !bob.item().unwrap().contains_key("note"),
        "empty cells are left out"
    );

    // An import into a table that exists fails and changes nothing.
    let again = db
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("uploads")
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::Csv)
        .table_creation_parameters(
            TableCreationParameters::builder()
                .table_name("people")
                .attribute_definitions(def("id", ScalarAttributeType::N))
                .key_schema(ks("id", KeyType::Hash))
                .billing_mode(BillingMode::PayPerRequest)
                .build()
                .unwrap(),
        )
        .send()
        .await;
    assert_eq!(code(again), "ResourceInUseException");
    assert_eq!(
        db.scan().table_name("people").send().await.unwrap().count(),
        3
    );
}

#[path = "../../objects/tests/support/moto.rs"]
mod moto;

#[tokio::test(flavor = "multi_thread")]
async fn backups_and_exports_live_on_an_s3_endpoint() {
    use moat_objects::ObjectStore;
    let (_server, port) = moto::start_moto();
    let (key_id, secret) = moto::moto_user(port);
    let dir = TempDir::new("objects-s3");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("moat.toml"),
        format!(
            "[object_store_s3]\nendpoint = \"http://127.0.0.1:{port}\"\nbucket = \"moat-backups\"\nprefix = \"site-a/\"\n"
        ),
    )
    .unwrap();
    let moat = Moat::must_start_with(
        dir.path(),
        &[],
        &[
            ("MOAT_S3_ACCESS_KEY_ID", key_id.as_str()),
            ("MOAT_S3_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let db = client(&moat);
    let p = creation("remote");
    db.create_table()
        .table_name("remote")
        .set_attribute_definitions(Some(p.attribute_definitions().to_vec()))
        .set_key_schema(Some(p.key_schema().to_vec()))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    enable_pitr(&db, "remote").await;
    for i in 0..20 {
        db.put_item()
            .table_name("remote")
            .set_item(Some(every_type(i)))
            .send()
            .await
            .unwrap();
    }
    let source = scan_all(&db, "remote").await;
    let backup = db
        .create_backup()
        .table_name("remote")
        .backup_name("to-s3")
        .send()
        .await
        .unwrap();
    db.restore_table_from_backup()
        .target_table_name("remote-restored")
        .backup_arn(backup.backup_details().unwrap().backup_arn())
        .send()
        .await
        .unwrap();
    assert_eq!(scan_all(&db, "remote-restored").await, source);
    let export = db
        .export_table_to_point_in_time()
        .table_arn(format!(
            "arn:aws:dynamodb:us-east-1:{}:table/remote",
            moat.account
        ))
        .s3_bucket("exports")
        .send()
        .await
        .unwrap();
    let export = export
        .export_description()
        .unwrap()
        .export_arn()
        .unwrap()
        .to_owned();
    let finished = finished_export(&db, &export).await;
    assert_eq!(finished.export_status().unwrap().as_str(), "COMPLETED");
    let id = export.rsplit('/').next().unwrap();
    db.import_table()
        .s3_bucket_source(
            S3BucketSource::builder()
                .s3_bucket("exports")
                .s3_key_prefix(format!("AWSDynamoDB/{id}/data/"))
                .build()
                .unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .input_compression_type(InputCompressionType::Gzip)
        .table_creation_parameters(creation("remote-imported"))
        .send()
        .await
        .unwrap();
    assert_eq!(scan_all(&db, "remote-imported").await, source);

    // Everything went to the bucket, sealed; nothing to the local directory.
    assert!(!dir.path().join("objects").exists());
    let bucket = moat_objects::S3Store::new(moat_objects::S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "moat-backups".into(),
        region: "us-east-1".into(),
        prefix: "site-a/".into(),
        access_key_id: key_id.clone(),
        secret_access_key: secret.clone(),
        ca_pem: None,
    })
    .unwrap();
    let keys = tokio::task::spawn_blocking(move || {
        let keys = bucket.list("").unwrap();
        let bodies: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| bucket.get(k).unwrap().unwrap())
            .collect();
        (keys, bodies)
    })
    .await
    .unwrap();
    assert!(
        keys.0.iter().any(|k| k.contains("/chunks/")),
        "{:?}",
        keys.0
    );
    assert!(keys
        .0
        .iter()
        .any(|k| k.starts_with("s3/exports/AWSDynamoDB/")));
    for (key, body) in keys.0.iter().zip(&keys.1) {
        assert!(
            !body.windows(9).any(|w| w == b"EXPMARKER"),
            "{key} holds a marker"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_a_stop_cuts_short_reads_as_failed() {
    let dir = TempDir::new("export-cut");
    // The export waits 30 s before writing anything.
    let mut moat = Moat::must_start_with(dir.path(), &[], &[("MOAT_FAIL_POINT", "export-hold")]);
    let db = client(&moat);
    db.create_table()
        .table_name("cut")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    enable_pitr(&db, "cut").await;
    db.put_item()
        .table_name("cut")
        .item("pk", AV::S("a".into()))
        .send()
        .await
        .unwrap();
    let table_arn = format!("arn:aws:dynamodb:us-east-1:{}:table/cut", moat.account);
    // Four requests with one token at once start one export.
    let start = || {
        db.export_table_to_point_in_time()
            .table_arn(&table_arn)
            .s3_bucket("exports")
            .client_token("once")
            .send()
    };
    let (a, b, c, d) = tokio::join!(start(), start(), start(), start());
    let arns: Vec<String> = [a, b, c, d]
        .into_iter()
        .map(|r| {
            r.unwrap()
                .export_description()
                .unwrap()
                .export_arn()
                .unwrap()
                .to_owned()
        })
        .collect();
    let arn = arns[0].clone();
    assert!(arns.iter().all(|a| *a == arn), "{arns:?}");
    let listed = db.list_exports().send().await.unwrap();
    assert_eq!(listed.export_summaries().len(), 1);
    assert_eq!(
        listed.export_summaries()[0]
            .export_status()
            .unwrap()
            .as_str(),
        "IN_PROGRESS"
    );
    let running = db.describe_export().export_arn(&arn).send().await.unwrap();
    let running = running.export_description().unwrap();
    assert_eq!(running.export_status().unwrap().as_str(), "IN_PROGRESS");
    assert!(running.end_time().is_none());

    assert!(moat.must_stop());
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let cut = finished_export(&db, &arn).await;
    assert_eq!(cut.export_status().unwrap().as_str(), "FAILED");
    assert_eq!(cut.failure_code(), Some("ExportFailed"));
    assert!(cut.failure_message().unwrap().contains("stopped"));
    assert!(cut.item_count().is_none());
    // The same token names the same export for 8 hours, whatever became of
    // it; other parameters under it are a conflict.
    let retried = db
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket("exports")
        .client_token("once")
        .send()
        .await
        .unwrap();
    assert_eq!(
        retried.export_description().unwrap().export_arn(),
        Some(arn.as_str())
    );
    assert_eq!(
        code(
            db.export_table_to_point_in_time()
                .table_arn(&table_arn)
                .s3_bucket("exports")
                .s3_prefix("elsewhere")
                .client_token("once")
                .send()
                .await
        ),
        "ExportConflictException"
    );
    // Exports go on working after it.
    let again = db
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket("exports")
        .send()
        .await
        .unwrap();
    let again = finished_export(
        &db,
        again.export_description().unwrap().export_arn().unwrap(),
    )
    .await;
    assert_eq!(again.export_status().unwrap().as_str(), "COMPLETED");
    assert_eq!(again.item_count(), Some(1));

    // Nine hours later the token is free again: a new export.
    let mut moat = moat;
    assert!(moat.must_stop());
    let moat = Moat::must_start_shifted(dir.path(), "+9h");
    let later = |operation: &str, body: Value| {
        let nine_hours = std::time::Duration::from_secs(9 * 3600);
        let response = moat.dynamodb_at(nine_hours, operation, &body.to_string());
        assert_eq!(response.status, 200, "{operation}: {}", response.body);
        serde_json::from_str::<Value>(&response.body).unwrap()
    };
    let fresh = later(
        "ExportTableToPointInTime",
        serde_json::json!({"TableArn": table_arn, "S3Bucket": "exports", "ClientToken": "once"}),
    );
    let fresh_arn = fresh["ExportDescription"]["ExportArn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh_arn, arn);
    for _ in 0..600 {
        let described = later(
            "DescribeExport",
            serde_json::json!({"ExportArn": fresh_arn}),
        );
        match described["ExportDescription"]["ExportStatus"].as_str() {
            Some("IN_PROGRESS") => std::thread::sleep(std::time::Duration::from_millis(50)),
            status => {
                assert_eq!(status, Some("COMPLETED"), "{described}");
                return;
            }
        }
    }
    panic!("the export nine hours later did not finish");
}
