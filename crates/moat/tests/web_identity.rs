//! Web identity federation end to end: a test OpenID Connect issuer served
//! over HTTPS on loopback, tokens it signs turned into role credentials by
//! the unsigned `AssumeRoleWithWebIdentity`, and every kind of bad token refused.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use aws_sdk_sts::error::ProvideErrorMetadata;
use common::{Moat, TempDir};
use http_body_util::Full;
use hyper::body::Bytes;
use moat_sts::jwt::base64url_encode as b64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

#[path = "common/sdk.rs"]
mod sdk;
use sdk::{iam_client, sts_client_anonymous};

/// An OpenID Connect issuer whose key set the test can change.
struct Issuer {
    url: String,
    ca_pem: String,
    keys: Arc<Mutex<Vec<Value>>>,
}

async fn start_issuer() -> Issuer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test issuer CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let certs = vec![leaf.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("https://localhost:{port}");
    let keys: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (served_keys, base) = (keys.clone(), url.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, keys, base) = (acceptor.clone(), served_keys.clone(), base.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => {
                                json!({"issuer": base, "jwks_uri": format!("{base}/keys")})
                            }
                            "/keys" => json!({"keys": keys.lock().unwrap().clone()}),
                            _ => json!({}),
                        };
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Issuer {
        url,
        ca_pem: ca_cert.pem(),
        keys,
    }
}

