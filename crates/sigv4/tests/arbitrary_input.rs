//! Arbitrary bytes in the Authorization header, the query string and the path
//! never panic the parser or the verifier.

use http::{HeaderMap, HeaderValue};
use moat_sigv4::{canonical_uri, parse, verify, PathRules, RequestParts};
use proptest::prelude::*;

fn headers(auth: &[u8], date: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    if let Ok(v) = HeaderValue::from_bytes(auth) {
        h.insert("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(date) {
        h.insert("x-amz-date", v);
    }
    h
}

fn exercise(path: &str, query: Option<&str>, headers: &HeaderMap, body: &[u8]) {
    let parts = RequestParts {
        method: "POST",
        path,
        query,
        headers,
        body,
    };
    if let Ok(Some(signed)) = parse(&parts) {
        let _ = verify(
            &parts,
            &signed,
            b"secret",
            1_440_938_160,
            PathRules::AWS_SERVICES,
        );
    }
}

#[test]
fn malformed_credentials_and_signatures_are_refused_with_their_reasons() {
    let parse_with = |credential: &str, signature: &str| {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host;x-amz-date, Signature={signature}"
        );
        let h = headers(auth.as_bytes(), b"20150830T123600Z");
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
            body: b"",
        };
        parse(&parts)
            .map(|s| s.map(|s| s.scope.clone()))
            .map_err(|e| e.to_string())
    };
    let good = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
    let signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    let scope = parse_with(good, signature).unwrap().unwrap();
    assert_eq!(
        (
            &*scope.access_key_id,
            &*scope.date,
            &*scope.region,
            &*scope.service
        ),
        ("AKIDEXAMPLE", "20150830", "us-east-1", "service")
    );
    assert!(parse_with(good, &signature.to_uppercase()).is_ok());
    for credential in [
        "AKIDEXAMPLE/20150830/us-east-1/service",
        "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request/extra",
        "AKIDEXAMPLE//20150830/us-east-1/service/aws4_request",
    ] {
        let e = parse_with(credential, signature).unwrap_err();
        assert!(e.contains("exactly 5 slash-delimited"), "{credential}: {e}");
    }
    let e = parse_with(
        "AKIDEXAMPLE/20150830/us-east-1/service/aws4_reqest",
        signature,
    )
    .unwrap_err();
    assert!(e.contains("valid terminator"), "{e}");
    for bad in [
        &signature[1..],
        &format!("{}g", &signature[1..]),
        &signature[2..],
        "+1",
    ] {
        let e = parse_with(good, bad).unwrap_err();
        assert!(e.contains("64 hexadecimal"), "{bad}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_authorization_headers(auth in proptest::collection::vec(any::<u8>(), 0..300),
                                       date in proptest::collection::vec(any::<u8>(), 0..20)) {
        exercise("/", None, &headers(&auth, &date), b"");
    }

    #[test]
    fn plausible_authorization_headers(
        cred in "[A-Za-z0-9/_ -]{0,60}",
        signed in "[a-z;= -]{0,40}",
        sig in "[0-9a-fA-Fx]{0,70}",
        date in "[0-9TZ]{0,17}",
    ) {
        let auth = format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders={signed}, Signature={sig}");
        exercise("/", None, &headers(auth.as_bytes(), date.as_bytes()), b"{}");
    }

    #[test]
    fn arbitrary_queries_and_paths(query in "\\PC{0,200}", path in "\\PC{0,100}") {
        let q = format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&{query}");
        exercise(&path, Some(&q), &headers(b"", b""), b"");
        let _ = canonical_uri(&path, PathRules::AWS_SERVICES);
        let _ = canonical_uri(&path, PathRules { normalize: false, double_encode: false });
    }
}
