//! The real clients against the real binary: the AWS SDK for Rust and the aws
//! CLI over TLS trusting only Moat's CA; restart keeps the identity; SIGTERM
//! lets an in-flight request finish; metrics and health; settings from the
//! environment; plain HTTP only where it is allowed.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use common::{must_connect_tls, must_read_response, Moat, RawRequest, Signer, TempDir};

fn sts_client(moat: &Moat, trust: TrustStore, key: (&str, &str)) -> aws_sdk_sts::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_https();
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moat.endpoint)
        .credentials_provider(Credentials::new(key.0, key.1, None, None, "test"))
        .http_client(http)
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

fn moat_ca_only(moat: &Moat) -> TrustStore {
    TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(moat.ca_pem())
}

async fn must_get_caller_arn(moat: &Moat) -> String {
    let (id, secret) = moat.root_credentials();
    let client = sts_client(moat, moat_ca_only(moat), (&id, &secret));
    let out = client
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(out.account(), Some(moat.account.as_str()));
    assert_eq!(out.user_id(), Some(moat.account.as_str()));
    out.arn().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_and_cli_reach_sts_and_a_restart_keeps_the_identity() {
    let dir = TempDir::new("clients");
    let mut moat = Moat::must_start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"], &[]);
    assert!(moat.endpoint.starts_with("https://127.0.0.1:"));
    assert_eq!(moat.account.len(), 12);

    // The SDK, trusting only Moat's generated CA.
    let arn = must_get_caller_arn(&moat).await;
    assert_eq!(arn, format!("arn:aws:iam::{}:root", moat.account));

    // The same SDK trusting only the system's CAs cannot connect.
    let (id, secret) = moat.root_credentials();
    let untrusting = sts_client(
        &moat,
        TrustStore::empty().with_native_roots(true),
        (&id, &secret),
    );
    assert!(untrusting.get_caller_identity().send().await.is_err());

    // The aws CLI from PyPI, through the files Moat wrote.
    // Read at run time: a shared target directory may hold a binary built
    // from a checkout at another path.
    let script = format!(
        "{}/tests/cli/get-caller-identity.sh",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&moat.data_dir)
        .arg(&moat.account)
        .output()
        .expect("run the aws CLI script (is the aws CLI installed?)");
    assert!(
        out.status.success(),
        "aws CLI script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Files with secrets are private.
    use std::os::unix::fs::PermissionsExt;
    for private in [
        "",
        "aws/credentials",
        "aws/config",
        "keys",
        "keys/master.key",
        "keys/master.check",
        "state",
        "state/system.db",
        "state/system.dbkey",
        "audit/audit.log",
    ] {
        let mode = std::fs::metadata(dir.path().join(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let want = if dir.path().join(private).is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, want, "mode of {private:?}");
    }

    // Health on the API port, unsigned; metrics on their own listener.
    let mut tls = must_connect_tls(moat.port, &moat.ca_pem());
    tls.write_all(b"GET /_moat/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let health = must_read_response(&mut tls);
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "{\"status\":\"ok\"}")
    );
    let metrics_addr = moat.metrics.clone().expect("metrics listener");
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(
        metrics.contains("moat_requests_total{service=\"sts\",operation=\"GetCallerIdentity\",outcome=\"allowed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("moat_request_duration_seconds_bucket{service=\"sts\",operation=\"GetCallerIdentity\",le=\"+Inf\"}"));

    // SIGTERM while a request is in flight: it still completes, then Moat exits cleanly.
    let request = RawRequest::sts_get_caller_identity(moat.port)
        .signed(&Signer::new(&id, &secret, "sts"))
        .to_bytes();
    let split = request.len() - 10;
    let mut in_flight = must_connect_tls(moat.port, &moat.ca_pem());
    in_flight.write_all(&request[..split]).unwrap();
    in_flight.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    common::signal(moat.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    in_flight.write_all(&request[split..]).unwrap();
    let finished = must_read_response(&mut in_flight);
    assert_eq!(finished.status, 200, "{}", finished.body);
    assert!(finished.body.contains(&arn));
    let request_id = finished.request_id();
    assert!(moat.must_stop(), "moat exits with success after SIGTERM");
    let audit = moat.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["request_id"] == request_id.as_str() && l["outcome"] == "allowed"),
        "the in-flight request was audited before exit"
    );

    // A restart keeps the CA, the credentials and the account.
    let ca_before = moat.ca_pem();
    let creds_before = moat.root_credentials();
    let account_before = moat.account.clone();
    drop(moat);
    let moat = Moat::must_start(dir.path());
    assert_eq!(moat.ca_pem(), ca_before);
    assert_eq!(moat.root_credentials(), creds_before);
    assert_eq!(moat.account, account_before);
    assert_eq!(must_get_caller_arn(&moat).await, arn);
}

#[tokio::test(flavor = "multi_thread")]
async fn root_credentials_and_account_can_come_from_the_environment() {
    let dir = TempDir::new("env");
    let key = "AKIAMOATCITESTKEY001";
    let secret = "ciSecretKeyForTestsOnly0123456789abcdefgh";
    let moat = Moat::must_start_with(
        dir.path(),
        &[],
        &[
            ("MOAT_ROOT_ACCESS_KEY_ID", key),
            ("MOAT_ROOT_SECRET_ACCESS_KEY", secret),
            ("MOAT_ACCOUNT_ID", "111122223333"),
        ],
    );
    assert_eq!(moat.account, "111122223333");
    let client = sts_client(&moat, moat_ca_only(&moat), (key, secret));
    let out = client.get_caller_identity().send().await.unwrap();
    assert_eq!(out.arn(), Some("arn:aws:iam::111122223333:root"));
    // The secret never reaches the audit log.
    let log = std::fs::read_to_string(dir.path().join("audit/audit.log")).unwrap_or_default();
    assert!(!log.contains(secret));
}

/// Also: one server per data directory, and no master-key rotation under
/// a running one.
#[test]
fn plain_http_needs_the_flag_and_a_loopback_address() {
    let dir = TempDir::new("plain");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "serve",
            "--plain-http",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));

    let moat = Moat::must_start_with(dir.path(), &["--plain-http"], &[]);
    assert!(moat.endpoint.starts_with("http://127.0.0.1:"));
    for args in [
        &["serve", "--plain-http", "--listen", "127.0.0.1:0"][..],
        &["rotate-master-key", "--new-master-key-file", "new.key"],
    ] {
        let said = must_fail_soon(
            std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
                .current_dir(dir.path())
                .args(args)
                .arg("--data-dir")
                .arg(dir.path()),
        );
        assert!(
            said.contains("another Moat is using the data directory"),
            "{said}"
        );
    }
    assert!(!dir.path().join("new.key").exists());
    let (id, secret) = moat.root_credentials();
    let request =
        RawRequest::sts_get_caller_identity(moat.port).signed(&Signer::new(&id, &secret, "sts"));
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
    sock.write_all(&request.to_bytes()).unwrap();
    let resp = must_read_response(&mut sock);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp
        .body
        .contains(&format!("arn:aws:iam::{}:root", moat.account)));
}

