//! DynamoDB through `aws-sdk-dynamodb`: tables, items, expressions, reads of
//! many items with paging, batches, conditional writes under concurrency,
//! and the encrypted store underneath (no plaintext, per-table corruption).

mod common;

use std::collections::HashMap;

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as AV, BillingMode, KeySchemaElement, KeyType,
    ProvisionedThroughput, ReturnValue, ScalarAttributeType, Select,
};
use aws_sdk_dynamodb::Client;
use common::{Moat, TempDir};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::dynamodb_client;
use sdk::{code, def, ks};

fn message<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.message().unwrap_or("").to_owned(),
    }
}

/// The `CancellationReasons` codes of a cancelled `TransactWriteItems`.
fn cancellation_codes<R: std::fmt::Debug>(
    err: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> Vec<String> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("").to_owned())
            .collect(),
        other => panic!("not a cancellation: {other:?}"),
    }
}

fn client(moat: &Moat) -> Client {
    let (id, secret) = moat.root_credentials();
    dynamodb_client(moat, Credentials::new(id, secret, None, None, "root"))
}

async fn must_create(db: &Client, name: &str, range: bool) {
    let mut req = db
        .create_table()
        .table_name(name)
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest);
    if range {
        req = req
            .attribute_definitions(def("sk", ScalarAttributeType::N))
            .key_schema(ks("sk", KeyType::Range));
    }
    req.send().await.unwrap();
}

fn s(v: &str) -> AV {
    AV::S(v.to_owned())
}

