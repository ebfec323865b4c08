//! KMS through `aws-sdk-kms`: keys on Moat's hierarchy, encryption contexts,
//! rotation, states, aliases and tags, with AWS's errors; authorised by IAM.

mod common;

use aws_credential_types::Credentials;
use aws_sdk_kms::primitives::Blob;
use common::{Moat, TempDir};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::code;
use sdk::{iam_client, kms_client};

#[tokio::test(flavor = "multi_thread")]
async fn kms_keys_life_cycle_and_errors() {
    let dir = TempDir::new("kms");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let root = Credentials::new(id, secret, None, None, "root");
    let kms = kms_client(&moat, root.clone());
    let account = moat.account.clone();

    let created = kms.create_key().description("orders").send().await.unwrap();
    let meta = created.key_metadata().unwrap();
    let key = meta.key_id().to_owned();
    let arn = meta.arn().unwrap().to_owned();
    assert_eq!(arn, format!("arn:aws:kms:us-east-1:{account}:key/{key}"));
    assert_eq!(meta.key_state().unwrap().as_str(), "Enabled");
    let other = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    assert_eq!(kms.list_keys().send().await.unwrap().keys().len(), 2);
    assert_eq!(
        code(
            kms.describe_key()
                .key_id("00000000-0000-4000-8000-000000000000")
                .send()
                .await
        ),
        "NotFoundException"
    );

    // Aliases name keys everywhere a key id goes.
    kms.create_alias()
        .alias_name("alias/orders")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("alias/orders")
                .target_key_id(&other)
                .send()
                .await
        ),
        "AlreadyExistsException"
    );
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("orders")
                .target_key_id(&key)
                .send()
                .await
        ),
        "InvalidAliasNameException"
    );
    let described = kms
        .describe_key()
        .key_id("alias/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(described.key_metadata().unwrap().key_id(), key);
    assert_eq!(kms.list_aliases().send().await.unwrap().aliases().len(), 1);

    // Encrypt and decrypt with an encryption context, which must match.
    let ctx = ("purpose", "orders");
    let enc = kms
        .encrypt()
        .key_id("alias/orders")
        .plaintext(Blob::new(b"secret order 42".to_vec()))
        .encryption_context(ctx.0, ctx.1)
        .send()
        .await
        .unwrap();
    let blob = enc.ciphertext_blob().unwrap().clone();
    assert!(!blob.as_ref().windows(15).any(|w| w == b"secret order 42"));
    let dec = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context(ctx.0, ctx.1)
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"secret order 42");
    assert_eq!(dec.key_id(), Some(arn.as_str()));
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(blob.clone())
                .encryption_context("purpose", "billing")
                .send()
                .await
        ),
        "InvalidCiphertextException"
    );
    assert_eq!(
        code(kms.decrypt().ciphertext_blob(blob.clone()).send().await),
        "InvalidCiphertextException"
    );
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(blob.clone())
                .key_id(&other)
                .encryption_context(ctx.0, ctx.1)
                .send()
                .await
        ),
        "IncorrectKeyException"
    );
    let mut tampered = blob.as_ref().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(Blob::new(tampered))
                .encryption_context(ctx.0, ctx.1)
                .send()
                .await
        ),
        "InvalidCiphertextException"
    );

    // Data keys.
    let dk = kms
        .generate_data_key()
        .key_id(&key)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 32);
    let back = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.plaintext().unwrap().as_ref(),
        dk.plaintext().unwrap().as_ref()
    );
    let no_plain = kms
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .number_of_bytes(16)
        .send()
        .await
        .unwrap();
    assert!(no_plain.ciphertext_blob().is_some());

    // ReEncrypt under another key and context.
    let re = kms
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .source_encryption_context(ctx.0, ctx.1)
        .destination_key_id(&other)
        .destination_encryption_context("purpose", "archive")
        .send()
        .await
        .unwrap();
    let moved = kms
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob().unwrap().clone())
        .encryption_context("purpose", "archive")
        .send()
        .await
        .unwrap();
    assert_eq!(moved.plaintext().unwrap().as_ref(), b"secret order 42");

    // Rotation: new material, and old ciphertexts still decrypt.
    kms.enable_key_rotation().key_id(&key).send().await.unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled());
    kms.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let after = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context(ctx.0, ctx.1)
        .send()
        .await
        .unwrap();
    assert_eq!(after.plaintext().unwrap().as_ref(), b"secret order 42");
    let fresh = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"new".to_vec()))
        .send()
        .await
        .unwrap();
    assert_ne!(
        fresh.ciphertext_blob().unwrap().as_ref()[40..44],
        blob.as_ref()[40..44],
        "new material version"
    );

    // A disabled key refuses; enabled again it works.
    kms.disable_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        code(
            kms.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "DisabledException"
    );
    assert_eq!(
        code(
            kms.decrypt()
                .ciphertext_blob(blob.clone())
                .encryption_context(ctx.0, ctx.1)
                .send()
                .await
        ),
        "DisabledException"
    );
    kms.enable_key().key_id(&key).send().await.unwrap();

    // Deletion: 7 to 30 days, PendingDeletion refuses use, cancel leaves it disabled.
    assert_eq!(
        code(
            kms.schedule_key_deletion()
                .key_id(&other)
                .pending_window_in_days(3)
                .send()
                .await
        ),
        "ValidationException"
    );
    let scheduled = kms
        .schedule_key_deletion()
        .key_id(&other)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.key_state().unwrap().as_str(), "PendingDeletion");
    assert_eq!(
        code(
            kms.encrypt()
                .key_id(&other)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    kms.cancel_key_deletion()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    let state = kms.describe_key().key_id(&other).send().await.unwrap();
    assert_eq!(
        state.key_metadata().unwrap().key_state().unwrap().as_str(),
        "Disabled"
    );

    // Tags.
    kms.tag_resource()
        .key_id(&key)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("team")
                .tag_value("orders")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        kms.list_resource_tags()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .tags()
            .len(),
        1
    );
    kms.untag_resource()
        .key_id(&key)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    assert!(kms
        .list_resource_tags()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .tags()
        .is_empty());

    // IAM decides: a user allowed only kms:Encrypt on this key.
    let iam = iam_client(&moat, root.clone());
    iam.create_user().user_name("writer").send().await.unwrap();
    iam.put_user_policy()
        .user_name("writer")
        .policy_name("encrypt-only")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:Encrypt","Resource":"{arn}"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let k = iam
        .create_access_key()
        .user_name("writer")
        .send()
        .await
        .unwrap();
    let k = k.access_key().unwrap();
    let writer = kms_client(
        &moat,
        Credentials::new(k.access_key_id(), k.secret_access_key(), None, None, "w"),
    );
    assert!(writer
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"ok".to_vec()))
        .send()
        .await
        .is_ok());
    assert_eq!(
        code(
            writer
                .decrypt()
                .ciphertext_blob(blob.clone())
                .encryption_context(ctx.0, ctx.1)
                .send()
                .await
        ),
        "AccessDeniedException"
    );
    assert_eq!(
        code(
            writer
                .encrypt()
                .key_id(&other)
                .plaintext(Blob::new(b"no".to_vec()))
                .send()
                .await
        ),
        "AccessDeniedException"
    );

    // Keys survive a restart, and their ciphertexts still decrypt.
    drop(moat);
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let kms = kms_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let again = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context(ctx.0, ctx.1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.plaintext().unwrap().as_ref(), b"secret order 42");
}

