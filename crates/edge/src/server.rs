//! Listeners: accepting connections, TLS, HTTP/1.1, limits and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::codec::{self, Body};
use crate::pipeline::Edge;

/// Connection-level limits of a listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `None` serves plain HTTP (only ever on loopback: the caller checks).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time allowed for a TLS handshake, and for a request's head to arrive.
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Serves the AWS APIs on an already-bound listener until `shutdown` completes,
/// then stops accepting, lets in-flight requests finish (up to the grace
/// period) and returns.
pub async fn run(
    listener: TcpListener,
    edge: Arc<Edge>,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; when all are dropped, all are done.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let acceptor = config.tls.clone().map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let edge = edge.clone();
        let config = config.clone();
        let acceptor = acceptor.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
            let _ = stream.set_nodelay(true);
            match acceptor {
                Some(acceptor) => serve_tls(stream, remote, acceptor, edge, &config, stop).await,
                None => serve_http(stream, remote, false, edge, &config, stop).await,
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(config.shutdown_grace, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

async fn serve_tls(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    edge: Arc<Edge>,
    config: &ListenerConfig,
    stop: watch::Receiver<bool>,
) {
    // A TLS connection starts with a handshake record (0x16); anything else is
    // most likely plain HTTP sent to the HTTPS port, which gets a readable refusal.
    let mut first = [0u8; 1];
    match tokio::time::timeout(config.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return refuse_plaintext(stream, remote, &edge).await,
        _ => return,
    }
    let tls = match tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    serve_http(tls, remote, true, edge, config, stop).await;
}

async fn refuse_plaintext(mut stream: TcpStream, remote: SocketAddr, edge: &Edge) {
    // Read what the client already sent so that closing does not reset the
    // connection before it reads the answer.
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    let answer = edge.plaintext_refusal(remote).await;
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

/// Handles a request so that a client hanging up cannot cancel it half-way:
/// its effects and its audit line always complete. Most requests finish in
/// their first poll (a cached read, a denial), which runs here; one that has
/// to wait goes on in a task of its own, which the connection's end does not
/// drop. (A task for every request cost a tenth of GetItem's throughput:
/// BENCHMARKS.md.) None if the handler panicked.
async fn handle_uncancellable(
    edge: Arc<Edge>,
    req: http::Request<hyper::body::Incoming>,
    remote: SocketAddr,
    tls: bool,
) -> Option<http::Response<Body>> {
    let mut handling = Box::pin(async move { edge.handle(req, remote, tls).await });
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || handling.as_mut().poll(cx),
        )))
    })
    .await;
    match first {
        Ok(Poll::Ready(response)) => Some(response),
        Ok(Poll::Pending) => tokio::spawn(handling).await.ok(),
        Err(_) => None,
    }
}

async fn serve_http<I>(
    io: I,
    remote: SocketAddr,
    tls: bool,
    edge: Arc<Edge>,
    config: &ListenerConfig,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Bytes received so far, and how many of them had arrived when the last
    // request was answered: a head timeout with nothing new is an idle
    // keep-alive connection closing, not a refused request.
    let received = Arc::new(AtomicU64::new(0));
    let answered_at = Arc::new(AtomicU64::new(0));
    let io = CountingIo {
        inner: io,
        received: received.clone(),
    };
    let handler_edge = edge.clone();
    let (service_received, service_answered) = (received.clone(), answered_at.clone());
    let service = service_fn(move |req| {
        let edge = handler_edge.clone();
        let (received, answered_at) = (service_received.clone(), service_answered.clone());
        async move {
            let handled = handle_uncancellable(edge, req, remote, tls).await;
            answered_at.store(received.load(Ordering::Relaxed), Ordering::Relaxed);
            Ok::<_, Infallible>(handled.unwrap_or_else(|| {
                codec::respond(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    b"internal error\n".to_vec(),
                    "",
                )
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
                // hyper answered parse errors itself (400, 431) and closed the
                // connection of a head that stopped half-way; they are still audited.
                let refusal = if e.is_parse_too_large() {
                    Some((431, "RequestHeaderFieldsTooLarge"))
                } else if e.is_parse() || e.is_parse_status() {
                    Some((400, "MalformedHttpRequest"))
                } else if e.is_timeout()
                    && received.load(Ordering::Relaxed) > answered_at.load(Ordering::Relaxed)
                {
                    Some((408, "RequestTimeout"))
                } else {
                    None
                };
                if let Some((status, code)) = refusal {
                    edge.record_refusal(remote, status, code).await;
                }
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A transport that counts the bytes read from it.
struct CountingIo<I> {
    inner: I,
    received: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.received.fetch_add(read as u64, Ordering::Relaxed);
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `/metrics` (Prometheus text) and `/health` over plain HTTP until `shutdown`.
pub async fn run_metrics(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let edge = edge.clone();
                async move {
                    let resp: http::Response<Body> = match req.uri().path() {
                        "/metrics" => codec::respond(
                            http::StatusCode::OK,
                            "text/plain; version=0.0.4",
                            edge.metrics().render().into_bytes(),
                            "",
                        ),
                        "/health" => codec::respond(
                            http::StatusCode::OK,
                            "application/json",
                            b"{\"status\":\"ok\"}".to_vec(),
                            "",
                        ),
                        _ => codec::respond(
                            http::StatusCode::NOT_FOUND,
                            "text/plain",
                            b"not found\n".to_vec(),
                            "",
                        ),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