/// Runs a command that should stop with an error within seconds (a second
/// server that started would not stop); its stderr.
fn must_fail_soon(command: &mut std::process::Command) -> String {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            let mut said = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut said)
                .unwrap();
            return said;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("still running after 10 s: {command:?}");
}

fn http_get(base: &str, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let resp = must_read_response(&mut sock);
    assert_eq!(resp.status, 200);
    resp.body
}

fn tls_handshake(port: u16, ca_pem: &[u8], name: &str) -> Result<(), rustls::Error> {
    let config = common::client_config(ca_pem, &[&rustls::version::TLS13]);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.complete_io(&mut sock).map(|_| ()).map_err(|e| {
        e.into_inner()
            .and_then(|inner| inner.downcast::<rustls::Error>().ok())
            .map(|b| *b)
            .unwrap_or(rustls::Error::General("io".into()))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_certificate_names_and_a_users_own_certificate() {
    let a = TempDir::new("tls-a");
    let moat = Moat::must_start_with(a.path(), &["--tls-name", "moat.internal"], &[]);
    let ca = moat.ca_pem();
    tls_handshake(moat.port, &ca, "moat.internal").expect("the extra name is in the certificate");
    tls_handshake(moat.port, &ca, "localhost").expect("localhost always is");
    assert!(tls_handshake(moat.port, &ca, "other.internal").is_err());
    drop(moat);

    // Without the option the certificate is re-issued by the same CA, without the name.
    let moat = Moat::must_start(a.path());
    assert_eq!(moat.ca_pem(), ca);
    assert!(tls_handshake(moat.port, &ca, "moat.internal").is_err());
    tls_handshake(moat.port, &ca, "localhost").unwrap();
    drop(moat);

    // Private keys live in the encrypted store, not in files.
    assert!(!a.path().join("tls/server.key").exists() && !a.path().join("tls/ca.key").exists());

    // Another deployment serving a certificate and key the user supplies
    // (issued here by a CA of the user's own).
    let b = TempDir::new("tls-b");
    std::fs::create_dir_all(b.path()).unwrap();
    let user_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut user_ca = rcgen::CertificateParams::default();
    user_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    user_ca
        .distinguished_name
        .push(rcgen::DnType::CommonName, "user CA");
    let ca = user_ca
        .self_signed(&user_ca_key)
        .unwrap()
        .pem()
        .into_bytes();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &rcgen::Issuer::new(user_ca, &user_ca_key))
        .unwrap();
    let cert = b.path().join("user-cert.pem");
    let key = b.path().join("user-key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let moat_b = Moat::must_start_with(
        b.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !b.path().join("tls").exists(),
        "no CA is generated when the user brings a certificate"
    );
    let (id, secret) = moat_b.root_credentials();
    let client = sts_client(
        &moat_b,
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(ca),
        (&id, &secret),
    );
    let out = client
        .get_caller_identity()
        .send()
        .await
        .expect("trusting the user's CA");
    assert_eq!(out.account(), Some(moat_b.account.as_str()));
}
