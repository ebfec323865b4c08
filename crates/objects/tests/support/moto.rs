//! moto's server (PyPI `moto[server]`, which `scripts/test` installs) as a
//! real S3-compatible endpoint for tests, with signature checking on.
//! Shared by `moat-objects`' and `moat`'s tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto_server on a free port, ready to answer. Its first three requests
/// go unchecked (they make the IAM user); every later one must carry a valid
/// SigV4 signature of that user's key.
pub fn start_moto() -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server on PATH (scripts/test installs it)");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port)
}

/// An IAM query request, unsigned (moto's first requests need no signature).
fn iam_call(port: u16, params: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = format!("{params}&Version=2010-05-08");
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap() + open.len();
    &text[start..start + text[start..].find(close).unwrap()]
}

/// An administrator of moto's IAM: (access key id, secret).
pub fn moto_user(port: u16) -> (String, String) {
    iam_call(port, "Action=CreateUser&UserName=moat");
    let key = iam_call(port, "Action=CreateAccessKey&UserName=moat");
    iam_call(
        port,
        "Action=PutUserPolicy&UserName=moat&PolicyName=s3&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D",
    );
    (
        between(&key, "<AccessKeyId>", "</AccessKeyId>").to_owned(),
        between(&key, "<SecretAccessKey>", "</SecretAccessKey>").to_owned(),
    )
}
