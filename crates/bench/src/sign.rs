//! SigV4 for DynamoDB's JSON protocol, as the SDKs sign: `POST /` with the
//! content type, host, date and target headers signed, and the body hashed.

use ring::digest::{digest, SHA256};
use ring::hmac;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
pub fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// The signed headers of one request (each line ending in CRLF).
pub fn headers(
    creds: &Credentials,
    region: &str,
    host: &str,
    operation: &str,
    body: &[u8],
    now_secs: u64,
) -> String {
    let date_time = amz_date(now_secs);
    let date = &date_time[..8];
    let target = format!("DynamoDB_20120810.{operation}");
    let payload = hex(digest(&SHA256, body).as_ref());
    let (token_canonical, token_name) = match &creds.session_token {
        Some(t) => (
            format!("x-amz-security-token:{t}\n"),
            ";x-amz-security-token",
        ),
        None => (String::new(), ""),
    };
    let signed = format!("content-type;host;x-amz-date{token_name};x-amz-target");
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/x-amz-json-1.0\nhost:{host}\nx-amz-date:{date_time}\n{token_canonical}x-amz-target:{target}\n\n{signed}\n{payload}"
    );
    let scope = format!("{date}/{region}/dynamodb/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex(digest(&SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{}", creds.secret_access_key).into_bytes();
    for part in [date, region, "dynamodb", "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let signature =
        hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()).as_ref());
    let token_header = match &creds.session_token {
        Some(t) => format!("x-amz-security-token: {t}\r\n"),
        None => String::new(),
    };
    format!(
        "Content-Type: application/x-amz-json-1.0\r\nX-Amz-Date: {date_time}\r\nX-Amz-Target: {target}\r\n{token_header}Authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}\r\n",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(super::amz_date(951_782_400), "20000229T000000Z");
    }
}
