//! Access keys and their secrets.

use std::fmt;

use ring::rand::SecureRandom;

use crate::Principal;

/// A secret access key. Its `Debug` output is redacted so that it cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The secret itself; call only to sign, verify or hand it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A long-term access key of a principal.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: Secret,
    pub principal: Principal,
    pub active: bool,
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A new access key id shaped as AWS's: `AKIA` and 16 upper-case base32 characters.
pub fn generate_access_key_id(rng: &dyn SecureRandom) -> Result<String, ring::error::Unspecified> {
    Ok(format!("AKIA{}", random_text(rng, BASE32, 16)?))
}

/// A new 40-character secret access key.
pub fn generate_secret_access_key(
    rng: &dyn SecureRandom,
) -> Result<Secret, ring::error::Unspecified> {
    Ok(Secret(random_text(rng, BASE64, 40)?))
}

/// Characters drawn uniformly from an alphabet whose size divides 256.
pub(crate) fn random_text(
    rng: &dyn SecureRandom,
    alphabet: &[u8],
    len: usize,
) -> Result<String, ring::error::Unspecified> {
    debug_assert!(256 % alphabet.len() == 0);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_aws_shapes() {
        let rng = ring::rand::SystemRandom::new();
        let id = generate_access_key_id(&rng).unwrap();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
        let secret = generate_secret_access_key(&rng).unwrap();
        assert_eq!(secret.expose().len(), 40);
        assert_ne!(secret, generate_secret_access_key(&rng).unwrap());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
