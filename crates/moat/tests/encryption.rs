//! Encryption at rest, driven through the real binary: nothing written is in
//! any file in plaintext, the master key must match, rotation retires the old
//! key, a damaged store is refused, and SIGKILL loses no acknowledged write.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{files_under, Moat, TempDir};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::iam_client;
use sdk::root;

/// Runs `moat serve` expecting it to refuse to start; returns what it said.
fn must_refuse(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moat"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "moat started where it must refuse");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_plaintext_keys_must_match_and_rotation_retires_the_old_key() {
    let dir = TempDir::new("enc");
    let moat = Moat::must_start(dir.path());
    let iam = iam_client(&moat, root(&moat));
    // Markers in values no log line carries: tags and policy documents.
    for i in 0..20 {
        iam.create_user()
            .user_name(format!("u{i}"))
            .tags(
                aws_sdk_iam::types::Tag::builder()
                    .key("PLAINMARKERKEY")
                    .value(format!("PLAINMARKERVALUE{i}"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        iam.put_user_policy()
            .user_name(format!("u{i}"))
            .policy_name("PLAINMARKERPOLICY")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"PLAINMARKERSID","Effect":"Allow","Action":"dynamodb:GetItem","Resource":"arn:aws:dynamodb:us-east-1:111122223333:table/PLAINMARKERTABLE"}]}"#,
            )
            .send()
            .await
            .unwrap();
    }
    let key = iam
        .create_access_key()
        .user_name("u0")
        .send()
        .await
        .unwrap();
    let secret = key.access_key().unwrap().secret_access_key().to_owned();
    drop(iam);
    drop(moat);

    let files = files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("state/system.db")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PLAINMARKER"),
            "{} holds a marker in plaintext",
            file.display()
        );
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds a user's secret access key in plaintext",
            file.display()
        );
    }

    // Another master key, or a missing key file, is refused with a clear message.
    let other = "11".repeat(32);
    let said = must_refuse(dir.path(), &[], &[("MOAT_MASTER_KEY", &other)]);
    assert!(
        said.contains("does not match this data directory"),
        "{said}"
    );
    let said = must_refuse(
        dir.path(),
        &["--master-key-file", "/nonexistent/master.key"],
        &[],
    );
    assert!(said.contains("/nonexistent/master.key"), "{said}");

    // Rotation: re-wrapped under a new key; the old one opens nothing.
    let new_key = dir.path().join("new-master.key");
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
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
    let said = must_refuse(dir.path(), &[], &[]);
    assert!(
        said.contains("does not match this data directory"),
        "the old key: {said}"
    );
    let moat = Moat::must_start_with(
        dir.path(),
        &["--master-key-file", new_key.to_str().unwrap()],
        &[],
    );
    let iam = iam_client(&moat, root(&moat));
    assert_eq!(iam.list_users().send().await.unwrap().users().len(), 20);
    let got = iam.get_user().user_name("u7").send().await.unwrap();
    assert_eq!(got.user().unwrap().tags()[0].value(), "PLAINMARKERVALUE7");
    drop(iam);
    drop(moat);

    // A flipped byte in the store is corruption, reported, never read as data.
    let db = dir.path().join("state/system.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&db, &bytes).unwrap();
    let said = must_refuse(
        dir.path(),
        &["--master-key-file", new_key.to_str().unwrap()],
        &[],
    );
    assert!(said.contains("corrupt"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loses_no_acknowledged_write() {
    let dir = TempDir::new("crash");
    let mut acknowledged: Vec<String> = Vec::new();
    for cycle in 0..8 {
        let moat = Moat::must_start(dir.path());
        let iam = iam_client(&moat, root(&moat));
        // Everything acknowledged before this start is still there.
        let mut present: Vec<String> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut req = iam.list_users().max_items(1000);
            if let Some(m) = &marker {
                req = req.marker(m);
            }
            let page = req.send().await.unwrap();
            present.extend(page.users().iter().map(|u| u.user_name().to_owned()));
            if !page.is_truncated() {
                break;
            }
            marker = page.marker().map(str::to_owned);
        }
        for name in &acknowledged {
            assert!(
                present.contains(name),
                "cycle {cycle}: acknowledged user {name} was lost"
            );
        }
        // Writers under load; SIGKILL lands in the middle of it.
        let done = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (iam, done, acked) = (iam.clone(), done.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let name = format!("c{cycle}-w{w}-{i}");
                    if iam.create_user().user_name(&name).send().await.is_ok() {
                        acked.lock().unwrap().push(name);
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * cycle)).await;
        common::signal(moat.pid(), "KILL");
        tokio::time::sleep(Duration::from_millis(200)).await;
        done.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: the load acknowledged nothing"
        );
        acknowledged.extend(acked);
        drop(moat);
    }
    // A last start checks the final cycle's writes.
    let moat = Moat::must_start(dir.path());
    let iam = iam_client(&moat, root(&moat));
    for name in acknowledged.iter().rev().take(50) {
        assert!(
            iam.get_user().user_name(name).send().await.is_ok(),
            "{name} was lost"
        );
    }
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[tokio::test(flavor = "multi_thread")]
async fn master_key_in_softhsm2() {
    let dir = TempDir::new("hsm");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    assert!(
        std::path::Path::new(SOFTHSM_MODULE).exists(),
        "SoftHSM2 is installed by scripts/test"
    );
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "moat",
            "--so-pin",
            "1234",
            "--pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("moat.toml"),
        format!("[master_key_pkcs11]\nmodule = \"{SOFTHSM_MODULE}\"\ntoken_label = \"moat\"\n"),
    )
    .unwrap();
    let conf_text = conf.to_str().unwrap().to_owned();
    let env = [
        ("SOFTHSM2_CONF", conf_text.as_str()),
        ("MOAT_PKCS11_PIN", "5678"),
    ];

    let moat = Moat::must_start_with(&data, &[], &env);
    let iam = iam_client(&moat, root(&moat));
    iam.create_user()
        .user_name("hsm-user")
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("k")
                .value("HSMMARKERVALUE")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    drop(iam);
    drop(moat);
    assert!(
        !data.join("keys/master.key").exists(),
        "no master key file with an HSM"
    );

    let moat = Moat::must_start_with(&data, &[], &env);
    let iam = iam_client(&moat, root(&moat));
    let user = iam.get_user().user_name("hsm-user").send().await.unwrap();
    assert_eq!(user.user().unwrap().tags()[0].value(), "HSMMARKERVALUE");
    drop(iam);
    drop(moat);

    // The wrong PIN, and the token gone: clear refusals.
    let said = must_refuse(
        &data,
        &[],
        &[
            ("SOFTHSM2_CONF", conf_text.as_str()),
            ("MOAT_PKCS11_PIN", "0000"),
        ],
    );
    assert!(
        said.contains("PIN is incorrect") && !said.contains("0000"),
        "{said}"
    );
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    let said = must_refuse(&data, &[], &env);
    assert!(
        said.contains("the HSM token 'moat' is not present"),
        "{said}"
    );
}
