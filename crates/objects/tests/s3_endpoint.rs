//! `S3Store` against a real S3-compatible server: moto's, from PyPI (which
//! `scripts/test` installs). Signing, paging, missing objects and errors.

use moat_objects::{ObjectStore, S3Config, S3Store};

#[path = "support/moto.rs"]
mod moto;
use moto::{moto_user, start_moto};

fn store(port: u16, id: &str, secret: &str) -> S3Store {
    S3Store::new(S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "moat-objects".into(),
        region: "us-east-1".into(),
        prefix: "deploy one/".into(),
        access_key_id: id.into(),
        secret_access_key: secret.into(),
        ca_pem: None,
    })
    .unwrap()
}

#[test]
fn objects_round_trip_on_an_s3_endpoint() {
    let (_server, port) = start_moto();
    let (id, secret) = moto_user(port);
    let s3 = store(port, &id, &secret);
    s3.ensure_bucket().unwrap();
    s3.ensure_bucket().unwrap();

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    s3.put("a/b/one", b"1").unwrap();
    s3.put("a/b/two & more+", &binary).unwrap();
    s3.put("a/c", b"").unwrap();
    s3.put("a/b/one", b"111").unwrap();
    assert_eq!(s3.get("a/b/one").unwrap().unwrap(), b"111");
    assert_eq!(s3.get("a/b/two & more+").unwrap().unwrap(), binary);
    assert_eq!(s3.get("a/c").unwrap().unwrap(), b"");
    assert_eq!(s3.get("a/none").unwrap(), None);
    assert_eq!(s3.size("a/b/two & more+").unwrap(), Some(70_000));
    assert_eq!(s3.size("a/none").unwrap(), None);
    assert_eq!(s3.list("a/b/").unwrap(), vec!["a/b/one", "a/b/two & more+"]);
    assert_eq!(s3.list("a/").unwrap().len(), 3);
    s3.delete("a/b/one").unwrap();
    s3.delete("a/b/one").unwrap();
    assert_eq!(s3.list("a/b/").unwrap(), vec!["a/b/two & more+"]);
    assert!(s3.put("../escape", b"x").is_err());

    // More keys than one ListObjectsV2 page holds.
    for i in 0..1_005 {
        s3.put(&format!("many/{i:05}"), b"x").unwrap();
    }
    let listed = s3.list("many/").unwrap();
    assert_eq!(listed.len(), 1_005);
    assert_eq!(listed[1_004], "many/01004");

    // A wrong secret is refused by the endpoint, and said so.
    let wrong = store(port, &id, "not-the-secret");
    let err = wrong.put("a/x", b"x").unwrap_err().to_string();
    assert!(
        err.contains("403") || err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
}