fn n(v: impl ToString) -> AV {
    AV::N(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_items_and_errors() {
    let dir = TempDir::new("ddb");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let account = moat.account.clone();

    // Tables.
    let created = db
        .create_table()
        .table_name("orders")
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::N)
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
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let desc = created.table_description().unwrap();
    assert_eq!(
        desc.table_arn(),
        Some(format!("arn:aws:dynamodb:us-east-1:{account}:table/orders").as_str())
    );
    assert_eq!(
        code(
            db.create_table()
                .table_name("orders")
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("pk")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap()
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("pk")
                        .key_type(KeyType::Hash)
                        .build()
                        .unwrap()
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
        ),
        "ResourceInUseException"
    );
    let active = db
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(
        active.table().unwrap().table_status().unwrap().as_str(),
        "ACTIVE"
    );
    assert_eq!(
        code(db.describe_table().table_name("nope").send().await),
        "ResourceNotFoundException"
    );
    for t in ["tab1", "tab2", "tab3"] {
        must_create(&db, t, false).await;
    }
    let page = db.list_tables().limit(2).send().await.unwrap();
    assert_eq!(page.table_names().len(), 2);
    let rest = db
        .list_tables()
        .exclusive_start_table_name(page.last_evaluated_table_name().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.table_names().len() + rest.table_names().len(), 4);
    db.update_table()
        .table_name("tab1")
        .deletion_protection_enabled(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(db.delete_table().table_name("tab1").send().await),
        "ValidationException"
    );
    db.update_table()
        .table_name("tab1")
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
    db.delete_table().table_name("tab1").send().await.unwrap();
    assert_eq!(
        code(db.describe_table().table_name("tab1").send().await),
        "ResourceNotFoundException"
    );
    let arn = format!("arn:aws:dynamodb:us-east-1:{account}:table/orders");
    db.tag_resource()
        .resource_arn(&arn)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("team")
                .value("a")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        db.list_tags_of_resource()
            .resource_arn(&arn)
            .send()
            .await
            .unwrap()
            .tags()
            .len(),
        1
    );
    db.update_time_to_live()
        .table_name("orders")
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ttl = db
        .describe_time_to_live()
        .table_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some("expires")
    );
    assert!(db.describe_limits().send().await.is_ok());
    assert!(!db
        .describe_endpoints()
        .send()
        .await
        .unwrap()
        .endpoints()
        .is_empty());
    db.update_table()
        .table_name("tab2")
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(3)
                .write_capacity_units(4)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let switched = db.describe_table().table_name("tab2").send().await.unwrap();
    assert_eq!(
        switched
            .table()
            .unwrap()
            .provisioned_throughput()
            .unwrap()
            .write_capacity_units(),
        Some(4)
    );
    assert_eq!(
        switched
            .table()
            .unwrap()
            .billing_mode_summary()
            .unwrap()
            .billing_mode()
            .unwrap()
            .as_str(),
        "PROVISIONED"
    );
    db.update_table()
        .table_name("tab2")
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();

    // Items.
    db.put_item()
        .table_name("orders")
        .item("pk", s("c1"))
        .item("sk", n(1))
        .item("amount", n("10.50"))
        .item("tags", AV::Ss(vec!["a".into(), "b".into()]))
        .item(
            "doc",
            AV::M(HashMap::from([("city".to_owned(), s("Oslo"))])),
        )
        .send()
        .await
        .unwrap();
    let got = db
        .get_item()
        .table_name("orders")
        .key("pk", s("c1"))
        .key("sk", n(1))
        .consistent_read(true)
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.consumed_capacity().unwrap().capacity_units(),
        Some(1.0),
        "a strongly consistent read of less than 4 KB"
    );
    let item = got.item().unwrap();
    assert_eq!(
        item.get("amount"),
        Some(&n("10.5")),
        "numbers come back normalised"
    );
    let projected = db
        .get_item()
        .table_name("orders")
        .key("pk", s("c1"))
        .key("sk", n(1))
        .projection_expression("doc.city, #t")
        .expression_attribute_names("#t", "amount")
        .send()
        .await
        .unwrap();
    assert_eq!(projected.item().unwrap().len(), 2);
    let cond = db
        .put_item()
        .table_name("orders")
        .item("pk", s("c1"))
        .item("sk", n(1))
        .condition_expression("attribute_not_exists(pk)")
        .return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        )
        .send()
        .await;
    assert_eq!(code(cond), "ConditionalCheckFailedException");
    let updated = db
        .update_item()
        .table_name("orders")
        .key("pk", s("c1"))
        .key("sk", n(1))
        .update_expression("SET amount = amount + :d, memo = :n REMOVE doc ADD tags :t")
        .expression_attribute_values(":d", n(2))
        .expression_attribute_values(":n", s("paid"))
        .expression_attribute_values(":t", AV::Ss(vec!["c".into()]))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .unwrap();
    let attrs = updated.attributes().unwrap();
    assert_eq!(attrs.get("amount"), Some(&n("12.5")));
    assert!(!attrs.contains_key("pk"));
    assert_eq!(
        code(
            db.update_item()
                .table_name("orders")
                .key("pk", s("c1"))
                .key("sk", n(1))
                .update_expression("SET pk = :x")
                .expression_attribute_values(":x", s("y"))
                .send()
                .await
        ),
        "ValidationException"
    );
    assert!(message(
        db.get_item()
            .table_name("orders")
            .key("pk", s("c1"))
            .send()
            .await
    )
    .contains("The provided key element does not match the schema"));
    assert!(message(
        db.put_item()
            .table_name("orders")
            .item("pk", n(1))
            .item("sk", n(1))
            .send()
            .await
    )
    .contains("Type mismatch for key"));
    assert!(message(
        db.put_item()
            .table_name("orders")
            .item("pk", s("x"))
            .item("sk", n(1))
            .condition_expression("a = :unused")
            .expression_attribute_values(":unused", n(1))
            .expression_attribute_values(":extra", n(2))
            .send()
            .await
    )
    .contains("unused"));
    let big = "x".repeat(401 * 1024);
    assert_eq!(
        code(
            db.put_item()
                .table_name("orders")
                .item("pk", s("big"))
                .item("sk", n(1))
                .item("v", s(&big))
                .send()
                .await
        ),
        "ValidationException"
    );
    let deleted = db
        .delete_item()
        .table_name("orders")
        .key("pk", s("c1"))
        .key("sk", n(1))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.attributes().unwrap().get("memo"), Some(&s("paid")));
    assert!(db
        .get_item()
        .table_name("orders")
        .key("pk", s("c1"))
        .key("sk", n(1))
        .send()
        .await
        .unwrap()
        .item()
        .is_none());

    // Query: sort-key conditions, order, Limit paging, filters, COUNT.
    for i in 0..30 {
        db.put_item()
            .table_name("orders")
            .item("pk", s("q"))
            .item("sk", n(i))
            .item("even", AV::Bool(i % 2 == 0))
            .send()
            .await
            .unwrap();
    }
    db.put_item()
        .table_name("orders")
        .item("pk", s("other"))
        .item("sk", n(5))
        .send()
        .await
        .unwrap();
    let q = db
        .query()
        .table_name("orders")
        .key_condition_expression("pk = :p AND sk BETWEEN :a AND :b")
        .expression_attribute_values(":p", s("q"))
        .expression_attribute_values(":a", n(10))
        .expression_attribute_values(":b", n(19))
        .scan_index_forward(false)
        .send()
        .await
        .unwrap();
    let sks: Vec<String> = q
        .items()
        .iter()
        .map(|i| i["sk"].as_n().unwrap().clone())
        .collect();
    assert_eq!(
        sks,
        (10..20).rev().map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let mut seen = 0;
    let mut start = None;
    loop {
        let page = db
            .query()
            .table_name("orders")
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("q"))
            .limit(7)
            .set_exclusive_start_key(start.clone())
            .send()
            .await
            .unwrap();
        seen += page.items().len();
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(seen, 30);
    let filtered = db
        .query()
        .table_name("orders")
        .key_condition_expression("pk = :p")
        .filter_expression("even = :t")
        .expression_attribute_values(":p", s("q"))
        .expression_attribute_values(":t", AV::Bool(true))
        .select(Select::Count)
        .send()
        .await
        .unwrap();
    assert_eq!((filtered.count(), filtered.scanned_count()), (15, 30));
    assert!(message(
        db.query()
            .table_name("orders")
            .key_condition_expression("sk = :p")
            .expression_attribute_values(":p", n(1))
            .send()
            .await
    )
    .contains("Query condition missed key schema element"));

    // Batches.
    db.batch_write_item()
        .request_items(
            "tab2",
            (0..25)
                .map(|i| {
                    aws_sdk_dynamodb::types::WriteRequest::builder()
                        .put_request(
                            aws_sdk_dynamodb::types::PutRequest::builder()
                                .item("pk", s(&format!("b{i}")))
                                .build()
                                .unwrap(),
                        )
                        .build()
                })
                .collect(),
        )
        .send()
        .await
        .unwrap();
    let keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(
            (0..10)
                .map(|i| HashMap::from([("pk".to_owned(), s(&format!("b{i}")))]))
                .collect(),
        ))
        .build()
        .unwrap();
    let got = db
        .batch_get_item()
        .request_items("tab2", keys)
        .send()
        .await
        .unwrap();
    assert_eq!(got.responses().unwrap()["tab2"].len(), 10);
    let dup = aws_sdk_dynamodb::types::WriteRequest::builder()
        .put_request(
            aws_sdk_dynamodb::types::PutRequest::builder()
                .item("pk", s("d"))
                .build()
                .unwrap(),
        )
        .build();
    assert_eq!(
        code(
            db.batch_write_item()
                .request_items("tab2", vec![dup.clone(), dup])
                .send()
                .await
        ),
        "ValidationException"
    );
    // The count and size follow a batch's items (kept once per batch):
    // 25 items of 4 or 5 bytes; then one deleted and one grown by 3.
    let counted = |table: aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput| {
        let t = table.table().unwrap();
        (t.item_count().unwrap(), t.table_size_bytes().unwrap())
    };
    let described = db.describe_table().table_name("tab2").send().await.unwrap();
    assert_eq!(counted(described), (25, 10 * 4 + 15 * 5));
    db.batch_write_item()
        .request_items(
            "tab2",
            vec![
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .delete_request(
                        aws_sdk_dynamodb::types::DeleteRequest::builder()
                            .key("pk", s("b24"))
                            .build()
                            .unwrap(),
                    )
                    .build(),
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .item("pk", s("b3"))
                            .item("x", s("yy"))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            ],
        )
        .send()
        .await
        .unwrap();
    let described = db.describe_table().table_name("tab2").send().await.unwrap();
    assert_eq!(counted(described), (24, 10 * 4 + 15 * 5 - 5 + 3));

    // Scan: 1 MB pages, and parallel segments that cover every item exactly once.
    let blob = "z".repeat(100 * 1024);
    for i in 0..25 {
        db.put_item()
            .table_name("tab3")
            .item("pk", s(&format!("s{i}")))
            .item("v", s(&blob))
            .send()
            .await
            .unwrap();
    }
    let mut pages = 0;
    let mut total = 0;
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name("tab3")
            .set_exclusive_start_key(start.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        total += page.items().len();
        // Whole items, as stored.
        assert!(page
            .items()
            .iter()
            .all(|i| i.len() == 2 && i["v"].as_s().is_ok_and(|v| *v == blob)));
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(total, 25);
    assert!(pages >= 3, "2.5 MB come in 1 MB pages, got {pages}");
    let mut all = Vec::new();
    for segment in 0..4 {
        let mut start = None;
        loop {
            let page = db
                .scan()
                .table_name("tab3")
                .segment(segment)
                .total_segments(4)
                .projection_expression("pk")
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .unwrap();
            // The projection: the key alone.
            assert!(
                page.items().iter().all(|i| i.len() == 1),
                "{:?}",
                page.items()
            );
            all.extend(page.items().iter().map(|i| i["pk"].as_s().unwrap().clone()));
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 25);

    let stats = db.describe_table().table_name("tab3").send().await.unwrap();
    assert_eq!(stats.table().unwrap().item_count(), Some(25));

    // BatchGetItem over two tables: whole items as they were written, a
    // projection, a missing key left out.
    let keys = |names: &[&str]| {
        names
            .iter()
            .map(|k| HashMap::from([("pk".to_owned(), s(k))]))
            .collect::<Vec<_>>()
    };
    let whole = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(keys(&["b3", "b5", "b24"])))
        .build()
        .unwrap();
    let projected = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(keys(&["s1", "s2"])))
        .projection_expression("pk")
        .build()
        .unwrap();
    let got = db
        .batch_get_item()
        .request_items("tab2", whole)
        .request_items("tab3", projected)
        .send()
        .await
        .unwrap();
    let sorted = |table: &str| {
        let mut items = got.responses().unwrap()[table].clone();
        items.sort_by_key(|i| i["pk"].as_s().unwrap().clone());
        items
    };
    assert_eq!(
        sorted("tab2"),
        vec![
            HashMap::from([("pk".to_owned(), s("b3")), ("x".to_owned(), s("yy"))]),
            HashMap::from([("pk".to_owned(), s("b5"))]),
        ]
    );
    assert_eq!(
        sorted("tab3"),
        vec![
            HashMap::from([("pk".to_owned(), s("s1"))]),
            HashMap::from([("pk".to_owned(), s("s2"))]),
        ]
    );
    assert!(got.unprocessed_keys().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_serialise_and_outlive_hung_up_clients() {
    let dir = TempDir::new("ddb-conc");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "counters", false).await;
    db.put_item()
        .table_name("counters")
        .item("pk", s("c"))
        .item("v", n(0))
        .send()
        .await
        .unwrap();
    let tasks = 12;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let cur = db
                    .get_item()
                    .table_name("counters")
                    .key("pk", s("c"))
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap();
                let v: i64 = cur.item().unwrap()["v"].as_n().unwrap().parse().unwrap();
                let r = db
                    .update_item()
                    .table_name("counters")
                    .key("pk", s("c"))
                    .update_expression("SET v = :new")
                    .condition_expression("v = :old")
                    .expression_attribute_values(":new", n(v + 1))
                    .expression_attribute_values(":old", n(v))
                    .send()
                    .await;
                match r {
                    Ok(_) => return,
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => continue,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let fin = db
        .get_item()
        .table_name("counters")
        .key("pk", s("c"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(fin.item().unwrap()["v"], n(tasks));

    // Clients that hang up right after sending: a write that took effect
    // was audited, and one audited as done took effect. (A request the
    // server had not started when its connection closed may not run; one
    // it started is not dropped half-way.)
    let (key, secret) = moat.root_credentials();
    let signer = common::Signer::new(&key, &secret, "dynamodb");
    let (port, ca) = (moat.port, moat.ca_pem());
    let hang_ups = 48;
    let senders: Vec<_> = (0..hang_ups)
        .map(|i| {
            let body = format!(r#"{{"TableName":"counters","Item":{{"pk":{{"S":"gone{i}"}}}}}}"#);
            let request = common::RawRequest::dynamodb(port, "PutItem", &body)
                .signed(&signer)
                .to_bytes();
            let ca = ca.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut stream = common::must_connect_tls(port, &ca);
                stream.write_all(&request).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(i % 4));
                let _ = stream.sock.shutdown(std::net::Shutdown::Both);
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // Let whatever started finish.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut stored = 0;
    for i in 0..hang_ups {
        let got = db
            .get_item()
            .table_name("counters")
            .key("pk", s(&format!("gone{i}")))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        stored += usize::from(got.item().is_some());
    }
    let audited = moat
        .audit_lines()
        .iter()
        .filter(|l| l["operation"] == "PutItem" && l["status"] == 200)
        .count();
    // Less the counter's own first put.
    assert_eq!(audited - 1, stored);

    // Concurrent puts commit in groups, a refused one among them: the
    // table's count takes in each stored item once, and no refused one.
    let burst = 40;
    let puts: Vec<_> = (0..burst)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                // Every fourth puts over the counter, which exists.
                let pk = if i % 4 == 0 {
                    "c".to_owned()
                } else {
                    format!("burst{i}")
                };
                db.put_item()
                    .table_name("counters")
                    .item("pk", s(&pk))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await
                    .map_err(|e| e.code().unwrap_or_default().to_owned())
            })
        })
        .collect();
    let mut refused = 0;
    for put in puts {
        match put.await.unwrap() {
            Ok(_) => {}
            Err(code) if code == "ConditionalCheckFailedException" => refused += 1,
            Err(code) => panic!("{code}"),
        }
    }
    assert_eq!(refused, burst / 4);
    let described = db
        .describe_table()
        .table_name("counters")
        .send()
        .await
        .unwrap();
    let count = described.table().unwrap().item_count().unwrap();
    assert_eq!(count as usize, 1 + stored + (burst - refused));
}

#[tokio::test(flavor = "multi_thread")]
async fn items_are_encrypted_and_a_damaged_table_does_not_stop_the_others() {
    let dir = TempDir::new("ddb-enc");
    let mut moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "alpha", true).await;
    must_create(&db, "beta", false).await;
    for i in 0..50 {
        db.put_item()
            .table_name("alpha")
            .item("pk", s(&format!("DDBMARKERKEY{i}")))
            .item("sk", n(i))
            .item("DDBMARKERATTR", s(&format!("DDBMARKERVALUE{i}")))
            .send()
            .await
            .unwrap();
    }
    db.put_item()
        .table_name("beta")
        .item("pk", s("fine"))
        .send()
        .await
        .unwrap();
    // alpha's store is DATA_DIR/dynamodb/REGION/TABLE-ID.db.
    let alpha_id = db
        .describe_table()
        .table_name("alpha")
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .table_id()
        .unwrap()
        .to_owned();
    drop(db);
    assert!(moat.must_stop(), "a clean stop");
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == b"DDBMARKER"),
            "{} holds a marker",
            f.display()
        );
    }
    // Damage alpha's data file.
    let alpha = all
        .iter()
        .find(|p| p.ends_with(format!("dynamodb/us-east-1/{alpha_id}.db")))
        .unwrap()
        .clone();
    // One byte in every 4 KiB of the file, and of its write-ahead log if it
    // has one: whichever pages hold the items (free pages are never read),
    // they are damaged.
    for file in [
        alpha.clone(),
        std::path::PathBuf::from(format!("{}-wal", alpha.display())),
    ] {
        let Ok(mut bytes) = std::fs::read(&file) else {
            continue;
        };
        if bytes.is_empty() {
            continue;
        }
        for at in (100..bytes.len()).step_by(4096) {
            bytes[at] ^= 0x10;
        }
        std::fs::write(&file, &bytes).unwrap();
    }

    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let damaged = db.scan().table_name("alpha").send().await;
    let err = damaged.expect_err("a damaged table is an error, never wrong data");
    assert_eq!(err.code(), Some("InternalServerError"), "{err:?}");
    let beta = db
        .get_item()
        .table_name("beta")
        .key("pk", s("fine"))
        .send()
        .await
        .unwrap();
    assert!(beta.item().is_some(), "the other table keeps serving");
}

