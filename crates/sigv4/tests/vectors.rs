//! AWS's SigV4 test suite (tests/data/sigv4, see its SOURCE.md and LICENSE):
//! every signed request verifies, and every change to a signed part fails.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use moat_sigv4::{canonical_request, parse, verify, AmzDate, Error, PathRules, RequestParts};

struct Case {
    name: String,
    secret: String,
    access_key_id: String,
    token: Option<String>,
    now: i64,
    rules: PathRules,
    omit_session_token: bool,
    dir: PathBuf,
}

/// A request read from the suite's `*-signed-request.txt` text.
#[derive(Clone)]
struct RawRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawRequest {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }
}

fn cases() -> Vec<Case> {
    let root = Path::new(&manifest_dir()).join("tests/data/sigv4");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("context.json").exists() {
            continue;
        }
        let ctx: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("context.json")).unwrap())
                .unwrap();
        let ts = ctx["timestamp"].as_str().unwrap().replace(['-', ':'], "");
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            secret: ctx["credentials"]["secret_access_key"]
                .as_str()
                .unwrap()
                .into(),
            access_key_id: ctx["credentials"]["access_key_id"].as_str().unwrap().into(),
            token: ctx["credentials"]["token"].as_str().map(str::to_owned),
            now: AmzDate::parse(&ts).unwrap().unix_seconds(),
            rules: PathRules {
                normalize: ctx["normalize"].as_bool().unwrap(),
                double_encode: false,
            },
            omit_session_token: ctx["omit_session_token"].as_bool().unwrap_or(false),
            dir,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_request(path: &Path) -> RawRequest {
    let text = std::fs::read_to_string(path).unwrap();
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let (method, rest) = request_line.split_once(' ').unwrap();
    let target = rest.strip_suffix(" HTTP/1.1").unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    // Unfold obsolete line folding: a line starting with white space continues the previous value.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').unwrap();
            fields.push((name.to_owned(), value.to_owned()));
        }
    }
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    RawRequest {
        method: method.to_owned(),
        path,
        query,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

fn check(case: &Case, req: &RawRequest, secret: &str) -> Result<(), Error> {
    let parts = req.parts();
    let signed = parse(&parts)?.expect("the request is signed");
    verify(&parts, &signed, secret.as_bytes(), case.now, case.rules).map(|_| ())
}

/// Every way of changing a signed part of `req`, each named for the failure message.
/// `token_unsigned`: the session token was added after signing (the
/// sts-header-after case), so changing it is not a change to a signed part.
fn mutations(req: &RawRequest, token_unsigned: bool) -> Vec<(String, RawRequest)> {
    let mut out = Vec::new();
    let signed = parse(&req.parts()).unwrap().unwrap();

    let mut m = req.clone();
    m.method = if req.method == "GET" { "POST" } else { "GET" }.into();
    out.push(("method".into(), m));

    let mut m = req.clone();
    m.path = format!("{}x", req.path);
    out.push(("path".into(), m));

    let mut m = req.clone();
    m.query = Some(match &req.query {
        Some(q) => format!("{q}&extra=1"),
        None => "extra=1".into(),
    });
    out.push(("added query parameter".into(), m));

    if let Some(q) = &req.query {
        let params: Vec<&str> = q.split('&').collect();
        for (i, p) in params.iter().enumerate() {
            let name = p.split('=').next().unwrap();
            if name == "X-Amz-Signature"
                || name == "X-Amz-Algorithm"
                || (token_unsigned && name == "X-Amz-Security-Token")
            {
                continue;
            }
            let mut changed = params.clone();
            let replaced = if name == "X-Amz-Date" {
                // Still inside the clock window, so only the signature can fail.
                format!(
                    "X-Amz-Date={}",
                    AmzDate::from_unix_seconds(signed.date.unix_seconds() + 1)
                )
            } else if name == "X-Amz-Credential" {
                p.replace("AKIDEXAMPLE", "AKIDEXAMPLF")
            } else {
                format!("{p}0")
            };
            changed[i] = &replaced;
            let mut m = req.clone();
            m.query = Some(changed.join("&"));
            out.push((format!("query parameter {name}"), m));
        }
    }

    for name in signed.signed_headers() {
        let mut m = req.clone();
        let value = if name == "x-amz-date" {
            AmzDate::from_unix_seconds(signed.date.unix_seconds() + 1).to_string()
        } else {
            let old = req
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap())
                .unwrap_or("");
            format!("{old}0")
        };
        m.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
        out.push((format!("header {name}"), m));
    }

    let mut m = req.clone();
    m.body.push(b'!');
    out.push(("body".into(), m));

    if let Some(auth) = req.headers.get("authorization") {
        let text = auth.to_str().unwrap();
        let last = text.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &text[..text.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        let mut m = req.clone();
        m.headers
            .insert("authorization", HeaderValue::from_str(&flipped).unwrap());
        out.push(("signature".into(), m));
    }
    out
}

fn run_kind(kind: &str) {
    let cases = cases();
    assert_eq!(cases.len(), 38, "the suite has 38 cases");
    for case in &cases {
        let req = read_request(&case.dir.join(format!("{kind}-signed-request.txt")));
        let parts = req.parts();
        let signed = parse(&parts).unwrap().unwrap();
        assert_eq!(signed.scope.access_key_id, case.access_key_id);
        if !case.omit_session_token {
            let expected =
                std::fs::read_to_string(case.dir.join(format!("{kind}-canonical-request.txt")))
                    .unwrap();
            assert_eq!(
                canonical_request(&parts, &signed, case.rules).unwrap(),
                expected,
                "{} ({kind}): canonical request",
                case.name
            );
        }
        if let Some(token) = &case.token {
            if !case.omit_session_token || kind == "query" {
                assert_eq!(
                    signed.security_token.as_deref(),
                    Some(token.as_str()),
                    "{}",
                    case.name
                );
            }
        }
        check(case, &req, &case.secret)
            .unwrap_or_else(|e| panic!("{} ({kind}) must verify: {e}", case.name));
        assert_eq!(
            check(case, &req, &format!("{}x", case.secret)),
            Err(Error::Mismatch),
            "{} ({kind}): wrong secret",
            case.name
        );
        for (what, changed) in mutations(&req, case.omit_session_token) {
            assert!(
                check(case, &changed, &case.secret).is_err(),
                "{} ({kind}): changing the {what} must fail verification",
                case.name
            );
        }
    }
}

#[test]
fn header_signed_requests_verify_and_resist_tampering() {
    run_kind("header");
}

#[test]
fn presigned_requests_verify_and_resist_tampering() {
    run_kind("query");
}

#[test]
fn signing_time_outside_the_window_is_refused() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "get-vanilla")
        .unwrap();
    let req = read_request(&case.dir.join("header-signed-request.txt"));
    let parts = req.parts();
    let signed = parse(&parts).unwrap().unwrap();
    let late = verify(
        &parts,
        &signed,
        case.secret.as_bytes(),
        case.now + 16 * 60,
        case.rules,
    );
    assert!(matches!(late, Err(Error::Expired { .. })), "{late:?}");
    assert_eq!(
        late.unwrap_err().to_string(),
        "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z (20150830T125200Z - 15 min.)"
    );
    let early = verify(
        &parts,
        &signed,
        case.secret.as_bytes(),
        case.now - 16 * 60,
        case.rules,
    );
    assert!(
        matches!(early, Err(Error::NotYetCurrent { .. })),
        "{early:?}"
    );
    assert!(verify(
        &parts,
        &signed,
        case.secret.as_bytes(),
        case.now + 14 * 60,
        case.rules
    )
    .is_ok());

    let presigned = read_request(&case.dir.join("query-signed-request.txt"));
    let parts = presigned.parts();
    let signed = parse(&parts).unwrap().unwrap();
    assert_eq!(signed.expires, Some(3600));
    assert!(verify(
        &parts,
        &signed,
        case.secret.as_bytes(),
        case.now + 3599,
        case.rules
    )
    .is_ok());
    assert_eq!(
        verify(
            &parts,
            &signed,
            case.secret.as_bytes(),
            case.now + 3601,
            case.rules
        )
        .err(),
        Some(Error::PresignExpired)
    );
}

/// The package directory, read when the test runs: a target directory
/// shared by checkouts at other paths may hold a binary built elsewhere.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
