//! Errors as clients see them: the one place where a failure becomes an HTTP
//! status and an AWS error code, per protocol.

use http::StatusCode;
use moat_sigv4::Error as SigError;

use crate::services::Protocol;

/// The errors the edge itself answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    MissingAuthenticationToken,
    InvalidClientTokenId,
    SignatureDoesNotMatch,
    IncompleteSignature,
    AccessDenied,
    UnknownOperation,
    MissingAction,
    RequestEntityTooLarge,
    Serialization,
    RequestTimeout,
    InternalFailure,
    /// Temporary credentials past their expiration.
    ExpiredToken,
    /// An error a service answered with, code and status as the service names them.
    Service {
        code: &'static str,
        status: u16,
    },
}

/// How a failed request is counted in the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Authentication or authorisation refused the request.
    Denied,
    /// The request was not well formed.
    Malformed,
    /// The request was authorised, and the service refused it (no such
    /// entity, a conflict, a limit, invalid input).
    Failed,
    /// Moat failed.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Malformed => "malformed",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
        }
    }
}

/// An error on its way to the client. The message must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// More fields for a JSON error body (e.g. the `Item` of a failed condition).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            extra: None,
        }
    }

    pub fn missing_authentication() -> ApiError {
        ApiError::new(
            ErrorKind::MissingAuthenticationToken,
            "Request is missing Authentication Token",
        )
    }

    pub fn invalid_client_token() -> ApiError {
        ApiError::new(
            ErrorKind::InvalidClientTokenId,
            "The security token included in the request is invalid",
        )
    }

    pub fn outcome(&self) -> Outcome {
        match self.kind {
            ErrorKind::MissingAuthenticationToken
            | ErrorKind::InvalidClientTokenId
            | ErrorKind::SignatureDoesNotMatch
            | ErrorKind::ExpiredToken
            | ErrorKind::AccessDenied => Outcome::Denied,
            ErrorKind::Service {
                code: "AccessDenied",
                ..
            } => Outcome::Denied,
            ErrorKind::Service { status, .. } if status >= 500 => Outcome::Error,
            ErrorKind::Service { .. } => Outcome::Failed,
            ErrorKind::InternalFailure => Outcome::Error,
            _ => Outcome::Malformed,
        }
    }

    /// The HTTP status and the error code a client of `protocol` expects.
    pub fn wire(&self, protocol: Protocol) -> (StatusCode, &'static str) {
        use ErrorKind::*;
        let json = protocol.is_json();
        match self.kind {
            MissingAuthenticationToken if json => (
                StatusCode::BAD_REQUEST,
                "MissingAuthenticationTokenException",
            ),
            MissingAuthenticationToken => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
            InvalidClientTokenId if json => {
                (StatusCode::BAD_REQUEST, "UnrecognizedClientException")
            }
            InvalidClientTokenId => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
            SignatureDoesNotMatch if json => (StatusCode::BAD_REQUEST, "InvalidSignatureException"),
            SignatureDoesNotMatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            IncompleteSignature if json => {
                (StatusCode::BAD_REQUEST, "IncompleteSignatureException")
            }
            IncompleteSignature => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
            AccessDenied if json => (StatusCode::BAD_REQUEST, "AccessDeniedException"),
            AccessDenied if protocol == Protocol::Ec2Query => {
                (StatusCode::FORBIDDEN, "UnauthorizedOperation")
            }
            AccessDenied => (StatusCode::FORBIDDEN, "AccessDenied"),
            UnknownOperation | MissingAction if json => {
                (StatusCode::BAD_REQUEST, "UnknownOperationException")
            }
            UnknownOperation => (StatusCode::BAD_REQUEST, "InvalidAction"),
            MissingAction => (StatusCode::BAD_REQUEST, "MissingAction"),
            RequestEntityTooLarge if json => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
            ),
            RequestEntityTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            Serialization if json => (StatusCode::BAD_REQUEST, "SerializationException"),
            Serialization => (StatusCode::BAD_REQUEST, "MalformedQueryString"),
            RequestTimeout if json => (StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
            InternalFailure if json => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            InternalFailure => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
            ExpiredToken if json => (StatusCode::BAD_REQUEST, "ExpiredTokenException"),
            ExpiredToken => (StatusCode::FORBIDDEN, "ExpiredToken"),
            Service { code, status } => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                code,
            ),
        }
    }
}

impl From<moat_iam::IamError> for ApiError {
    fn from(e: moat_iam::IamError) -> ApiError {
        ApiError::new(
            ErrorKind::Service {
                code: e.kind.code(),
                status: e.kind.status(),
            },
            e.message,
        )
    }
}

impl From<SigError> for ApiError {
    fn from(e: SigError) -> ApiError {
        let kind = if e.is_incomplete() {
            ErrorKind::IncompleteSignature
        } else {
            ErrorKind::SignatureDoesNotMatch
        };
        ApiError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_follow_each_protocol() {
        let cases = [
            (
                ApiError::missing_authentication(),
                Protocol::AwsJson10,
                400,
                "MissingAuthenticationTokenException",
            ),
            (
                ApiError::missing_authentication(),
                Protocol::AwsQuery,
                403,
                "MissingAuthenticationToken",
            ),
            (
                ApiError::invalid_client_token(),
                Protocol::AwsJson10,
                400,
                "UnrecognizedClientException",
            ),
            (
                ApiError::invalid_client_token(),
                Protocol::AwsQuery,
                403,
                "InvalidClientTokenId",
            ),
            (
                SigError::Mismatch.into(),
                Protocol::AwsJson11,
                400,
                "InvalidSignatureException",
            ),
            (
                SigError::Mismatch.into(),
                Protocol::AwsQuery,
                403,
                "SignatureDoesNotMatch",
            ),
            (
                SigError::Incomplete("x".into()).into(),
                Protocol::AwsJson10,
                400,
                "IncompleteSignatureException",
            ),
            (
                SigError::Incomplete("x".into()).into(),
                Protocol::AwsQuery,
                400,
                "IncompleteSignature",
            ),
            (
                SigError::PresignExpired.into(),
                Protocol::AwsQuery,
                403,
                "SignatureDoesNotMatch",
            ),
        ];
        for (err, protocol, status, code) in cases {
            assert_eq!(
                err.wire(protocol),
                (StatusCode::from_u16(status).unwrap(), code),
                "{err:?} {protocol:?}"
            );
        }
    }
}