#[test]
fn the_readme_walkthrough_with_the_aws_cli() {
    let dir = TempDir::new("ddb-cli");
    let moat = Moat::must_start(dir.path());
    // Read at run time: a shared target directory may hold a binary built
    // from a checkout at another path.
    let script = format!(
        "{}/tests/cli/dynamodb-walkthrough.sh",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&moat.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_can_name_a_kms_key() {
    let dir = TempDir::new("ddb-sse");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let kms = sdk::kms_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let key = kms.create_key().send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
    kms.create_alias()
        .alias_name("alias/tables")
        .target_key_id(&key_arn)
        .send()
        .await
        .unwrap();
    let db = client(&moat);
    let sse = |id: &str| {
        aws_sdk_dynamodb::types::SseSpecification::builder()
            .enabled(true)
            .sse_type(aws_sdk_dynamodb::types::SseType::Kms)
            .kms_master_key_id(id)
            .build()
    };
    let base = |name: &str| {
        db.create_table()
            .table_name(name)
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
    };
    base("secure")
        .sse_specification(sse("alias/tables"))
        .send()
        .await
        .unwrap();
    let desc = db
        .describe_table()
        .table_name("secure")
        .send()
        .await
        .unwrap();
    let sse_desc = desc.table().unwrap().sse_description().unwrap();
    assert_eq!(sse_desc.kms_master_key_arn(), Some(key_arn.as_str()));
    assert_eq!(
        code(
            base("insecure")
                .sse_specification(sse("alias/missing"))
                .send()
                .await
        ),
        "ValidationException"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_write_load_loses_no_acknowledged_item() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = TempDir::new("ddb-crash");
    let mut acknowledged: Vec<String> = Vec::new();
    for cycle in 0..5u64 {
        let moat = Moat::must_start(dir.path());
        let db = client(&moat);
        if cycle == 0 {
            must_create(&db, "events", false).await;
        }
        for pk in &acknowledged {
            let got = db
                .get_item()
                .table_name("events")
                .key("pk", s(pk))
                .consistent_read(true)
                .send()
                .await
                .unwrap();
            assert_eq!(
                got.item().and_then(|i| i.get("v")),
                Some(&s(pk)),
                "cycle {cycle}: {pk} lost or torn"
            );
        }
        let done = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (db, done, acked) = (db.clone(), done.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let pk = format!("c{cycle}-w{w}-{i}");
                    if db
                        .put_item()
                        .table_name("events")
                        .item("pk", s(&pk))
                        .item("v", s(&pk))
                        .send()
                        .await
                        .is_ok()
                    {
                        acked.lock().unwrap().push(pk);
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300 + 150 * cycle)).await;
        common::signal(moat.pid(), "KILL");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        done.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: no write was acknowledged"
        );
        acknowledged.extend(acked);
        drop(moat);
    }
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let count = db
        .scan()
        .table_name("events")
        .select(Select::Count)
        .send()
        .await
        .unwrap()
        .count();
    assert!(
        count as usize >= acknowledged.len(),
        "{count} items for {} acknowledged writes",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_parameters_still_work() {
    use aws_sdk_dynamodb::types::{
        AttributeAction, AttributeValueUpdate, ComparisonOperator, Condition,
        ExpectedAttributeValue,
    };
    let dir = TempDir::new("ddb-legacy");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "legacy", true).await;
    db.put_item()
        .table_name("legacy")
        .item("pk", s("a"))
        .item("sk", n(1))
        .item("n", n(1))
        .send()
        .await
        .unwrap();
    let refused = db
        .put_item()
        .table_name("legacy")
        .item("pk", s("a"))
        .item("sk", n(1))
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .send()
        .await;
    assert_eq!(code(refused), "ConditionalCheckFailedException");
    db.update_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .key("sk", n(1))
        .attribute_updates(
            "n",
            AttributeValueUpdate::builder()
                .action(AttributeAction::Add)
                .value(n(41))
                .build(),
        )
        .attribute_updates(
            "label",
            AttributeValueUpdate::builder()
                .action(AttributeAction::Put)
                .value(s("x"))
                .build(),
        )
        .expected(
            "n",
            ExpectedAttributeValue::builder()
                .comparison_operator(ComparisonOperator::Eq)
                .attribute_value_list(n(1))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = db
        .get_item()
        .table_name("legacy")
        .key("pk", s("a"))
        .key("sk", n(1))
        .attributes_to_get("n")
        .send()
        .await
        .unwrap();
    assert_eq!(got.item().unwrap().get("n"), Some(&n(42)));
    assert_eq!(got.item().unwrap().len(), 1);
    for i in 2..10 {
        db.put_item()
            .table_name("legacy")
            .item("pk", s("a"))
            .item("sk", n(i))
            .item("n", n(i))
            .send()
            .await
            .unwrap();
    }
    let q = db
        .query()
        .table_name("legacy")
        .key_conditions(
            "sk",
            Condition::builder()
                .comparison_operator(ComparisonOperator::Ge)
                .attribute_value_list(n(5))
                .build()
                .unwrap(),
        )
        .key_conditions(
            "pk",
            Condition::builder()
                .comparison_operator(ComparisonOperator::Eq)
                .attribute_value_list(s("a"))
                .build()
                .unwrap(),
        )
        .query_filter(
            "n",
            Condition::builder()
                .comparison_operator(ComparisonOperator::Lt)
                .attribute_value_list(n(8))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!((q.count(), q.scanned_count()), (3, 5));
    let scanned = db
        .scan()
        .table_name("legacy")
        .scan_filter(
            "n",
            Condition::builder()
                .comparison_operator(ComparisonOperator::Between)
                .attribute_value_list(n(3))
                .attribute_value_list(n(4))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(scanned.count(), 2);
    let mixed = db
        .put_item()
        .table_name("legacy")
        .item("pk", s("b"))
        .item("sk", n(1))
        .expected(
            "pk",
            ExpectedAttributeValue::builder().exists(false).build(),
        )
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    assert!(message(mixed).contains("Can not use both expression and non-expression parameters"));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_items_are_removed_in_the_background() {
    let dir = TempDir::new("ddb-ttl");
    let mut moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "sessions", false).await;
    db.update_time_to_live()
        .table_name("sessions")
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    db.put_item()
        .table_name("sessions")
        .item("pk", s("old"))
        .item("expires", n(now - 60))
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name("sessions")
        .item("pk", s("new"))
        .item("expires", n(now + 3600))
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name("sessions")
        .item("pk", s("none"))
        .send()
        .await
        .unwrap();
    drop(db);
    assert!(moat.must_stop());
    // The sweeper runs at start, then every minute.
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let mut left = Vec::new();
    for _ in 0..50 {
        let scan = db.scan().table_name("sessions").send().await.unwrap();
        left = scan
            .items()
            .iter()
            .map(|i| i["pk"].as_s().unwrap().clone())
            .collect::<Vec<_>>();
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    left.sort();
    assert_eq!(left, ["new", "none"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_get_hands_back_what_does_not_fit_in_16_mb() {
    let dir = TempDir::new("ddb-batch");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "large", false).await;
    let blob = "y".repeat(390 * 1024);
    for i in 0..50 {
        db.put_item()
            .table_name("large")
            .item("pk", s(&format!("k{i}")))
            .item("v", s(&blob))
            .send()
            .await
            .unwrap();
    }
    let keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(
            (0..50)
                .map(|i| HashMap::from([("pk".to_owned(), s(&format!("k{i}")))]))
                .collect(),
        ))
        .build()
        .unwrap();
    let first = db
        .batch_get_item()
        .request_items("large", keys)
        .send()
        .await
        .unwrap();
    let got = first.responses().unwrap()["large"].len();
    let left = first.unprocessed_keys().unwrap()["large"].keys().len();
    assert!(got < 50 && got > 30, "about 16 MB of 390 KB items: {got}");
    assert_eq!(got + left, 50);
    let second = db
        .batch_get_item()
        .set_request_items(first.unprocessed_keys().cloned())
        .send()
        .await
        .unwrap();
    assert_eq!(second.responses().unwrap()["large"].len(), left);
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_are_all_or_nothing() {
    use aws_sdk_dynamodb::types::{
        ConditionCheck, Get, Put, TransactGetItem, TransactWriteItem, Update,
    };
    let dir = TempDir::new("ddb-txn");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "accounts", false).await;
    must_create(&db, "audit", false).await;
    db.put_item()
        .table_name("accounts")
        .item("pk", s("alice"))
        .item("balance", n(100))
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name("accounts")
        .item("pk", s("bob"))
        .item("balance", n(100))
        .send()
        .await
        .unwrap();

    let transfer = |from: &str, to: &str, amount: i64, note: &str| {
        vec![
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name("accounts")
                        .key("pk", s(from))
                        .update_expression("SET balance = balance - :a")
                        .condition_expression("balance >= :a")
                        .expression_attribute_values(":a", n(amount))
                        .return_values_on_condition_check_failure(
                            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name("accounts")
                        .key("pk", s(to))
                        .update_expression("SET balance = balance + :a")
                        .expression_attribute_values(":a", n(amount))
                        .build()
                        .unwrap(),
                )
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name("audit")
                        .item("pk", s(note))
                        .item("amount", n(amount))
                        .build()
                        .unwrap(),
                )
                .build(),
        ]
    };
    let done = db
        .transact_write_items()
        .set_transact_items(Some(transfer("alice", "bob", 30, "t1")))
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    // Every item in a transaction costs twice: two write units per KB.
    let charged: Vec<(String, f64)> = done
        .consumed_capacity()
        .iter()
        .map(|c| {
            (
                c.table_name().unwrap().to_owned(),
                c.capacity_units().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        charged,
        [("accounts".to_owned(), 4.0), ("audit".to_owned(), 2.0)]
    );
    let read = db
        .transact_get_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactGetItem::builder()
                .get(
                    aws_sdk_dynamodb::types::Get::builder()
                        .table_name("accounts")
                        .key("pk", s("alice"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    assert_eq!(read.consumed_capacity()[0].capacity_units(), Some(2.0));
    let balance = |who: &'static str| {
        let db = db.clone();
        async move {
            let r = db
                .get_item()
                .table_name("accounts")
                .key("pk", s(who))
                .consistent_read(true)
                .send()
                .await
                .unwrap();
            r.item().unwrap()["balance"]
                .as_n()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        }
    };
    assert_eq!((balance("alice").await, balance("bob").await), (70, 130));

    // A failed condition cancels everything, with reasons in action order.
    let refused = db
        .transact_write_items()
        .set_transact_items(Some(transfer("alice", "bob", 500, "t2")))
        .send()
        .await;
    let err = refused.expect_err("insufficient funds");
    assert_eq!(err.code(), Some("TransactionCanceledException"));
    let reasons = cancellation_codes(&err);
    assert_eq!(reasons, ["ConditionalCheckFailed", "None", "None"]);
    assert_eq!((balance("alice").await, balance("bob").await), (70, 130));

    // An update that cannot apply (it adds to an attribute the item lacks)
    // cancels with a
    // ValidationError reason at its place, and changes nothing.
    let mut typed = transfer("alice", "bob", 5, "t2b");
    typed[1] = TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name("accounts")
                .key("pk", s("bob"))
                .update_expression("SET balance = overdraft + :a")
                .expression_attribute_values(":a", n(5))
                .build()
                .unwrap(),
        )
        .build();
    let err = db
        .transact_write_items()
        .set_transact_items(Some(typed))
        .send()
        .await
        .expect_err("a type error");
    let reasons = cancellation_codes(&err);
    assert_eq!(reasons, ["None", "ValidationError", "None"]);
    assert_eq!((balance("alice").await, balance("bob").await), (70, 130));
    assert!(db
        .get_item()
        .table_name("audit")
        .key("pk", s("t2"))
        .send()
        .await
        .unwrap()
        .item()
        .is_none());

    // One item twice is refused; a condition check alone works across tables.
    let twice = vec![
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("audit")
                    .item("pk", s("x"))
                    .build()
                    .unwrap(),
            )
            .build(),
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("audit")
                    .item("pk", s("x"))
                    .build()
                    .unwrap(),
            )
            .build(),
    ];
    assert_eq!(
        code(
            db.transact_write_items()
                .set_transact_items(Some(twice))
                .send()
                .await
        ),
        "ValidationException"
    );
    let checked = vec![
        TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name("accounts")
                    .key("pk", s("alice"))
                    .condition_expression("balance = :b")
                    .expression_attribute_values(":b", n(70))
                    .build()
                    .unwrap(),
            )
            .build(),
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("audit")
                    .item("pk", s("checked"))
                    .build()
                    .unwrap(),
            )
            .build(),
    ];
    db.transact_write_items()
        .set_transact_items(Some(checked))
        .send()
        .await
        .unwrap();

    // Idempotency: the same token and request do it once; another request with it is refused.
    let once = || {
        vec![TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name("audit")
                    .key("pk", s("counter"))
                    .update_expression("ADD hits :one")
                    .expression_attribute_values(":one", n(1))
                    .build()
                    .unwrap(),
            )
            .build()]
    };
    for _ in 0..2 {
        db.transact_write_items()
            .set_transact_items(Some(once()))
            .client_request_token("token-1")
            .send()
            .await
            .unwrap();
    }
    let hits = db
        .get_item()
        .table_name("audit")
        .key("pk", s("counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(hits.item().unwrap()["hits"], n(1));
    assert_eq!(
        code(
            db.transact_write_items()
                .set_transact_items(Some(transfer("bob", "alice", 1, "t3")))
                .client_request_token("token-1")
                .send()
                .await
        ),
        "IdempotentParameterMismatchException"
    );

    // Concurrent transfers keep the total exact.
    let mut tasks = Vec::new();
    for t in 0..6 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let (from, to) = if (t + i) % 2 == 0 {
                    ("alice", "bob")
                } else {
                    ("bob", "alice")
                };
                let _ = db
                    .transact_write_items()
                    .set_transact_items(Some(transfer(from, to, 7, &format!("c{t}-{i}"))))
                    .send()
                    .await;
            }
        }));
    }
    // Meanwhile, TransactGetItems snapshots never see a transfer half done.
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (db, finished) = (db.clone(), finished.clone());
        tokio::spawn(async move {
            let get = |who: &str| {
                TransactGetItem::builder()
                    .get(
                        Get::builder()
                            .table_name("accounts")
                            .key("pk", s(who))
                            .build()
                            .unwrap(),
                    )
                    .build()
            };
            let mut snapshots = 0;
            while !finished.load(std::sync::atomic::Ordering::Relaxed) || snapshots == 0 {
                let got = db
                    .transact_get_items()
                    .transact_items(get("alice"))
                    .transact_items(get("bob"))
                    .send()
                    .await
                    .unwrap();
                let total: i64 = got
                    .responses()
                    .iter()
                    .map(|r| {
                        r.item().unwrap()["balance"]
                            .as_n()
                            .unwrap()
                            .parse::<i64>()
                            .unwrap()
                    })
                    .sum();
                assert_eq!(total, 200, "a snapshot saw a transfer half done");
                snapshots += 1;
            }
            snapshots
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(checker.await.unwrap() > 0);
    assert_eq!(balance("alice").await + balance("bob").await, 200);

    // TransactGetItems reads across tables at one moment.
    let got = db
        .transact_get_items()
        .transact_items(
            TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name("accounts")
                        .key("pk", s("alice"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name("audit")
                        .key("pk", s("t1"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(got.responses().len(), 2);
    assert_eq!(got.responses()[1].item().unwrap()["amount"], n(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_cut_between_commits_is_finished_at_the_next_start() {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
    let dir = TempDir::new("ddb-txn-crash");
    let mut moat = Moat::must_start(dir.path());
    let db = client(&moat);
    must_create(&db, "left", false).await;
    must_create(&db, "right", false).await;
    drop(db);
    assert!(moat.must_stop());

    // This Moat aborts right after the first of the two tables commits.
    let moat = Moat::must_start_with(
        dir.path(),
        &[],
        &[("MOAT_FAIL_POINT", "transact-after-first-commit")],
    );
    let db = client(&moat);
    let both = vec![
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("left")
                    .item("pk", s("k"))
                    .item("v", n(1))
                    .build()
                    .unwrap(),
            )
            .build(),
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("right")
                    .item("pk", s("k"))
                    .item("v", n(1))
                    .build()
                    .unwrap(),
            )
            .build(),
    ];
    assert!(
        db.transact_write_items()
            .set_transact_items(Some(both))
            .send()
            .await
            .is_err(),
        "the process died mid-way"
    );
    drop(db);
    drop(moat);

    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    for table in ["left", "right"] {
        let got = db
            .get_item()
            .table_name(table)
            .key("pk", s("k"))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.item().map(|i| i["v"].clone()),
            Some(n(1)),
            "{table} holds the decided write"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secondary_indexes_follow_every_write() {
    use aws_sdk_dynamodb::types::{
        GlobalSecondaryIndex, LocalSecondaryIndex, Projection, ProjectionType,
    };
    let dir = TempDir::new("ddb-gsi");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    db.create_table()
        .table_name("games")
        .attribute_definitions(def("UserId", ScalarAttributeType::S))
        .attribute_definitions(def("GameTitle", ScalarAttributeType::S))
        .attribute_definitions(def("TopScore", ScalarAttributeType::N))
        .attribute_definitions(def("Played", ScalarAttributeType::S))
        .key_schema(ks("UserId", KeyType::Hash))
        .key_schema(ks("GameTitle", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("ByScore")
                .key_schema(ks("GameTitle", KeyType::Hash))
                .key_schema(ks("TopScore", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("ByPlayed")
                .key_schema(ks("UserId", KeyType::Hash))
                .key_schema(ks("Played", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("Wins")
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let desc = db
        .describe_table()
        .table_name("games")
        .send()
        .await
        .unwrap();
    assert_eq!(
        desc.table().unwrap().global_secondary_indexes()[0].index_name(),
        Some("ByScore")
    );
    assert_eq!(
        desc.table().unwrap().local_secondary_indexes()[0].index_name(),
        Some("ByPlayed")
    );

    let put = |u: &str, g: &str, score: Option<i64>, played: &str| {
        let mut r = db
            .put_item()
            .table_name("games")
            .item("UserId", s(u))
            .item("GameTitle", s(g))
            .item("Played", s(played))
            .item("Wins", n(1))
            .item("Secret", s("x"));
        if let Some(sc) = score {
            r = r.item("TopScore", n(sc));
        }
        r.send()
    };
    put("u1", "chess", Some(10), "2026-01-03").await.unwrap();
    put("u2", "chess", Some(30), "2026-01-01").await.unwrap();
    put("u3", "chess", Some(20), "2026-01-02").await.unwrap();
    put("u1", "go", Some(5), "2026-01-01").await.unwrap();
    put("u4", "chess", None, "2026-01-04").await.unwrap();
    assert_eq!(
        code(
            db.put_item()
                .table_name("games")
                .item("UserId", s("u9"))
                .item("GameTitle", s("chess"))
                .item("TopScore", s("high"))
                .send()
                .await
        ),
        "ValidationException"
    );

    let by_score = |forward: bool| {
        db.query()
            .table_name("games")
            .index_name("ByScore")
            .key_condition_expression("GameTitle = :g")
            .expression_attribute_values(":g", s("chess"))
            .scan_index_forward(forward)
            .send()
    };
    let users = |items: &[HashMap<String, AV>]| {
        items
            .iter()
            .map(|i| i["UserId"].as_s().unwrap().clone())
            .collect::<Vec<_>>()
    };
    let top = by_score(false).await.unwrap();
    assert_eq!(
        users(top.items()),
        ["u2", "u3", "u1"],
        "sparse: u4 has no score"
    );
    assert!(!top.items()[0].contains_key("Secret"), "KEYS_ONLY");
    assert_eq!(
        code(
            db.query()
                .table_name("games")
                .index_name("ByScore")
                .key_condition_expression("GameTitle = :g")
                .expression_attribute_values(":g", s("chess"))
                .consistent_read(true)
                .send()
                .await
        ),
        "ValidationException"
    );
    assert_eq!(
        code(
            db.query()
                .table_name("games")
                .index_name("ByScore")
                .key_condition_expression("GameTitle = :g")
                .expression_attribute_values(":g", s("chess"))
                .projection_expression("Wins")
                .send()
                .await
        ),
        "ValidationException"
    );

    // Updates and deletes move and remove index entries in the same write.
    db.update_item()
        .table_name("games")
        .key("UserId", s("u1"))
        .key("GameTitle", s("chess"))
        .update_expression("SET TopScore = :s")
        .expression_attribute_values(":s", n(40))
        .send()
        .await
        .unwrap();
    db.delete_item()
        .table_name("games")
        .key("UserId", s("u3"))
        .key("GameTitle", s("chess"))
        .send()
        .await
        .unwrap();
    assert_eq!(users(by_score(false).await.unwrap().items()), ["u1", "u2"]);

    // Paging through an index.
    let mut seen = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .query()
            .table_name("games")
            .index_name("ByScore")
            .key_condition_expression("GameTitle = :g")
            .expression_attribute_values(":g", s("chess"))
            .limit(1)
            .set_exclusive_start_key(start.clone())
            .send()
            .await
            .unwrap();
        seen.extend(users(page.items()));
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(seen, ["u2", "u1"]);

    // The local index orders one user's items by another key and keeps what it includes.
    let mine = db
        .query()
        .table_name("games")
        .index_name("ByPlayed")
        .key_condition_expression("UserId = :u AND Played < :d")
        .expression_attribute_values(":u", s("u1"))
        .expression_attribute_values(":d", s("2026-01-02"))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.items().len(), 1);
    assert_eq!(mine.items()[0]["GameTitle"], s("go"));
    assert!(mine.items()[0].contains_key("Wins") && !mine.items()[0].contains_key("Secret"));

    // Transactions keep indexes consistent too.
    db.transact_write_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name("games")
                        .item("UserId", s("u5"))
                        .item("GameTitle", s("chess"))
                        .item("TopScore", n(99))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(users(by_score(false).await.unwrap().items())[0], "u5");
    let scanned = db
        .scan()
        .table_name("games")
        .index_name("ByScore")
        .send()
        .await
        .unwrap();
    assert_eq!(scanned.count(), 4, "every item with a score, in any game");

    // An index added to a table that holds data is filled in behind the
    // scenes (more items than one backfill chunk), then queried like any other.
    for i in 0..300 {
        put(&format!("bulk{i}"), "bulk", None, "2026-02-01")
            .await
            .unwrap();
    }
    use aws_sdk_dynamodb::types::{
        CreateGlobalSecondaryIndexAction, DeleteGlobalSecondaryIndexAction,
        GlobalSecondaryIndexUpdate, IndexStatus,
    };
    let create_by_day = || {
        db.update_table()
            .table_name("games")
            .attribute_definitions(def("Played", ScalarAttributeType::S))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder()
                    .create(
                        CreateGlobalSecondaryIndexAction::builder()
                            .index_name("ByDay")
                            .key_schema(ks("Played", KeyType::Hash))
                            .projection(
                                Projection::builder()
                                    .projection_type(ProjectionType::All)
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
    };
    create_by_day().await.unwrap();
    assert_eq!(code(create_by_day().await), "ValidationException");
    let mut status = None;
    for _ in 0..200 {
        let desc = db
            .describe_table()
            .table_name("games")
            .send()
            .await
            .unwrap();
        let index = desc
            .table()
            .unwrap()
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some("ByDay"))
            .cloned()
            .unwrap();
        if index.index_status() == Some(&IndexStatus::Active) {
            status = Some(index);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let by_day = status.expect("the new index becomes ACTIVE");
    let all = db.scan().table_name("games").send().await.unwrap();
    let dated = all
        .items()
        .iter()
        .filter(|i| i.contains_key("Played"))
        .count();
    assert_eq!(
        by_day.item_count(),
        Some(dated as i64),
        "the index holds every item with a Played date and no other"
    );
    assert!(dated > 300 && dated < all.items().len());
    let day = |d: &str| {
        db.query()
            .table_name("games")
            .index_name("ByDay")
            .key_condition_expression("Played = :d")
            .expression_attribute_values(":d", s(d))
            .send()
    };
    assert_eq!(day("2026-02-01").await.unwrap().count(), 300);
    let first = day("2026-01-01").await.unwrap();
    let mut on_first = users(first.items());
    on_first.sort();
    let mut expected: Vec<String> = all
        .items()
        .iter()
        .filter(|i| {
            i.get("Played")
                .and_then(|p| p.as_s().ok())
                .map(String::as_str)
                == Some("2026-01-01")
        })
        .map(|i| i["UserId"].as_s().unwrap().clone())
        .collect();
    expected.sort();
    assert_eq!(on_first, expected);
    assert!(
        first.items().iter().all(|i| i.contains_key("Secret")),
        "ALL projects every attribute"
    );
    put("u7", "go", None, "2026-03-03").await.unwrap();
    assert_eq!(users(day("2026-03-03").await.unwrap().items()), ["u7"]);

    db.update_table()
        .table_name("games")
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .delete(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name("ByDay")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        day("2026-03-03").await.is_err(),
        "a deleted index cannot be queried"
    );
    let desc = db
        .describe_table()
        .table_name("games")
        .send()
        .await
        .unwrap();
    let names: Vec<_> = desc
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(names, ["ByScore"]);
}

/// Every page of a `Scan`, on the table or on one of its indexes.
async fn scan_all(db: &Client, table: &str, index: Option<&str>) -> Vec<HashMap<String, AV>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name(table)
            .set_index_name(index.map(str::to_owned))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// Adds the global index `ByGroup` (key `grp`, keys only) to a table that
/// holds data; it fills in on Moat's backfill thread.
/// Writes the items with BatchWriteItem, 25 at a time; none may come back
/// unprocessed.
async fn put_all(db: &Client, table: &str, items: impl IntoIterator<Item = HashMap<String, AV>>) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let writes: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                .build()
        })
        .collect();
    for chunk in writes.chunks(25) {
        let out = db
            .batch_write_item()
            .request_items(table, chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert!(out
            .unprocessed_items()
            .unwrap_or(&HashMap::new())
            .is_empty());
    }
}

async fn add_group_index(db: &Client, table: &str) {
    use aws_sdk_dynamodb::types::{
        CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate, Projection, ProjectionType,
    };
    db.update_table()
        .table_name(table)
        .attribute_definitions(def("grp", ScalarAttributeType::S))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .create(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name("ByGroup")
                        .key_schema(ks("grp", KeyType::Hash))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_added_to_10000_items_backfills_while_writes_go_on() {
    use aws_sdk_dynamodb::types::IndexStatus;
    let dir = TempDir::new("ddb-backfill");
    // Each 256-item chunk waits 50 ms, so the writes below always meet the
    // backfill, however fast the machine.
    let moat = Moat::must_start_with(dir.path(), &[], &[("MOAT_FAIL_POINT", "backfill-slow")]);
    let db = client(&moat);
    must_create(&db, "events", false).await;
    // Every seventh item has no group, so the index is sparse.
    let item = |i: usize, group: Option<usize>| {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(&format!("e{i:05}"))),
            ("n".to_owned(), n(i)),
        ]);
        if let Some(g) = group {
            item.insert("grp".to_owned(), s(&format!("g{g:02}")));
        }
        item
    };
    put_all(
        &db,
        "events",
        (0..10_000).map(|i| item(i, (i % 7 != 0).then_some(i % 40))),
    )
    .await;

    add_group_index(&db, "events").await;

    // Writes while the index fills in: moves between groups, groups taken
    // away and given, deletions and new items.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut seen_creating = false;
            let mut i = 0usize;
            loop {
                let k = (i * 7919) % 10_000;
                // At most 400 writes (a fast DescribeTable below lets the
                // loop go round often); then it only waits for the index.
                if i >= 400 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                match if i < 400 { i % 4 } else { 4 } {
                    0 => {
                        db.put_item()
                            .table_name("events")
                            .set_item(Some(item(k, Some(99))))
                            .send()
                            .await
                            .unwrap();
                    }
                    1 => {
                        db.update_item()
                            .table_name("events")
                            .key("pk", s(&format!("e{k:05}")))
                            .update_expression("REMOVE grp")
                            .send()
                            .await
                            .unwrap();
                    }
                    2 => {
                        db.delete_item()
                            .table_name("events")
                            .key("pk", s(&format!("e{k:05}")))
                            .send()
                            .await
                            .unwrap();
                    }
                    3 => {
                        db.put_item()
                            .table_name("events")
                            .set_item(Some(item(10_000 + i, Some(98))))
                            .send()
                            .await
                            .unwrap();
                    }
                    _ => {}
                }
                i += 1;
                let desc = db
                    .describe_table()
                    .table_name("events")
                    .send()
                    .await
                    .unwrap();
                let index = &desc.table().unwrap().global_secondary_indexes()[0];
                if index.index_status() == Some(&IndexStatus::Creating) {
                    assert_eq!(index.backfilling(), Some(true));
                    seen_creating = true;
                } else if index.index_status() == Some(&IndexStatus::Active) && i >= 40 {
                    return (seen_creating, i);
                }
            }
        })
    };
    let (seen_creating, writes) = writer.await.unwrap();
    assert!(
        seen_creating,
        "the index read as CREATING while it filled in"
    );
    assert!(writes >= 40);

    let table = scan_all(&db, "events", None).await;
    let mut expected: Vec<(String, String)> = table
        .iter()
        .filter_map(|i| {
            Some((
                i["pk"].as_s().unwrap().clone(),
                i.get("grp")?.as_s().unwrap().clone(),
            ))
        })
        .collect();
    let mut indexed: Vec<(String, String)> = scan_all(&db, "events", Some("ByGroup"))
        .await
        .iter()
        .map(|i| {
            (
                i["pk"].as_s().unwrap().clone(),
                i["grp"].as_s().unwrap().clone(),
            )
        })
        .collect();
    expected.sort();
    indexed.sort();
    assert!(expected.len() > 8_000);
    assert_eq!(indexed.len(), expected.len());
    assert!(
        indexed == expected,
        "the index equals the table filtered by its key"
    );
    let described = db
        .describe_table()
        .table_name("events")
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.table().unwrap().global_secondary_indexes()[0].item_count(),
        Some(expected.len() as i64)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_indexes_limit_and_report_item_collections() {
    use aws_sdk_dynamodb::types::{
        LocalSecondaryIndex, Projection, ProjectionType, ReturnItemCollectionMetrics,
    };
    let dir = TempDir::new("ddb-lsi-limit");
    // 10 GB cannot be written here; the limit is lowered to 300 KB.
    let moat = Moat::must_start_with(
        dir.path(),
        &[],
        &[("MOAT_ITEM_COLLECTION_LIMIT_BYTES", "300000")],
    );
    let db = client(&moat);
    let attr = |n: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    db.create_table()
        .table_name("threads")
        .attribute_definitions(attr("forum", ScalarAttributeType::S))
        .attribute_definitions(attr("id", ScalarAttributeType::N))
        .attribute_definitions(attr("posted", ScalarAttributeType::S))
        .key_schema(key("forum", KeyType::Hash))
        .key_schema(key("id", KeyType::Range))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("ByPosted")
                .key_schema(key("forum", KeyType::Hash))
                .key_schema(key("posted", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let body = "x".repeat(50_000);
    let post = |forum: &str, id: i64| {
        db.put_item()
            .table_name("threads")
            .item("forum", s(forum))
            .item("id", n(id))
            .item("posted", s(&format!("2026-01-{id:02}")))
            .item("body", s(&body))
            .return_item_collection_metrics(ReturnItemCollectionMetrics::Size)
            .send()
    };
    // Each post counts twice (the item and its ALL-projected index entry):
    // about 100 KB, so the third post in a forum goes over 300 KB.
    let first = post("rust", 1).await.unwrap();
    let metrics = first.item_collection_metrics().unwrap();
    assert_eq!(metrics.item_collection_key().unwrap()["forum"], s("rust"));
    assert_eq!(metrics.size_estimate_range_gb(), [0.0, 1.0]);
    post("rust", 2).await.unwrap();
    assert_eq!(
        code(post("rust", 3).await),
        "ItemCollectionSizeLimitExceededException"
    );
    let got = db
        .get_item()
        .table_name("threads")
        .key("forum", s("rust"))
        .key("id", n(3))
        .send()
        .await
        .unwrap();
    assert!(got.item().is_none(), "the refused write changed nothing");
    let in_transaction = db
        .transact_write_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name("threads")
                        .item("forum", s("rust"))
                        .item("id", n(4))
                        .item("posted", s("2026-01-04"))
                        .item("body", s(&body))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect_err("over the collection limit");
    let reasons = cancellation_codes(&in_transaction);
    assert_eq!(reasons, ["ItemCollectionSizeLimitExceeded"]);
    // Another collection is not affected, and freeing space makes room.
    post("go", 1).await.unwrap();
    db.delete_item()
        .table_name("threads")
        .key("forum", s("rust"))
        .key("id", n(1))
        .send()
        .await
        .unwrap();
    post("rust", 3).await.unwrap();
    // A bad ReturnItemCollectionMetrics is refused before anything is written.
    let bogus = db
        .put_item()
        .table_name("threads")
        .item("forum", s("go"))
        .item("id", n(9))
        .return_item_collection_metrics(ReturnItemCollectionMetrics::from("BOGUS"))
        .send()
        .await;
    assert_eq!(code(bogus), "ValidationException");
    let got = db
        .get_item()
        .table_name("threads")
        .key("forum", s("go"))
        .key("id", n(9))
        .send()
        .await
        .unwrap();
    assert!(got.item().is_none(), "the refused request wrote nothing");
    // Without local indexes there are no collection metrics.
    must_create(&db, "plain", false).await;
    let plain = db
        .put_item()
        .table_name("plain")
        .item("pk", s("a"))
        .return_item_collection_metrics(ReturnItemCollectionMetrics::Size)
        .send()
        .await
        .unwrap();
    assert!(plain.item_collection_metrics().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_table_design_end_to_end() {
    use aws_sdk_dynamodb::types::{
        GlobalSecondaryIndex, Projection, ProjectionType, Put, TransactWriteItem, Update,
    };
    let dir = TempDir::new("ddb-single-table");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let gsi = |name: &str, hash: &str, range: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(hash, KeyType::Hash))
            .key_schema(key(range, KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .unwrap()
    };
    db.create_table()
        .table_name("shop")
        .attribute_definitions(attr("PK"))
        .attribute_definitions(attr("SK"))
        .attribute_definitions(attr("GSI1PK"))
        .attribute_definitions(attr("GSI1SK"))
        .key_schema(key("PK", KeyType::Hash))
        .key_schema(key("SK", KeyType::Range))
        .global_secondary_indexes(gsi("GSI1", "GSI1PK", "GSI1SK"))
        // The inverted index: the table's keys swapped, so a line item is
        // found from its product.
        .global_secondary_indexes(gsi("Inverted", "SK", "PK"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();

    let put = |pairs: &[(&str, &str)]| {
        let mut p = Put::builder().table_name("shop");
        for (k, v) in pairs {
            p = p.item(*k, s(v));
        }
        TransactWriteItem::builder().put(p.build().unwrap()).build()
    };
    for (c, email) in [("c1", "ann@example.com"), ("c2", "bo@example.com")] {
        db.put_item()
            .table_name("shop")
            .item("PK", s(&format!("CUST#{c}")))
            .item("SK", s("PROFILE"))
            .item("GSI1PK", s(&format!("EMAIL#{email}")))
            .item("GSI1SK", s(&format!("CUST#{c}")))
            .item("orders", n(0))
            .send()
            .await
            .unwrap();
    }
    // Placing an order is one transaction: the order, its line items and the
    // customer's order count.
    let place = |customer: &str, order: &str, date: &str, products: &[&str]| {
        let mut items = vec![put(&[
            ("PK", &format!("CUST#{customer}")),
            ("SK", &format!("ORDER#{order}")),
            ("GSI1PK", "STATUS#PLACED"),
            ("GSI1SK", date),
        ])];
        for p in products {
            items.push(put(&[
                ("PK", &format!("ORDER#{order}")),
                ("SK", &format!("PRODUCT#{p}")),
                ("customer", customer),
            ]));
        }
        items.push(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name("shop")
                        .key("PK", s(&format!("CUST#{customer}")))
                        .key("SK", s("PROFILE"))
                        .update_expression("ADD orders :one")
                        .expression_attribute_values(":one", n(1))
                        .build()
                        .unwrap(),
                )
                .build(),
        );
        db.transact_write_items()
            .set_transact_items(Some(items))
            .send()
    };
    place("c1", "o1", "2026-11-01", &["p1", "p2"])
        .await
        .unwrap();
    place("c1", "o2", "2026-11-03", &["p2"]).await.unwrap();
    place("c2", "o3", "2026-11-02", &["p1", "p3"])
        .await
        .unwrap();

    let query = |index: Option<&str>, hash: (&str, &str)| {
        db.query()
            .table_name("shop")
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#h = :h")
            .expression_attribute_names("#h", hash.0)
            .expression_attribute_values(":h", s(hash.1))
    };
    let field = |items: &[HashMap<String, AV>], f: &str| {
        items
            .iter()
            .map(|i| i[f].as_s().unwrap().clone())
            .collect::<Vec<_>>()
    };
    // A customer and their orders in one query; the orders alone by prefix.
    let c1 = query(None, ("PK", "CUST#c1")).send().await.unwrap();
    assert_eq!(field(c1.items(), "SK"), ["ORDER#o1", "ORDER#o2", "PROFILE"]);
    assert_eq!(c1.items()[2]["orders"], n(2));
    let orders = db
        .query()
        .table_name("shop")
        .key_condition_expression("PK = :c AND begins_with(SK, :o)")
        .expression_attribute_values(":c", s("CUST#c1"))
        .expression_attribute_values(":o", s("ORDER#"))
        .send()
        .await
        .unwrap();
    assert_eq!(orders.count(), 2);
    // A customer by email, through the overloaded GSI1.
    let by_email = query(Some("GSI1"), ("GSI1PK", "EMAIL#bo@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(field(by_email.items(), "PK"), ["CUST#c2"]);
    // Placed orders, newest first.
    let placed = query(Some("GSI1"), ("GSI1PK", "STATUS#PLACED"))
        .scan_index_forward(false)
        .send()
        .await
        .unwrap();
    assert_eq!(
        field(placed.items(), "SK"),
        ["ORDER#o2", "ORDER#o3", "ORDER#o1"]
    );
    // An order's line items, and the orders that contain a product.
    let lines = query(None, ("PK", "ORDER#o3")).send().await.unwrap();
    assert_eq!(field(lines.items(), "SK"), ["PRODUCT#p1", "PRODUCT#p3"]);
    let with_p1 = query(Some("Inverted"), ("SK", "PRODUCT#p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(field(with_p1.items(), "PK"), ["ORDER#o1", "ORDER#o3"]);
    assert_eq!(field(with_p1.items(), "customer"), ["c1", "c2"]);

    // Shipping an order moves it between partitions of GSI1.
    db.update_item()
        .table_name("shop")
        .key("PK", s("CUST#c1"))
        .key("SK", s("ORDER#o1"))
        .update_expression("SET GSI1PK = :s")
        .expression_attribute_values(":s", s("STATUS#SHIPPED"))
        .send()
        .await
        .unwrap();
    let placed = query(Some("GSI1"), ("GSI1PK", "STATUS#PLACED"))
        .send()
        .await
        .unwrap();
    assert_eq!(field(placed.items(), "SK"), ["ORDER#o3", "ORDER#o2"]);
    let shipped = query(Some("GSI1"), ("GSI1PK", "STATUS#SHIPPED"))
        .send()
        .await
        .unwrap();
    assert_eq!(field(shipped.items(), "SK"), ["ORDER#o1"]);

    // A failed placement (the customer's profile must exist) leaves no trace
    // in the table or either index.
    let mut bad = vec![put(&[
        ("PK", "CUST#c9"),
        ("SK", "ORDER#o9"),
        ("GSI1PK", "STATUS#PLACED"),
        ("GSI1SK", "2026-11-09"),
    ])];
    bad.push(put(&[
        ("PK", "ORDER#o9"),
        ("SK", "PRODUCT#p1"),
        ("customer", "c9"),
    ]));
    bad.push(
        TransactWriteItem::builder()
            .condition_check(
                aws_sdk_dynamodb::types::ConditionCheck::builder()
                    .table_name("shop")
                    .key("PK", s("CUST#c9"))
                    .key("SK", s("PROFILE"))
                    .condition_expression("attribute_exists(PK)")
                    .build()
                    .unwrap(),
            )
            .build(),
    );
    assert_eq!(
        code(
            db.transact_write_items()
                .set_transact_items(Some(bad))
                .send()
                .await
        ),
        "TransactionCanceledException"
    );
    let with_p1 = query(Some("Inverted"), ("SK", "PRODUCT#p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_p1.count(), 2);
    let placed = query(Some("GSI1"), ("GSI1PK", "STATUS#PLACED"))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_transaction_load_leaves_whole_transactions() {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = TempDir::new("ddb-crash-tx");
    let mut acknowledged: Vec<String> = Vec::new();
    // Every transaction puts the same key into two tables (two stores, two
    // commits): after a crash, a key is in both or in neither.
    let keys_in = |db: Client, table: &'static str| async move {
        scan_all(&db, table, None)
            .await
            .iter()
            .map(|i| i["pk"].as_s().unwrap().clone())
            .collect::<BTreeSet<String>>()
    };
    for cycle in 0..3u64 {
        let moat = Moat::must_start(dir.path());
        let db = client(&moat);
        if cycle == 0 {
            must_create(&db, "orders", false).await;
            must_create(&db, "ledger", false).await;
        }
        let orders = keys_in(db.clone(), "orders").await;
        let ledger = keys_in(db.clone(), "ledger").await;
        assert_eq!(orders, ledger, "cycle {cycle}: a transaction is half there");
        for pk in &acknowledged {
            assert!(orders.contains(pk), "cycle {cycle}: acknowledged {pk} lost");
        }
        let done = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (db, done, acked) = (db.clone(), done.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let pk = format!("c{cycle}-w{w}-{i}");
                    let put = |table: &str| {
                        TransactWriteItem::builder()
                            .put(
                                Put::builder()
                                    .table_name(table)
                                    .item("pk", s(&pk))
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                    };
                    if db
                        .transact_write_items()
                        .transact_items(put("orders"))
                        .transact_items(put("ledger"))
                        .send()
                        .await
                        .is_ok()
                    {
                        acked.lock().unwrap().push(pk);
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300 + 200 * cycle)).await;
        common::signal(moat.pid(), "KILL");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        done.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: no transaction was acknowledged"
        );
        acknowledged.extend(acked);
        drop(moat);
    }
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let orders = keys_in(db.clone(), "orders").await;
    assert_eq!(orders, keys_in(db.clone(), "ledger").await);
    assert!(acknowledged.iter().all(|pk| orders.contains(pk)));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_in_a_transaction_in_flight_conflicts() {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
    let dir = TempDir::new("ddb-txn-conflict");
    // Every transaction is held two seconds once it has claimed its items.
    let moat = Moat::must_start_with(dir.path(), &[], &[("MOAT_FAIL_POINT", "transact-hold")]);
    let db = client(&moat);
    must_create(&db, "stock", false).await;
    let put = |pk: &str, v: &str| {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name("stock")
                    .item("pk", s(pk))
                    .item("v", s(v))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let slow = {
        let db = db.clone();
        let items = vec![put("apple", "tx")];
        tokio::spawn(async move {
            db.transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let single = db
        .put_item()
        .table_name("stock")
        .item("pk", s("apple"))
        .item("v", s("single"))
        .customize()
        // The SDK retries a conflict; one attempt shows the answer itself.
        .config_override(
            aws_sdk_dynamodb::config::Builder::default()
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()),
        )
        .send()
        .await;
    assert_eq!(code(single), "TransactionConflictException");
    let other = db
        .transact_write_items()
        .transact_items(put("pear", "tx2"))
        .transact_items(put("apple", "tx2"))
        .send()
        .await
        .expect_err("apple is held");
    let reasons = cancellation_codes(&other);
    assert_eq!(reasons, ["None", "TransactionConflict"]);
    slow.await.unwrap().unwrap();
    // Once the first transaction is done, the item is free again.
    let get = |pk: &str| {
        db.get_item()
            .table_name("stock")
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
    };
    assert_eq!(get("apple").await.unwrap().item().unwrap()["v"], s("tx"));
    assert!(
        get("pear").await.unwrap().item().is_none(),
        "the cancelled transaction wrote nothing"
    );
    db.put_item()
        .table_name("stock")
        .item("pk", s("apple"))
        .item("v", s("single"))
        .send()
        .await
        .unwrap();
}

/// Every page of a `Query`, following `LastEvaluatedKey`.
async fn query_pages(
    db: &Client,
    index: Option<&str>,
    condition: &str,
    values: &[(&str, AV)],
    forward: bool,
    limit: Option<i32>,
) -> Vec<HashMap<String, AV>> {
    let mut items = Vec::new();
    let mut start = None;
    for _ in 0..1000 {
        let mut query = db
            .query()
            .table_name("ranges")
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(condition)
            .scan_index_forward(forward)
            .set_limit(limit)
            .set_exclusive_start_key(start.take());
        for (name, value) in values {
            query = query.expression_attribute_values(*name, value.clone());
        }
        let page = query.send().await.unwrap();
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return items,
        }
    }
    panic!("{condition}: no end of pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_condition_reads_the_same_items_both_ways_and_in_pages() {
    use aws_sdk_dynamodb::types::ProjectionType;
    let dir = TempDir::new("ddb-key-ranges");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    db.create_table()
        .table_name("ranges")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("sk", ScalarAttributeType::S))
        .attribute_definitions(def("g", ScalarAttributeType::S))
        .attribute_definitions(def("num", ScalarAttributeType::N))
        .key_schema(ks("pk", KeyType::Hash))
        .key_schema(ks("sk", KeyType::Range))
        .global_secondary_indexes(sdk::global_index(
            "ByNum",
            "g",
            Some("num"),
            ProjectionType::All,
        ))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();

    // More items than one read of the store (256) in the partition, sort
    // keys that are prefixes of others or hold NUL bytes, and neighbours
    // on both sides: "pp" and "o" must never leak in.
    let mut sort_keys: Vec<String> = (0..280).map(|i| format!("k{i:03}")).collect();
    sort_keys.extend(
        [
            "k",
            "k0",
            "k00",
            "k\u{0}",
            "k\u{0}\u{0}a",
            "kä",
            "j",
            "l",
            "k1\u{0}",
        ]
        .map(String::from),
    );
    // Index values with repeats, negatives, zero and fractions.
    let num_of = |i: usize| ((i * 37) % 101) as f64 / 4.0 - 12.5;
    let mut writes = Vec::new();
    for (i, sk) in sort_keys.iter().enumerate() {
        writes.push((s("p"), sk.clone(), num_of(i)));
    }
    for sk in ["k001", "k5", "a"] {
        writes.push((s("pp"), sk.to_owned(), 0.0));
        writes.push((s("o"), sk.to_owned(), 1.0));
    }
    for (pk, sk, num) in &writes {
        let g = if *pk == s("p") { "g" } else { "h" };
        db.put_item()
            .table_name("ranges")
            .item("pk", pk.clone())
            .item("sk", s(sk))
            .item("g", s(g))
            .item("num", n(num))
            .send()
            .await
            .unwrap();
    }

    // The table: each sort key condition against every sort key.
    let probes = [
        "k", "k000", "k0995", "k100", "k279", "k5", "a", "z", "k\u{0}", "kä",
    ];
    type Test = Box<dyn Fn(&str) -> bool>;
    type Case<'a> = (String, Vec<(&'a str, AV)>, Test);
    let mut cases: Vec<Case> = Vec::new();
    for p in probes {
        let v = p.to_owned();
        let ops: [(&str, Test); 5] = [
            (
                "=",
                Box::new({
                    let v = v.clone();
                    move |k: &str| k == v
                }),
            ),
            (
                "<",
                Box::new({
                    let v = v.clone();
                    move |k: &str| k < v.as_str()
                }),
            ),
            (
                "<=",
                Box::new({
                    let v = v.clone();
                    move |k: &str| k <= v.as_str()
                }),
            ),
            (
                ">",
                Box::new({
                    let v = v.clone();
                    move |k: &str| k > v.as_str()
                }),
            ),
            (
                ">=",
                Box::new({
                    let v = v.clone();
                    move |k: &str| k >= v.as_str()
                }),
            ),
        ];
        for (op, test) in ops {
            cases.push((format!("pk = :p AND sk {op} :v"), vec![(":v", s(p))], test));
        }
    }
    for p in ["k", "k1", "k00", "k\u{0}", "z", "kä", "k27"] {
        let v = p.to_owned();
        cases.push((
            "pk = :p AND begins_with(sk, :v)".into(),
            vec![(":v", s(p))],
            Box::new(move |k: &str| k.starts_with(v.as_str())),
        ));
    }
    for (a, b) in [
        ("k000", "k010"),
        ("k", "k1"),
        ("a", "z"),
        ("k\u{0}", "k00"),
        ("k279", "l"),
    ] {
        let (lo, hi) = (a.to_owned(), b.to_owned());
        cases.push((
            "pk = :p AND sk BETWEEN :a AND :b".into(),
            vec![(":a", s(a)), (":b", s(b))],
            Box::new(move |k: &str| lo.as_str() <= k && k <= hi.as_str()),
        ));
    }
    cases.push(("pk = :p".into(), vec![], Box::new(|_: &str| true)));
    let mut in_order = sort_keys.clone();
    in_order.sort();
    for (condition, mut values, test) in cases {
        values.push((":p", s("p")));
        let expected: Vec<&String> = in_order.iter().filter(|k| test(k.as_str())).collect();
        for forward in [true, false] {
            for limit in [None, Some(37)] {
                let got = query_pages(&db, None, &condition, &values, forward, limit).await;
                let got: Vec<&str> = got
                    .iter()
                    .map(|i| i["sk"].as_s().unwrap().as_str())
                    .collect();
                let mut want: Vec<&str> = expected.iter().map(|k| k.as_str()).collect();
                if !forward {
                    want.reverse();
                }
                assert_eq!(
                    got, want,
                    "{condition} {values:?} forward {forward} limit {limit:?}"
                );
            }
        }
    }

    // The newest item alone (the usual reason to read backwards).
    let last = db
        .query()
        .table_name("ranges")
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("p"))
        .scan_index_forward(false)
        .limit(1)
        .send()
        .await
        .unwrap();
    assert_eq!(last.items()[0]["sk"], s(in_order.last().unwrap()));
    assert!(last.last_evaluated_key().is_some());

    // The index: numeric conditions over repeated values, both ways.
    let nums: Vec<f64> = (0..sort_keys.len()).map(num_of).collect();
    for (op, v) in [
        ("=", 0.0),
        ("=", -12.5),
        ("<", 0.25),
        ("<=", -3.0),
        (">", 12.0),
        (">=", 12.5),
        (">", 100.0),
        ("<", -100.0),
    ] {
        let condition = format!("g = :g AND num {op} :v");
        let values = [(":g", s("g")), (":v", n(v))];
        let test = |x: f64| match op {
            "=" => x == v,
            "<" => x < v,
            "<=" => x <= v,
            ">" => x > v,
            _ => x >= v,
        };
        let mut want: Vec<f64> = nums.iter().copied().filter(|x| test(*x)).collect();
        want.sort_by(f64::total_cmp);
        for forward in [true, false] {
            for limit in [None, Some(37)] {
                let got =
                    query_pages(&db, Some("ByNum"), &condition, &values, forward, limit).await;
                let got_nums: Vec<f64> = got
                    .iter()
                    .map(|i| i["num"].as_n().unwrap().parse().unwrap())
                    .collect();
                let mut want = want.clone();
                if !forward {
                    want.reverse();
                }
                assert_eq!(
                    got_nums, want,
                    "{condition} {v} forward {forward} limit {limit:?}"
                );
                let mut keys: Vec<&str> = got
                    .iter()
                    .map(|i| i["sk"].as_s().unwrap().as_str())
                    .collect();
                keys.sort();
                keys.dedup();
                assert_eq!(keys.len(), got.len(), "{condition}: an item twice");
            }
        }
    }
    let between = query_pages(
        &db,
        Some("ByNum"),
        "g = :g AND num BETWEEN :a AND :b",
        &[(":g", s("g")), (":a", n(-1.5)), (":b", n(2))],
        false,
        Some(5),
    )
    .await;
    let want = nums.iter().filter(|x| (-1.5..=2.0).contains(*x)).count();
    assert_eq!(between.len(), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn index_counts_and_sizes_follow_every_write() {
    use aws_sdk_dynamodb::types::ProjectionType;
    let dir = TempDir::new("ddb-index-stats");
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let index = |name: &str, key: &str| sdk::global_index(name, key, None, ProjectionType::All);
    db.create_table()
        .table_name("counted")
        .attribute_definitions(def("pk", ScalarAttributeType::S))
        .attribute_definitions(def("kind", ScalarAttributeType::S))
        .attribute_definitions(def("tag", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        // Every item has a kind: that index holds every item, whole.
        .global_secondary_indexes(index("ByKind", "kind"))
        // Only some items have a tag.
        .global_secondary_indexes(index("ByTag", "tag"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let check = |when: &'static str| {
        let db = db.clone();
        async move {
            let described = db
                .describe_table()
                .table_name("counted")
                .send()
                .await
                .unwrap();
            let table = described.table().unwrap();
            let by = |name: &str| {
                table
                    .global_secondary_indexes()
                    .iter()
                    .find(|i| i.index_name() == Some(name))
                    .unwrap()
                    .clone()
            };
            let (kind, tag) = (by("ByKind"), by("ByTag"));
            assert_eq!(
                kind.item_count(),
                table.item_count(),
                "{when}: ByKind count"
            );
            assert_eq!(
                kind.index_size_bytes(),
                table.table_size_bytes(),
                "{when}: ByKind holds every item whole"
            );
            let tagged = scan_all(&db, "counted", Some("ByTag")).await.len() as i64;
            assert_eq!(tag.item_count(), Some(tagged), "{when}: ByTag count");
            assert_eq!(
                tag.index_size_bytes() == Some(0),
                tagged == 0,
                "{when}: ByTag size"
            );
        }
    };
    check("empty").await;
    for i in 0..40 {
        let mut put = db
            .put_item()
            .table_name("counted")
            .item("pk", s(&format!("item{i}")))
            .item("kind", s(if i % 3 == 0 { "a" } else { "b" }))
            .item("body", s(&"x".repeat(10 * i)));
        if i % 2 == 0 {
            put = put.item("tag", s(&format!("t{}", i % 5)));
        }
        put.send().await.unwrap();
    }
    check("after puts").await;
    // Overwrites that grow, shrink, move and untag items; deletes.
    for i in (0..40).step_by(3) {
        db.update_item()
            .table_name("counted")
            .key("pk", s(&format!("item{i}")))
            .update_expression("SET kind = :k, body = :b REMOVE tag")
            .expression_attribute_values(":k", s("c"))
            .expression_attribute_values(":b", s(&"y".repeat(500 - 10 * i)))
            .send()
            .await
            .unwrap();
    }
    for i in (1..40).step_by(4) {
        db.update_item()
            .table_name("counted")
            .key("pk", s(&format!("item{i}")))
            .update_expression("SET tag = :t")
            .expression_attribute_values(":t", s("new"))
            .send()
            .await
            .unwrap();
    }
    for i in (0..40).step_by(7) {
        db.delete_item()
            .table_name("counted")
            .key("pk", s(&format!("item{i}")))
            .send()
            .await
            .unwrap();
    }
    check("after updates and deletes").await;
    // A restarted server reads the same counts.
    let mut moat = moat;
    assert!(moat.must_stop());
    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let described = db
        .describe_table()
        .table_name("counted")
        .send()
        .await
        .unwrap();
    let table = described.table().unwrap();
    let by_kind = table
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some("ByKind"))
        .unwrap();
    assert_eq!(by_kind.index_size_bytes(), table.table_size_bytes());
    assert!(table.table_size_bytes().unwrap() > 5_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_a_stop_cut_short_finishes_after_the_restart() {
    use aws_sdk_dynamodb::types::IndexStatus;
    let dir = TempDir::new("ddb-backfill-cut");
    // 50 ms per chunk of 256 items: the backfill is still running at the stop.
    let mut moat = Moat::must_start_with(dir.path(), &[], &[("MOAT_FAIL_POINT", "backfill-slow")]);
    let db = client(&moat);
    must_create(&db, "cut", false).await;
    put_all(
        &db,
        "cut",
        (0..3000).map(|i| {
            let mut item = HashMap::from([("pk".to_owned(), s(&format!("k{i:05}")))]);
            if i % 3 != 0 {
                item.insert("grp".to_owned(), s(&format!("g{}", i % 10)));
            }
            item
        }),
    )
    .await;
    add_group_index(&db, "cut").await;
    let status = |db: Client| async move {
        let described = db.describe_table().table_name("cut").send().await.unwrap();
        described.table().unwrap().global_secondary_indexes()[0].clone()
    };
    assert_eq!(
        status(db.clone()).await.index_status(),
        Some(&IndexStatus::Creating)
    );
    assert!(moat.must_stop());

    let moat = Moat::must_start(dir.path());
    let db = client(&moat);
    let mut index = status(db.clone()).await;
    for _ in 0..300 {
        if index.index_status() == Some(&IndexStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        index = status(db.clone()).await;
    }
    assert_eq!(
        index.index_status(),
        Some(&IndexStatus::Active),
        "the backfill finished after the restart"
    );
    let mut indexed: Vec<String> = scan_all(&db, "cut", Some("ByGroup"))
        .await
        .iter()
        .map(|i| i["pk"].as_s().unwrap().clone())
        .collect();
    indexed.sort();
    let expected: Vec<String> = (0..3000)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("k{i:05}"))
        .collect();
    assert_eq!(indexed, expected);
    assert_eq!(index.item_count(), Some(expected.len() as i64));
}