/// A token signer: RS256 (an RSA key made by openssl) or ES256.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    fn rsa(dir: &std::path::Path) -> (Signer, Value) {
        let path = dir.join("rsa.der");
        // ring makes no RSA keys, so openssl does (PKCS#1 DER, which ring reads).
        let pem = dir.join("rsa.pem");
        for args in [
            vec![
                "genrsa",
                "-traditional",
                "-out",
                pem.to_str().unwrap(),
                "2048",
            ],
            vec![
                "rsa",
                "-in",
                pem.to_str().unwrap(),
                "-traditional",
                "-outform",
                "DER",
                "-out",
                path.to_str().unwrap(),
            ],
        ] {
            let out = std::process::Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pair = RsaKeyPair::from_der(&std::fs::read(&path).unwrap()).unwrap();
        let components: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwk = json!({
            "kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig",
            "n": b64(&components.n),
            "e": b64(&components.e),
        });
        (Signer::Rsa(pair), jwk)
    }

    fn ec(kid: &str) -> (Signer, Value) {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": b64(&public[1..33]), "y": b64(&public[33..65]),
        });
        (Signer::Ec(pair), jwk)
    }

    fn token(&self, kid: &str, claims: &Value) -> String {
        let alg = match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        };
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg, "kid": kid, "typ": "JWT"})
                .to_string()
                .as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn code<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded where an error was expected"),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn web_identity_tokens_become_role_credentials() {
    let issuer = start_issuer().await;
    let dir = TempDir::new("webid");
    std::fs::create_dir_all(dir.path()).unwrap();
    let ca_path = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_path, &issuer.ca_pem).unwrap();
    std::fs::write(
        dir.path().join("moat.toml"),
        format!("oidc_ca_bundle = \"{}\"\n", ca_path.display()),
    )
    .unwrap();
    let (rsa, rsa_jwk) = Signer::rsa(dir.path());
    let (ec, ec_jwk) = Signer::ec("ec1");
    issuer.keys.lock().unwrap().extend([rsa_jwk, ec_jwk]);

    let moat = Moat::must_start(dir.path());
    let account = moat.account.clone();
    let (id, secret) = moat.root_credentials();
    let iam = iam_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let host = issuer.url.trim_start_matches("https://").to_owned();

    let provider = iam
        .create_open_id_connect_provider()
        .url(&issuer.url)
        .client_id_list("moat-app")
        .client_id_list("other-app")
        .send()
        .await
        .unwrap();
    let provider_arn = provider.open_id_connect_provider_arn().unwrap().to_owned();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{host}:aud"): "moat-app"}}
        }]
    });
    iam.create_role()
        .role_name("web")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let permissions = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "iam:GetUser",
            "Resource": format!("arn:aws:iam::{account}:user/${{{host}:sub}}")
        }]
    });
    iam.put_role_policy()
        .role_name("web")
        .policy_name("own-user")
        .policy_document(permissions.to_string())
        .send()
        .await
        .unwrap();
    iam.create_user().user_name("u-123").send().await.unwrap();
    iam.create_user().user_name("other").send().await.unwrap();

    let claims = |aud: &str, exp: i64| json!({"iss": issuer.url, "sub": "u-123", "aud": aud, "iat": now() - 10, "exp": exp});
    let role_arn = format!("arn:aws:iam::{account}:role/web");
    let sts = sts_client_anonymous(&moat);
    let assume = |token: String| {
        sts.assume_role_with_web_identity()
            .role_arn(&role_arn)
            .role_session_name("web-session")
            .web_identity_token(token)
            .send()
    };

    // A good RS256 token: credentials whose policy uses ${HOST:sub}.
    let out = assume(rsa.token("rsa1", &claims("moat-app", now() + 600)))
        .await
        .unwrap();
    assert_eq!(out.subject_from_web_identity_token(), Some("u-123"));
    assert_eq!(out.audience(), Some("moat-app"));
    assert_eq!(
        out.assumed_role_user().unwrap().arn(),
        format!("arn:aws:sts::{account}:assumed-role/web/web-session")
    );
    let c = out.credentials().unwrap();
    let session = iam_client(
        &moat,
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "web",
        ),
    );
    assert!(session.get_user().user_name("u-123").send().await.is_ok());
    assert_eq!(
        code(session.get_user().user_name("other").send().await),
        "AccessDenied"
    );

    // ES256 works too.
    assert!(assume(ec.token("ec1", &claims("moat-app", now() + 600)))
        .await
        .is_ok());

    // Refusals: expired, wrong audience, audience the trust policy does not
    // accept, altered signature, alg none, unknown issuer.
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("moat-app", now() - 3600))).await),
        "ExpiredTokenException"
    );
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("someone-else", now() + 600))).await),
        "InvalidIdentityToken"
    );
    assert_eq!(
        code(assume(rsa.token("rsa1", &claims("other-app", now() + 600))).await),
        "AccessDenied"
    );
    let good = rsa.token("rsa1", &claims("moat-app", now() + 600));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(
        json!({"iss": issuer.url, "sub": "other", "aud": "moat-app", "exp": now() + 600})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &forged_payload;
    assert_eq!(code(assume(parts.join(".")).await), "InvalidIdentityToken");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa1"}"#),
        b64(claims("moat-app", now() + 600).to_string().as_bytes())
    );
    assert_eq!(code(assume(none).await), "InvalidIdentityToken");
    let stranger = json!({"iss": "https://stranger.example", "sub": "u-123", "aud": "moat-app", "exp": now() + 600});
    assert_eq!(
        code(assume(rsa.token("rsa1", &stranger)).await),
        "InvalidIdentityToken"
    );

    // The issuer rotates in a new key: Moat fetches the key set again for the unknown kid.
    let (ec2, ec2_jwk) = Signer::ec("ec2");
    issuer.keys.lock().unwrap().push(ec2_jwk);
    assert!(assume(ec2.token("ec2", &claims("moat-app", now() + 600)))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_sets_can_come_from_files_for_sites_without_a_way_out() {
    let dir = TempDir::new("webid-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let (ec, jwk) = Signer::ec("offline-1");
    let jwks_path = dir.path().join("offline-jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();
    let issuer = "https://idp.offline.invalid";
    std::fs::write(
        dir.path().join("moat.toml"),
        format!(
            "[oidc_jwks_files]\n\"{issuer}\" = \"{}\"\n",
            jwks_path.display()
        ),
    )
    .unwrap();
    let moat = Moat::must_start(dir.path());
    let account = moat.account.clone();
    let (id, secret) = moat.root_credentials();
    let iam = iam_client(&moat, Credentials::new(id, secret, None, None, "root"));
    let provider = iam
        .create_open_id_connect_provider()
        .url(issuer)
        .client_id_list("kiosk")
        .send()
        .await
        .unwrap();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider.open_id_connect_provider_arn().unwrap()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringLike": {"idp.offline.invalid:sub": "kiosk-*"}}
        }]
    });
    iam.create_role()
        .role_name("kiosk")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let sts = sts_client_anonymous(&moat);
    let token = |sub: &str| {
        ec.token(
            "offline-1",
            &json!({"iss": issuer, "sub": sub, "aud": "kiosk", "exp": now() + 600}),
        )
    };
    let out = sts
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::{account}:role/kiosk"))
        .role_session_name("k1")
        .web_identity_token(token("kiosk-7"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.subject_from_web_identity_token(), Some("kiosk-7"));
    let refused = sts
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::{account}:role/kiosk"))
        .role_session_name("k2")
        .web_identity_token(token("visitor"))
        .send()
        .await;
    assert_eq!(code(refused), "AccessDenied");
}
