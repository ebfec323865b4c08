//! The HTTPS edge: one port for every AWS API Moat serves.
//!
//! It accepts connections (TLS by rustls, HTTP/1.1 by hyper), finds the
//! service and operation of each request from its SigV4 credential scope,
//! `X-Amz-Target` or `Action`, verifies the signature (`moat-sigv4`), asks the
//! one authoriser (`moat-iam`), calls the service, encodes the answer or the
//! error in the service's protocol, and writes one audit line per request.
//!
//! Architecture invariant: the edge is the only crate that knows HTTP and the
//! wire encodings; service crates receive typed, already-authorised input.
//! Error codes and statuses are decided in one place, `error.rs`.

pub mod api;
pub mod audit;
pub mod codec;
pub mod error;
pub mod metrics;
mod pipeline;
pub mod server;
pub mod services;
pub mod tls;

pub use pipeline::{Edge, EdgeConfig, Services, HEALTH_PATH};
