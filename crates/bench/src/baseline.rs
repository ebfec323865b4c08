//! The bare baseline: an HTTP/1.1 server that does no work, answering a
//! GetItem with a fixed GetItem-sized JSON body and every other request with
//! `{}` (what Moat answers a PutItem with), over the same TLS policy as
//! Moat's edge or over plain HTTP. It is the practical limit of the machine
//! for each workload: a put's request is larger than a get's and its answer
//! smaller, so the two limits differ (by about a fifth here).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A GetItem answer carrying a 1 KB item.
pub fn fixed_body() -> Bytes {
    let value = "x".repeat(1000);
    Bytes::from(
        serde_json::json!({"Item": {"pk": {"S": "item1"}, "sk": {"N": "0"}, "v": {"S": value}}})
            .to_string(),
    )
}

/// Starts the server; returns its address and, with TLS, the PEM of the
/// self-signed certificate clients must trust.
pub async fn start(listen: SocketAddr, tls: bool) -> Result<(SocketAddr, Option<String>), String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (acceptor, pem) = if tls {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let config =
            moat_edge::tls::server_config(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .map_err(|e| e.to_string())?;
        (
            Some(tokio_rustls::TlsAcceptor::from(config)),
            Some(cert.pem()),
        )
    } else {
        (None, None)
    };
    let body = fixed_body();
    let empty = Bytes::from_static(b"{}");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, body, empty) = (acceptor.clone(), body.clone(), empty.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let get_item = req
                        .headers()
                        .get("x-amz-target")
                        .is_some_and(|t| t.as_bytes().ends_with(b".GetItem"));
                    let body = if get_item {
                        body.clone()
                    } else {
                        empty.clone()
                    };
                    async move {
                        // Read the request body, as a real server must.
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/x-amz-json-1.0")
                                .body(Full::new(body))
                                .unwrap_or_default(),
                        )
                    }
                });
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    }
                }
            });
        }
    });
    Ok((addr, pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    #[tokio::test]
    async fn answers_a_get_item_with_an_item_and_anything_else_with_an_empty_object() {
        for tls in [true, false] {
            let (addr, pem) = start("127.0.0.1:0".parse().unwrap(), tls).await.unwrap();
            let scheme = if tls { "https" } else { "http" };
            let target = Target::new(
                &format!("{scheme}://{addr}"),
                pem.as_deref().map(str::as_bytes),
                "us-east-1",
                "AKIDEXAMPLE",
                "secret",
                None,
            )
            .unwrap();
            let mut conn = target.connect().await.unwrap();
            let (status, body) = conn.call("GetItem", br#"{"TableName":"t"}"#).await.unwrap();
            assert_eq!((status, body), (200, fixed_body().to_vec()));
            for operation in ["PutItem", "Query", "BatchWriteItem", "BatchGetItem"] {
                let (status, body) = conn.call(operation, br#"{"TableName":"t"}"#).await.unwrap();
                assert_eq!((status, body.as_slice()), (200, &b"{}"[..]), "{operation}");
            }
        }
    }
}
