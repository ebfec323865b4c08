//! The Security Token Service's operations, as typed inputs and outputs.
//!
//! The edge decodes a request into these types and encodes the answers; this
//! crate knows no HTTP and no wire format. `GetCallerIdentity` is here today;
//! `AssumeRole` and `AssumeRoleWithWebIdentity` come with temporary credentials.
//!
//! Architecture invariant: depends only on `moat-iam`.

use moat_iam::Principal;

/// The answer to `GetCallerIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// `GetCallerIdentity`: who the verified caller is. AWS needs no permission
/// for it, and neither does Moat.
pub fn get_caller_identity(principal: &Principal) -> CallerIdentity {
    CallerIdentity {
        account: principal.account().to_string(),
        arn: principal.arn(),
        user_id: principal.user_id(),
    }
}
