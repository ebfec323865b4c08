//! A thousand malformed requests of many kinds, and the server still answers a good one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{must_connect_tls, Moat, RawRequest, Signer, TempDir};

/// A small deterministic generator, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max` printable characters.
    fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| (b' ' + (self.next() % 95) as u8) as char)
            .collect()
    }
}

/// A malformed request, and whether the server answers it at once (a body
/// that never arrives in full is answered only when the client gives up).
fn malformed(rng: &mut Rng, port: u16, key_id: &str) -> (Vec<u8>, bool) {
    let host = format!("host: 127.0.0.1:{port}\r\n");
    let kind = rng.below(10);
    let bytes = match kind {
        // Garbage instead of HTTP.
        0 => rng.bytes(2000),
        // A broken request line.
        1 => format!("{}\r\n{host}\r\n", rng.text(200)).into_bytes(),
        // A garbage Authorization header.
        2 => format!(
            "POST / HTTP/1.1\r\n{host}authorization: {}\r\ncontent-length: 0\r\n\r\n",
            rng.text(300)
        )
        .into_bytes(),
        // A plausible but wrong signature with odd scopes.
        3 => format!(
            "POST / HTTP/1.1\r\n{host}x-amz-date: 20261129T000000Z\r\nauthorization: AWS4-HMAC-SHA256 Credential={key_id}/{}/{}/{}/aws4_request, SignedHeaders=host;x-amz-date, Signature={}\r\ncontent-length: 0\r\n\r\n",
            rng.text(8).replace(['/', ' ', ','], "x"),
            rng.text(20).replace(['/', ' ', ','], "x"),
            ["sts", "dynamodb", "kms", "iam", "nope"][rng.below(5)],
            "0".repeat(64)
        )
        .into_bytes(),
        // A random X-Amz-Target with random JSON-ish bytes.
        4 => {
            let body = rng.bytes(500);
            let mut out = format!(
                "POST / HTTP/1.1\r\n{host}x-amz-target: {}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n",
                rng.text(60),
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            out
        }
        // Random form bodies.
        5 => {
            let body = rng.bytes(500);
            let mut out = format!(
                "POST / HTTP/1.1\r\n{host}content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            out
        }
        // A head far over the size limit.
        6 => format!("GET / HTTP/1.1\r\n{host}x-big: {}\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        // A content-length that lies (the body never comes in full).
        7 => format!("POST / HTTP/1.1\r\n{host}content-length: 100\r\n\r\nshort").into_bytes(),
        // A nonsense content-length.
        8 => format!("POST / HTTP/1.1\r\n{host}content-length: -5\r\n\r\n").into_bytes(),
        // Deeply nested JSON.
        _ => {
            let body = "[".repeat(5000);
            format!(
                "POST / HTTP/1.1\r\n{host}x-amz-target: DynamoDB_20120810.PutItem\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    };
    (bytes, kind != 7)
}

#[test]
fn a_thousand_malformed_requests_leave_the_server_answering() {
    let dir = TempDir::new("robust");
    let moat = Moat::must_start(dir.path());
    let (id, secret) = moat.root_credentials();
    let ca = moat.ca_pem();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..1000 {
        let (bytes, answered) = malformed(&mut rng, moat.port, &id);
        if i % 10 == 0 {
            // Straight onto TCP: the plain-HTTP refusal or a failed handshake.
            let mut sock = TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = sock.write_all(&bytes);
            let _ = sock.shutdown(std::net::Shutdown::Write);
            let _ = sock.read(&mut [0u8; 1024]);
        } else {
            let mut tls = must_connect_tls(moat.port, &ca);
            tls.sock
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = tls.write_all(&bytes);
            let _ = tls.flush();
            if answered {
                let _ = tls.read(&mut [0u8; 4096]);
            }
        }
    }
    let resp = RawRequest::sts_get_caller_identity(moat.port)
        .signed(&Signer::new(&id, &secret, "sts"))
        .send(moat.port, &ca);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp
        .body
        .contains(&format!("arn:aws:iam::{}:root", moat.account)));
    // Every malformed request was audited as refused (the writer is asynchronous).
    let mut refused = 0;
    for _ in 0..100 {
        refused = moat
            .audit_lines()
            .iter()
            .filter(|l| l["outcome"] != "allowed")
            .count();
        if refused >= 1000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(refused, 1000, "every malformed request has an audit line");
    assert!(!std::fs::read_to_string(dir.path().join("audit/audit.log"))
        .unwrap()
        .contains(&secret));
}

#[test]
fn slow_clients_are_timed_out() {
    let dir = TempDir::new("slow");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("moat.toml"),
        "handshake_timeout_secs = 1\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n",
    )
    .unwrap();
    let moat = Moat::must_start(dir.path());
    let ca = moat.ca_pem();
    let closed_within = |stream: &mut dyn Read| {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!(
                        "the server kept a silent connection open for {:?}",
                        start.elapsed()
                    )
                }
                Err(_) => break,
            }
        }
        start.elapsed()
    };

    // A TCP connection that never starts a TLS handshake.
    let mut silent = TcpStream::connect(("127.0.0.1", moat.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(closed_within(&mut silent) < Duration::from_secs(4));

    // A TLS connection that never sends a request head.
    let mut idle = must_connect_tls(moat.port, &ca);
    idle.conn.complete_io(&mut idle.sock).unwrap();
    idle.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(closed_within(&mut idle) < Duration::from_secs(4));

    // A head that stops half-way.
    let mut half = must_connect_tls(moat.port, &ca);
    half.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nhost: localhost\r\n")
        .unwrap();
    half.flush().unwrap();
    assert!(closed_within(&mut half) < Duration::from_secs(4));

    // A body that never arrives in full: 408 in the protocol's format.
    let mut slow = must_connect_tls(moat.port, &ca);
    slow.write_all(
        b"POST / HTTP/1.1\r\nhost: localhost\r\nx-amz-target: DynamoDB_20120810.GetItem\r\ncontent-length: 100\r\n\r\n{\"a\"",
    )
    .unwrap();
    slow.flush().unwrap();
    let resp = common::must_read_response(&mut slow);
    assert_eq!(
        (resp.status, resp.error_code().as_str()),
        (408, "RequestTimeoutException")
    );
    assert_eq!(
        moat.must_find_audit(&resp.request_id())["error_code"],
        "RequestTimeoutException"
    );

    // The server still answers.
    let (id, secret) = moat.root_credentials();
    let ok = RawRequest::sts_get_caller_identity(moat.port)
        .signed(&Signer::new(&id, &secret, "sts"))
        .send(moat.port, &ca);
    assert_eq!(ok.status, 200);

    // Audited: the half head and the slow body; not the silent or idle connections,
    // which sent no request at all.
    moat.must_find_audit(&ok.request_id());
    let codes: Vec<String> = moat
        .audit_lines()
        .iter()
        .map(|l| l["error_code"].as_str().unwrap_or("none").to_owned())
        .collect();
    assert_eq!(codes, ["RequestTimeout", "RequestTimeoutException", "none"]);
}
