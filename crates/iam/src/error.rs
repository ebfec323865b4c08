//! IAM's errors, named as AWS names them.

/// The AWS error codes IAM and STS answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamErrorKind {
    NoSuchEntity,
    EntityAlreadyExists,
    MalformedPolicyDocument,
    LimitExceeded,
    DeleteConflict,
    ValidationError,
    InvalidInput,
    /// STS: the caller may not assume the role, or a web identity claim was refused.
    AccessDenied,
    /// STS: the web identity token is not valid.
    InvalidIdentityToken,
    /// STS: the web identity token has expired.
    ExpiredToken,
    /// STS: the identity provider rejected the claim (bad audience, unknown issuer).
    IdpRejectedClaim,
    /// STS: the identity provider could not be reached.
    IdpCommunicationError,
    /// STS: the policy passed to AssumeRole is too large.
    PackedPolicyTooLarge,
}

impl IamErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            IamErrorKind::NoSuchEntity => "NoSuchEntity",
            IamErrorKind::EntityAlreadyExists => "EntityAlreadyExists",
            IamErrorKind::MalformedPolicyDocument => "MalformedPolicyDocument",
            IamErrorKind::LimitExceeded => "LimitExceeded",
            IamErrorKind::DeleteConflict => "DeleteConflict",
            IamErrorKind::ValidationError => "ValidationError",
            IamErrorKind::InvalidInput => "InvalidInput",
            IamErrorKind::AccessDenied => "AccessDenied",
            IamErrorKind::InvalidIdentityToken => "InvalidIdentityToken",
            IamErrorKind::ExpiredToken => "ExpiredTokenException",
            IamErrorKind::IdpRejectedClaim => "IDPRejectedClaim",
            IamErrorKind::IdpCommunicationError => "IDPCommunicationError",
            IamErrorKind::PackedPolicyTooLarge => "PackedPolicyTooLarge",
        }
    }

    /// The HTTP status AWS pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            IamErrorKind::NoSuchEntity => 404,
            IamErrorKind::EntityAlreadyExists
            | IamErrorKind::LimitExceeded
            | IamErrorKind::DeleteConflict => 409,
            IamErrorKind::AccessDenied => 403,
            IamErrorKind::IdpCommunicationError => 400,
            _ => 400,
        }
    }
}

/// An IAM or STS error with AWS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct IamError {
    pub kind: IamErrorKind,
    pub message: String,
}

impl IamError {
    pub fn new(kind: IamErrorKind, message: impl Into<String>) -> IamError {
        IamError {
            kind,
            message: message.into(),
        }
    }

    pub fn no_such(what: &str, name: &str) -> IamError {
        IamError::new(
            IamErrorKind::NoSuchEntity,
            format!("The {what} with name {name} cannot be found."),
        )
    }

    pub fn exists(what: &str, name: &str) -> IamError {
        IamError::new(
            IamErrorKind::EntityAlreadyExists,
            format!("{what} with name {name} already exists."),
        )
    }

    pub fn validation(message: impl Into<String>) -> IamError {
        IamError::new(IamErrorKind::ValidationError, message)
    }
}
