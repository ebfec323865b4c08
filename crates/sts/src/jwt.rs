//! JSON Web Tokens from OpenID Connect providers: decoding and signature
//! verification against a JSON Web Key Set.
//!
//! Only asymmetric algorithms are accepted (RS256, RS384, RS512, ES256,
//! ES384): never `none`, and never an HMAC, which would let anyone holding
//! the public key forge tokens.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token's signing algorithm {0} is not allowed")]
    Algorithm(String),
    #[error("no key of the provider matches the token (kid {0})")]
    UnknownKey(String),
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// The protected header fields that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

/// The registered claims and every other claim of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub azp: Option<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub all: Map<String, Value>,
}

impl Claims {
    /// `amr` as a list, as providers send it either way.
    pub fn amr(&self) -> Vec<String> {
        string_list(self.all.get("amr"))
    }
}

/// A parsed token whose signature has not been checked yet.
pub struct Unverified<'a> {
    pub header: Header,
    pub claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Checks nothing but its shape.
pub fn decode(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > 16 * 1024 {
        return Err(JwtError::Malformed(
            "the token is longer than 16 KiB".into(),
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let header: Map<String, Value> = json_part(h, "header")?;
    let payload: Map<String, Value> = json_part(p, "payload")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("the header has no alg".into()))?
        .to_owned();
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    let number = |name: &str| payload.get(name).and_then(Value::as_f64).map(|f| f as i64);
    let claims = Claims {
        iss: text("iss").ok_or_else(|| JwtError::Malformed("the token has no iss".into()))?,
        sub: text("sub").ok_or_else(|| JwtError::Malformed("the token has no sub".into()))?,
        aud: string_list(payload.get("aud")),
        azp: text("azp"),
        exp: number("exp").ok_or_else(|| JwtError::Malformed("the token has no exp".into()))?,
        nbf: number("nbf"),
        iat: number("iat"),
        all: payload,
    };
    let signature =
        base64url(s).ok_or_else(|| JwtError::Malformed("the signature is not base64url".into()))?;
    Ok(Unverified {
        header: Header { alg, kid },
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

impl Unverified<'_> {
    /// Checks the signature with the key set and the time claims against `now`
    /// (allowing `skew` seconds), and returns the claims.
    pub fn verify(self, keys: &Value, now: i64, skew: i64) -> Result<Claims, JwtError> {
        let alg = self.header.alg.as_str();
        let (kty, crv): (&str, Option<&str>) = match alg {
            "RS256" | "RS384" | "RS512" => ("RSA", None),
            "ES256" => ("EC", Some("P-256")),
            "ES384" => ("EC", Some("P-384")),
            other => return Err(JwtError::Algorithm(other.to_owned())),
        };
        let candidates: Vec<&Map<String, Value>> = keys
            .get("keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default();
        let suitable = candidates.into_iter().filter(|k| {
            k.get("kty").and_then(Value::as_str) == Some(kty)
                && k.get("alg")
                    .and_then(Value::as_str)
                    .is_none_or(|a| a == alg)
                && k.get("use")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == "sig")
                && crv.is_none_or(|c| k.get("crv").and_then(Value::as_str) == Some(c))
                && match &self.header.kid {
                    Some(kid) => k.get("kid").and_then(Value::as_str) == Some(kid.as_str()),
                    None => true,
                }
        });
        let mut any_key = false;
        let mut verified = false;
        for key in suitable {
            any_key = true;
            if verify_with(alg, key, self.signing_input.as_bytes(), &self.signature) {
                verified = true;
                break;
            }
        }
        if !any_key {
            return Err(JwtError::UnknownKey(self.header.kid.unwrap_or_default()));
        }
        if !verified {
            return Err(JwtError::Signature);
        }
        let claims = self.claims;
        if now > claims.exp + skew {
            return Err(JwtError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + skew < nbf)
            || claims.iat.is_some_and(|iat| now + skew < iat)
        {
            return Err(JwtError::NotYetValid);
        }
        Ok(claims)
    }
}

fn verify_with(alg: &str, key: &Map<String, Value>, message: &[u8], sig: &[u8]) -> bool {
    let field = |name: &str| key.get(name).and_then(Value::as_str).and_then(base64url);
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let (Some(n), Some(e)) = (field("n"), field("e")) else {
                return false;
            };
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message, sig)
                .is_ok()
        }
        "ES256" | "ES384" => {
            let (Some(x), Some(y)) = (field("x"), field("y")) else {
                return false;
            };
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let params = if alg == "ES256" {
                &signature::ECDSA_P256_SHA256_FIXED
            } else {
                &signature::ECDSA_P384_SHA384_FIXED
            };
            UnparsedPublicKey::new(params, &point)
                .verify(message, sig)
                .is_ok()
        }
        _ => false,
    }
}

fn json_part(part: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = base64url(part)
        .ok_or_else(|| JwtError::Malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Decodes unpadded (or padded) base64url.
pub fn base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (bits < 6).then_some(out)
}

/// Encodes unpadded base64url.
pub fn base64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn es256_token(header: &str, payload: &str) -> (String, Value) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": base64url_encode(&public[1..33]), "y": base64url_encode(&public[33..65]),
        }]});
        let input = format!(
            "{}.{}",
            base64url_encode(header.as_bytes()),
            base64url_encode(payload.as_bytes())
        );
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        (format!("{input}.{}", base64url_encode(sig.as_ref())), jwks)
    }

    const PAYLOAD: &str =
        r#"{"iss":"https://idp.example","sub":"u1","aud":"app","exp":2000,"iat":1000}"#;

    #[test]
    fn verifies_es256_and_checks_time() {
        let (token, jwks) = es256_token(r#"{"alg":"ES256","kid":"k1"}"#, PAYLOAD);
        let claims = decode(&token).unwrap().verify(&jwks, 1500, 60).unwrap();
        assert_eq!(
            (claims.iss.as_str(), claims.sub.as_str()),
            ("https://idp.example", "u1")
        );
        assert_eq!(claims.aud, ["app"]);
        assert_eq!(
            decode(&token).unwrap().verify(&jwks, 2100, 60).unwrap_err(),
            JwtError::Expired
        );
        assert_eq!(
            decode(&token).unwrap().verify(&jwks, 900, 60).unwrap_err(),
            JwtError::NotYetValid
        );
    }

    #[test]
    fn refuses_altered_tokens_and_weak_algorithms() {
        let (token, jwks) = es256_token(r#"{"alg":"ES256","kid":"k1"}"#, PAYLOAD);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = base64url_encode(PAYLOAD.replace("u1", "u2").as_bytes());
        let forged = parts.join(".");
        assert_eq!(
            decode(&forged)
                .unwrap()
                .verify(&jwks, 1500, 60)
                .unwrap_err(),
            JwtError::Signature
        );
        for alg in ["none", "HS256"] {
            let header = base64url_encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
            let t = format!("{header}.{}.", base64url_encode(PAYLOAD.as_bytes()));
            assert_eq!(
                decode(&t).unwrap().verify(&jwks, 1500, 60).unwrap_err(),
                JwtError::Algorithm(alg.into())
            );
        }
        let (other_kid, _) = es256_token(r#"{"alg":"ES256","kid":"k2"}"#, PAYLOAD);
        assert!(matches!(
            decode(&other_kid).unwrap().verify(&jwks, 1500, 60),
            Err(JwtError::UnknownKey(_))
        ));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64url_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
            assert_eq!(base64url(&base64url_encode(data)).unwrap(), data);
        }
        assert_eq!(base64url("a"), None);
    }
}
