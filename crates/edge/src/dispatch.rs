//! The one `match` from an authorised operation to its service's handler,
//! with the decoding of its input and the encoding of its answer.

use moat_iam::Principal;

use crate::codec::{query_response, xml_escape, Body, QueryParams};
use crate::error::ApiError;
use crate::services::{Operation, Service};

/// Runs an operation that authentication and authorisation have already let through.
pub fn dispatch(
    operation: Operation,
    principal: Option<&Principal>,
    _params: &QueryParams,
    _body: &[u8],
    request_id: &str,
) -> Result<http::Response<Body>, ApiError> {
    match operation {
        Operation::GetCallerIdentity => {
            let principal = principal.ok_or_else(ApiError::missing_authentication)?;
            let id = moat_sts::get_caller_identity(principal);
            let xml = format!(
                "    <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n",
                xml_escape(&id.arn),
                xml_escape(&id.user_id),
                xml_escape(&id.account)
            );
            Ok(query_response(
                Service::Sts,
                operation.name(),
                &xml,
                request_id,
            ))
        }
    }
}
