//! Wire encodings: decoding query parameters and JSON bodies, encoding
//! answers and errors in each protocol's own format.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::error::{ApiError, ErrorKind};
use crate::services::{Protocol, Service};

pub type Body = Full<Bytes>;

/// Decoded `name=value` parameters of a query-protocol request, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Decodes `application/x-www-form-urlencoded` text (a query string or a
    /// form body). Invalid UTF-8 is replaced, never a failure.
    pub fn decode(bytes: &[u8]) -> QueryParams {
        QueryParams(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn extend(&mut self, other: QueryParams) {
        self.0.extend(other.0);
    }

    /// Every parameter, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The largest nesting a JSON request may have; deeper input is refused
/// before it can exhaust the stack.
pub const MAX_JSON_DEPTH: usize = 64;

/// Decodes an awsJson request body, which must be one JSON object.
pub fn decode_json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let malformed = || {
        ApiError::new(
            ErrorKind::Serialization,
            "Start of structure or map found where not expected.",
        )
    };
    if json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(ApiError::new(
            ErrorKind::Serialization,
            "The request nests too deeply.",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed()),
        Err(_) => Err(ApiError::new(
            ErrorKind::Serialization,
            "The request body is not valid JSON.",
        )),
    }
}

/// True if brackets nest deeper than `max` outside strings (a cheap pre-scan).
fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Escapes text for an XML element (quotes need no escaping outside attributes).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A successful query-protocol answer: `<OpResponse><OpResult>...</OpResult>`
/// with the request id in `ResponseMetadata`. `result_xml` is already escaped.
pub fn query_response(
    service: Service,
    operation: &str,
    result_xml: &str,
    request_id: &str,
) -> Response<Body> {
    let body = format!(
        "<{operation}Response xmlns=\"{ns}\">\n  <{operation}Result>\n{result_xml}  </{operation}Result>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{operation}Response>\n",
        ns = service.xml_namespace(),
    );
    respond(StatusCode::OK, "text/xml", body.into_bytes(), request_id)
}

/// A successful JSON answer.
pub fn json_response(
    protocol: Protocol,
    value: &serde_json::Value,
    request_id: &str,
) -> Response<Body> {
    json_respond(StatusCode::OK, protocol, json_body(value), request_id)
}

/// A JSON value as a body. (A `Value` with string keys always encodes; the
/// empty object stands in all the same.)
pub fn json_body(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// A JSON answer whose body is already encoded.
pub fn json_body_response(protocol: Protocol, body: Vec<u8>, request_id: &str) -> Response<Body> {
    json_respond(StatusCode::OK, protocol, body, request_id)
}

/// An error in the protocol's own envelope. With no service known (nothing in
/// the request said which API it was for), the query envelope is used.
pub fn error_response(
    service: Option<Service>,
    err: &ApiError,
    request_id: &str,
) -> Response<Body> {
    let protocol = service.map(Service::protocol).unwrap_or(Protocol::AwsQuery);
    let (status, code) = err.wire(protocol);
    match protocol {
        Protocol::AwsJson10 | Protocol::AwsJson11 => {
            let mut body = serde_json::json!({
                "__type": format!("com.amazon.coral.service#{code}"),
                "message": err.message,
            });
            if let (Some(serde_json::Value::Object(extra)), Some(map)) =
                (&err.extra, body.as_object_mut())
            {
                for (k, v) in extra {
                    map.insert(k.clone(), v.clone());
                }
            }
            let mut resp = json_respond(
                status,
                protocol,
                serde_json::to_vec(&body).unwrap_or_default(),
                request_id,
            );
            resp.headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(code));
            resp
        }
        Protocol::Ec2Query => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>\n",
                xml_escape(&err.message)
            );
            respond(status, "text/xml", body.into_bytes(), request_id)
        }
        Protocol::AwsQuery => {
            let ns = service
                .map(|s| format!(" xmlns=\"{}\"", s.xml_namespace()))
                .unwrap_or_default();
            let fault = if status.is_server_error() {
                "Receiver"
            } else {
                "Sender"
            };
            let body = format!(
                "<ErrorResponse{ns}>\n  <Error>\n    <Type>{fault}</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                xml_escape(&err.message)
            );
            respond(status, "text/xml", body.into_bytes(), request_id)
        }
    }
}

fn json_content_type(protocol: Protocol) -> &'static str {
    if protocol == Protocol::AwsJson11 {
        "application/x-amz-json-1.1"
    } else {
        "application/x-amz-json-1.0"
    }
}

pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    request_id: &str,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    resp
}

/// A JSON answer with `x-amz-crc32`, which DynamoDB's clients check when present.
fn json_respond(
    status: StatusCode,
    protocol: Protocol,
    body: Vec<u8>,
    request_id: &str,
) -> Response<Body> {
    let crc = crc32(&body);
    let mut resp = respond(status, json_content_type(protocol), body, request_id);
    resp.headers_mut()
        .insert("x-amz-crc32", HeaderValue::from(crc));
    resp
}

/// Standard base64 with padding, as JSON protocols carry blobs.
pub use moat_dynamodb::value::base64_encode;

/// Decodes standard base64 (padding optional); `None` for anything else.
/// DynamoDB's decoder does the work; only the padding is made whole first.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let padding = "==".get(..(4 - text.len() % 4) % 4)?;
    moat_dynamodb::value::base64_decode(&format!("{text}{padding}")).ok()
}

/// CRC-32 (IEEE), as DynamoDB's `x-amz-crc32`. Every JSON answer is summed,
/// so this uses the vectorised implementation.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\xff\x00\xfe",
        ] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("a*b"), None);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn json_objects_only() {
        assert!(decode_json_object(b"{\"a\":1}").is_ok());
        assert!(decode_json_object(b"  ").unwrap().is_empty());
        for bad in [&b"[1]"[..], b"1", b"{", b"\xff", b"{\"a\":}"] {
            assert_eq!(
                decode_json_object(bad).unwrap_err().kind,
                ErrorKind::Serialization
            );
        }
        let deep = "[".repeat(10_000);
        assert_eq!(
            decode_json_object(deep.as_bytes()).unwrap_err().kind,
            ErrorKind::Serialization
        );
        let in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
        assert!(decode_json_object(in_string.as_bytes()).is_ok());
    }

    #[test]
    fn query_params_decode() {
        let p = QueryParams::decode(b"Action=GetCallerIdentity&Version=2011-06-15&x=a+b%21");
        assert_eq!(p.get("Action"), Some("GetCallerIdentity"));
        assert_eq!(p.get("x"), Some("a b!"));
        assert_eq!(p.get("y"), None);
    }
}
