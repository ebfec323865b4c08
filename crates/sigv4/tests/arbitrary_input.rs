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
