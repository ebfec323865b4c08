//! A test OpenID Connect issuer: a key set served over HTTPS on loopback
//! (with a CA of its own) and a token signer. Shared by the web identity
//! tests and the fine-grained access control example.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use moat_sts::jwt::base64url_encode as b64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// An OpenID Connect issuer whose key set the test can change.
pub struct Issuer {
    pub url: String,
    pub ca_pem: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
}

pub async fn start_issuer() -> Issuer {
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
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    pub fn rsa(dir: &std::path::Path) -> (Signer, Value) {
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

    pub fn ec(kid: &str) -> (Signer, Value) {
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

    pub fn token(&self, kid: &str, claims: &Value) -> String {
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

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