/// A KMS request signed at `offset` seconds from now, for a server whose clock is shifted.
fn kms_raw(
    moat: &Moat,
    operation: &str,
    body: serde_json::Value,
    offset: u64,
) -> common::RawResponse {
    let (id, secret) = moat.root_credentials();
    let request = common::RawRequest {
        method: "POST".into(),
        target: "/".into(),
        headers: vec![
            ("host".into(), format!("127.0.0.1:{}", moat.port)),
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-target".into(), format!("TrentService.{operation}")),
        ],
        body: body.to_string().into_bytes(),
    };
    let signer = common::Signer {
        time: std::time::SystemTime::now() + std::time::Duration::from_secs(offset),
        ..common::Signer::new(&id, &secret, "kms")
    };
    request.signed(&signer).send(moat.port, &moat.ca_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_rotation_and_deletion_happen_when_due() {
    let dir = TempDir::new("kms-time");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let kms = kms_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let rotating = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    kms.enable_key_rotation()
        .key_id(&rotating)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let old = kms
        .encrypt()
        .key_id(&rotating)
        .plaintext(Blob::new(b"before".to_vec()))
        .send()
        .await
        .unwrap();
    let doomed = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    kms.schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    drop(kms);
    drop(moat);

    // 91 days later (libfaketime shifts Moat's clock; the signer's agrees).
    let offset = 91 * 86_400;
    let later = Moat::must_start_with(
        dir.path(),
        &[],
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME", "+91d"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut deleted = None;
    for _ in 0..50 {
        let r = kms_raw(
            &later,
            "DescribeKey",
            serde_json::json!({"KeyId": doomed}),
            offset,
        );
        if r.status != 200 {
            deleted = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let deleted = deleted.expect("the key past its waiting period is deleted");
    assert_eq!(deleted.error_code(), "NotFoundException");

    let fresh = kms_raw(
        &later,
        "Encrypt",
        serde_json::json!({"KeyId": rotating, "Plaintext": "YWZ0ZXI="}),
        offset,
    );
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let blob: serde_json::Value = serde_json::from_str(&fresh.body).unwrap();
    let new_blob = decode_b64(blob["CiphertextBlob"].as_str().unwrap());
    let old_blob = old.ciphertext_blob().unwrap().as_ref().to_vec();
    assert_ne!(
        new_blob[40..44],
        old_blob[40..44],
        "rotation added key material"
    );
    let still = kms_raw(
        &later,
        "Decrypt",
        serde_json::json!({"CiphertextBlob": encode_b64(&old_blob)}),
        offset,
    );
    assert_eq!(still.status, 200, "{}", still.body);
}

fn encode_b64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

fn decode_b64(text: &str) -> Vec<u8> {
    aws_smithy_types::base64::decode(text).unwrap()
}
