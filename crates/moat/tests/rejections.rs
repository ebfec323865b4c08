//! Every way in that is not a valid signature is refused with the exact AWS
//! error code of the request's protocol, and audited with that code.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use common::{Moat, RawRequest, RawResponse, Signer, TempDir};

struct Case {
    name: &'static str,
    request: RawRequest,
    status: u16,
    code: &'static str,
    message_contains: &'static str,
}

fn must_check(moat: &Moat, case: &Case) -> RawResponse {
    let resp = case.request.send(moat.port, &moat.ca_pem());
    assert_eq!(
        (resp.status, resp.error_code().as_str()),
        (case.status, case.code),
        "{}: {}",
        case.name,
        resp.body
    );
    assert!(
        resp.body.contains(case.message_contains),
        "{}: message should contain {:?}: {}",
        case.name,
        case.message_contains,
        resp.body
    );
    let line = moat.must_find_audit(&resp.request_id());
    assert_eq!(
        line["error_code"], case.code,
        "{}: audit line {line}",
        case.name
    );
    assert_eq!(line["status"], case.status, "{}", case.name);
    assert_ne!(line["outcome"], "allowed", "{}", case.name);
    resp
}

#[test]
fn bad_signatures_get_the_aws_error_of_each_protocol() {
    let dir = TempDir::new("rejections");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let port = moat.port;
    let sts = || RawRequest::sts_get_caller_identity(port);
    let ddb = || RawRequest::dynamodb(port, "ListTables", "{}");
    let root = |service: &str| Signer::new(&id, &secret, service);
    let now = SystemTime::now();

    // Positive controls: the same requests, correctly signed, pass authentication.
    let ok = sts().signed(&root("sts")).send(port, &moat.ca_pem());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("<GetCallerIdentityResponse"));
    let mut presigned_signer = root("sts");
    presigned_signer.presign_expires = Some(Duration::from_secs(300));
    let mut presigned = sts();
    presigned.method = "GET".into();
    presigned.target = "/?Action=GetCallerIdentity&Version=2011-06-15".into();
    presigned.body.clear();
    presigned.headers.retain(|(k, _)| k != "content-type");
    let presigned_ok = presigned
        .clone()
        .signed(&presigned_signer)
        .send(port, &moat.ca_pem());
    assert_eq!(presigned_ok.status, 200, "presigned: {}", presigned_ok.body);
    let ddb_known = ddb().signed(&root("dynamodb")).send(port, &moat.ca_pem());
    assert_eq!(
        ddb_known.status, 200,
        "signed ListTables: {}",
        ddb_known.body
    );

    let mut cases = vec![
        Case {
            name: "no signature (query)",
            request: sts(),
            status: 403,
            code: "MissingAuthenticationToken",
            message_contains: "Request is missing Authentication Token",
        },
        Case {
            name: "no signature (JSON)",
            request: ddb(),
            status: 400,
            code: "MissingAuthenticationTokenException",
            message_contains: "Request is missing Authentication Token",
        },
        Case {
            name: "unknown access key (query)",
            request: sts().signed(&Signer::new("AKIAIOSFODNN7EXAMPLE", &secret, "sts")),
            status: 403,
            code: "InvalidClientTokenId",
            message_contains: "The security token included in the request is invalid",
        },
        Case {
            name: "unknown access key (JSON)",
            request: ddb().signed(&Signer::new("AKIAIOSFODNN7EXAMPLE", &secret, "dynamodb")),
            status: 400,
            code: "UnrecognizedClientException",
            message_contains: "The security token included in the request is invalid",
        },
        Case {
            name: "wrong secret (query)",
            request: sts().signed(&Signer::new(
                &id,
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "sts",
            )),
            status: 403,
            code: "SignatureDoesNotMatch",
            message_contains: "does not match the signature you provided",
        },
        Case {
            name: "wrong secret (JSON)",
            request: ddb().signed(&Signer::new(
                &id,
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "dynamodb",
            )),
            status: 400,
            code: "InvalidSignatureException",
            message_contains: "does not match the signature you provided",
        },
        Case {
            name: "session token with a long-term key",
            request: {
                let mut r = sts();
                r.set_header("x-amz-security-token", "FQoGZXIvYXdzEBYaDEXAMPLETOKEN");
                r.signed(&root("sts"))
            },
            status: 403,
            code: "InvalidClientTokenId",
            message_contains: "security token",
        },
        Case {
            name: "signing time 16 minutes old",
            request: sts().signed(&Signer {
                time: now - Duration::from_secs(16 * 60),
                ..root("sts")
            }),
            status: 403,
            code: "SignatureDoesNotMatch",
            message_contains: "Signature expired:",
        },
        Case {
            name: "signing time 16 minutes ahead (JSON)",
            request: ddb().signed(&Signer {
                time: now + Duration::from_secs(16 * 60),
                ..root("dynamodb")
            }),
            status: 400,
            code: "InvalidSignatureException",
            message_contains: "Signature not yet current:",
        },
        Case {
            name: "presigned URL expired",
            request: presigned.clone().signed(&Signer {
                time: now - Duration::from_secs(20 * 60),
                presign_expires: Some(Duration::from_secs(300)),
                ..root("sts")
            }),
            status: 403,
            code: "SignatureDoesNotMatch",
            message_contains: "expired",
        },
        Case {
            name: "scope region not served",
            request: sts().signed(&Signer {
                region: "mars-west-1".into(),
                ..root("sts")
            }),
            status: 403,
            code: "SignatureDoesNotMatch",
            message_contains: "Credential should be scoped to a valid region",
        },
        Case {
            name: "scope service unknown",
            request: sts().signed(&root("s4")),
            status: 403,
            code: "SignatureDoesNotMatch",
            message_contains: "Credential should be scoped to correct service",
        },
        Case {
            name: "Authorization header without a signature",
            request: {
                let mut r = sts();
                r.set_header("x-amz-date", "20261129T120000Z");
                r.set_header(
                    "authorization",
                    &format!("AWS4-HMAC-SHA256 Credential={id}/20261129/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date"),
                );
                r
            },
            status: 400,
            code: "IncompleteSignature",
            message_contains: "Authorization header requires 'Signature' parameter.",
        },
        Case {
            name: "unknown action",
            request: {
                let mut r = sts();
                r.body = b"Action=GetCallerIdentityX&Version=2011-06-15".to_vec();
                r.signed(&root("sts"))
            },
            status: 400,
            code: "InvalidAction",
            message_contains: "Could not find operation GetCallerIdentityX for version 2011-06-15",
        },
        Case {
            name: "missing action",
            request: {
                let mut r = sts();
                r.body = b"Version=2011-06-15".to_vec();
                r.signed(&root("sts"))
            },
            status: 400,
            code: "MissingAction",
            message_contains: "missing an action",
        },
    ];

    // Tampering after signing: the body, a signed header, the signing date.
    let signed = sts().signed(&root("sts"));
    let mut body_changed = signed.clone();
    body_changed.body = b"Action=GetCallerIdentity&Version=2011-06-16".to_vec();
    cases.push(Case {
        name: "body changed after signing",
        request: body_changed,
        status: 403,
        code: "SignatureDoesNotMatch",
        message_contains: "does not match",
    });
    let mut header_changed = signed.clone();
    header_changed.set_header("content-type", "application/x-www-form-urlencoded");
    cases.push(Case {
        name: "signed header changed after signing",
        request: header_changed,
        status: 403,
        code: "SignatureDoesNotMatch",
        message_contains: "does not match",
    });
    let mut date_changed = signed.clone();
    let date = date_changed
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-date"))
        .unwrap()
        .1
        .clone();
    let last = date.as_bytes()[date.len() - 2];
    let bumped = format!(
        "{}{}Z",
        &date[..date.len() - 2],
        if last == b'0' { '1' } else { '0' }
    );
    date_changed.set_header("x-amz-date", &bumped);
    cases.push(Case {
        name: "signing date changed after signing",
        request: date_changed,
        status: 403,
        code: "SignatureDoesNotMatch",
        message_contains: "does not match",
    });
    let mut ddb_body_changed = ddb().signed(&root("dynamodb"));
    ddb_body_changed.body = b"{\"Limit\":1}".to_vec();
    cases.push(Case {
        name: "JSON body changed after signing",
        request: ddb_body_changed,
        status: 400,
        code: "InvalidSignatureException",
        message_contains: "does not match",
    });

    for case in &cases {
        must_check(&moat, case);
    }

    // A body over the limit is refused before it is read.
    let mut sock = common::must_connect_tls(port, &moat.ca_pem());
    sock.write_all(
        format!(
            "POST / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-amz-target: DynamoDB_20120810.PutItem\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{{",
            17 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    let big = common::must_read_response(&mut sock);
    assert_eq!(
        (big.status, big.error_code().as_str()),
        (413, "RequestEntityTooLargeException")
    );
    assert_eq!(
        moat.must_find_audit(&big.request_id())["error_code"],
        "RequestEntityTooLargeException"
    );
}

#[test]
fn only_tls_1_2_and_1_3_are_spoken() {
    let dir = TempDir::new("tls");
    let moat = Moat::must_start(dir.path());

    // Plain HTTP to the TLS port: a readable refusal, audited.
    let mut sock = TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let plain = common::must_read_response(&mut sock);
    assert_eq!(plain.status, 400);
    assert!(plain.body.contains("HTTPS only"), "{}", plain.body);
    assert_eq!(
        moat.must_find_audit(&plain.request_id())["error_code"],
        "HttpRequestOnHttpsPort"
    );

    // A client that offers only TLS 1.1 gets a protocol_version alert and no ServerHello.
    let mut sock = TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(&tls11_client_hello()).unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    assert!(answer.len() >= 7, "an alert record: {answer:?}");
    assert_eq!(
        answer[0], 0x15,
        "a TLS alert record, not a handshake: {answer:?}"
    );
    assert_eq!(answer[5], 2, "fatal");
    assert_eq!(answer[6], 70, "protocol_version");

    // TLS 1.2 alone and TLS 1.3 alone both work, with forward-secret AEAD suites.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = common::client_config(&moat.ca_pem(), &[version]);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut sock = TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
        conn.complete_io(&mut sock).unwrap();
        let suite = conn.negotiated_cipher_suite().unwrap();
        let suite_name = format!("{:?}", suite.suite());
        assert!(
            suite_name.contains("GCM") || suite_name.contains("CHACHA20"),
            "{suite_name}"
        );
        if version == &rustls::version::TLS12 {
            assert!(suite_name.starts_with("TLS_ECDHE_"), "{suite_name}");
        }
    }
}

/// A minimal TLS 1.1 ClientHello offering only TLS 1.1-era suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
                  // One suite Moat does support (so only the version can be the reason for
                  // refusal) and two CBC suites of the TLS 1.1 era.
    body.extend_from_slice(&[0x00, 0x06, 0xC0, 0x2B, 0xC0, 0x13, 0x00, 0x2F]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
                                           // signature_algorithms (ecdsa_secp256r1_sha256) and supported_groups
                                           // (x25519, secp256r1), so that certificate selection succeeds and only
                                           // the protocol version is left to refuse.
    let extensions: &[u8] = &[
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, //
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17,
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
