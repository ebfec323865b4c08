//! The request as the evaluator sees it: who, what, on which resource, and
//! the condition keys.

/// One request to authorise.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub principal: &'a PrincipalInfo,
    /// The IAM action, e.g. `dynamodb:GetItem`; matched case-insensitively.
    pub action: &'a str,
    /// The resource ARN, or `*` for actions without resource-level
    /// permissions.
    pub resource: &'a str,
    /// Condition keys, also the source of policy variables.
    pub keys: &'a ContextKeys,
}

/// The caller, for matching `Principal`/`NotPrincipal` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalInfo {
    /// e.g. `arn:aws:iam::123456789012:user/alice` or
    /// `arn:aws:sts::123456789012:assumed-role/R/s`.
    pub arn: String,
    /// The caller's 12-digit account id.
    pub account: String,
    /// How `Principal` elements match this caller: AWS principals match
    /// `"AWS": "<arn>"`, the account id, `arn:aws:iam::<account>:root` or
    /// `"*"`; web identities match `"Federated": "<provider host>"` or the
    /// provider's ARN; services match `"Service": "x.amazonaws.com"`.
    pub kind: PrincipalKind,
}

/// What kind of caller a [`PrincipalInfo`] describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An IAM user, role session or federated user, signing with AWS
    /// credentials.
    Aws,
    /// A web identity or SAML caller (`AssumeRoleWithWebIdentity`): the
    /// provider's host (`accounts.google.com`) and, for providers registered
    /// in IAM, its ARN (`arn:aws:iam::ACCOUNT:oidc-provider/HOST`).
    Federated {
        provider: String,
        provider_arn: Option<String>,
    },
    /// An AWS service, e.g. `ec2.amazonaws.com`.
    Service(String),
    /// An unsigned request.
    Anonymous,
}

/// Condition keys and their values.
///
/// Key names are case-insensitive (AWS: "Condition key names are not
/// case-sensitive"), so they are stored lowercased. Every key may have several
/// values (multivalued keys such as `dynamodb:LeadingKeys`); single-valued keys
/// have one. Values are strings; each operator converts them (numbers, ISO
/// 8601 dates or epoch seconds, `true`/`false`, IP addresses, base64).
#[derive(Default, Clone, Debug)]
pub struct ContextKeys {
    /// Sorted by key (see `position`). A request has a few dozen keys at most and a policy
    /// looks them up many times, so a binary search over short strings beats
    /// hashing, and there is no hash for crafted keys (tag names come from
    /// clients) to collide on.
    entries: Vec<(String, Vec<String>)>,
    /// The caller's keys (see [`ContextKeys::set_caller_keys`]).
    caller: Option<std::sync::Arc<ContextKeys>>,
    /// Keys under these (see [`ContextKeys::over`]).
    base: Option<std::sync::Arc<ContextKeys>>,
}

impl ContextKeys {
    pub fn new() -> Self {
        ContextKeys::default()
    }

    /// Keys on top of `base`, which is shared rather than copied: the
    /// request's keys, under those a service adds for one decision. Keys
    /// set here win over the base's of the same name.
    pub fn over(base: std::sync::Arc<ContextKeys>) -> Self {
        let mut keys = ContextKeys::default();
        keys.set_base(base);
        keys
    }

    /// Sets a single-valued key, replacing any previous values.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.insert(lower_key(key), vec![value.into()]);
    }

    /// Sets a multivalued key, replacing any previous values. An empty list
    /// is the "empty set" of AWS's set operators: `ForAllValues` is true and
    /// `ForAnyValue` false on it, and other operators treat it as missing.
    pub fn set_multi(&mut self, key: &str, values: Vec<String>) {
        self.insert(lower_key(key), values);
    }

    /// The values of a key, looked up case-insensitively.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        // Only a key that lowercasing would change needs a new string.
        let already_lower = key.chars().all(|c| {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        });
        if already_lower {
            self.lookup(key)
        } else {
            self.lookup(&lower_key(key))
        }
    }

    /// Puts `base` under these keys (see [`ContextKeys::over`]).
    pub fn set_base(&mut self, base: std::sync::Arc<ContextKeys>) {
        self.base = Some(base);
    }

    /// Adds the caller's own keys (`aws:PrincipalArn`, `aws:username`, its
    /// tags, ...), shared rather than copied: IAM works them out once per
    /// caller. They win over keys of the same name set here, as a request
    /// cannot speak for its caller.
    pub fn set_caller_keys(&mut self, keys: std::sync::Arc<ContextKeys>) {
        self.caller = Some(keys);
    }

    /// Removes a key (not one of the caller's keys).
    pub fn remove(&mut self, key: &str) {
        if let Ok(i) = self.position(&lower_key(key)) {
            self.entries.remove(i);
        }
    }

    /// Lookup by an already-lowercased key, without allocating.
    pub(crate) fn lookup(&self, lower: &str) -> Option<&[String]> {
        if let Some(values) = self.caller.as_deref().and_then(|c| c.lookup(lower)) {
            return Some(values);
        }
        match self.position(lower) {
            Ok(i) => Some(&self.entries[i].1),
            Err(_) => self.base.as_deref()?.lookup(lower),
        }
    }

    /// Keys are ordered by length, then bytes: most comparisons are then
    /// decided by the length alone.
    fn position(&self, lower: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| {
            k.len()
                .cmp(&lower.len())
                .then_with(|| k.as_bytes().cmp(lower.as_bytes()))
        })
    }

    fn insert(&mut self, key: String, values: Vec<String>) {
        match self.position(&key) {
            Ok(i) => self.entries[i].1 = values,
            Err(i) => self.entries.insert(i, (key, values)),
        }
    }
}

/// The one normalisation of key names, used both when storing context keys
/// and when compiling the keys and variables of a policy.
pub(crate) fn lower_key(key: &str) -> String {
    key.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_multivalued() {
        let mut keys = ContextKeys::new();
        keys.set("aws:SourceIp", "10.0.0.1");
        keys.set_multi("dynamodb:LeadingKeys", vec!["a".into(), "b".into()]);
        assert_eq!(
            keys.get("AWS:SOURCEIP"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(keys.get("dynamodb:leadingkeys").map(<[_]>::len), Some(2));
        keys.set("aws:sourceip", "10.0.0.2");
        assert_eq!(
            keys.get("aws:SourceIp"),
            Some(&["10.0.0.2".to_string()][..])
        );
        keys.remove("AWS:SourceIP");
        assert_eq!(keys.get("aws:SourceIp"), None);
    }

    #[test]
    fn the_callers_keys_win_over_the_requests() {
        let mut caller = ContextKeys::new();
        caller.set("aws:username", "alice");
        let mut keys = ContextKeys::new();
        keys.set("aws:username", "mallory");
        keys.set("aws:SourceIp", "10.0.0.1");
        keys.set_caller_keys(std::sync::Arc::new(caller));
        assert_eq!(keys.get("AWS:UserName"), Some(&["alice".to_string()][..]));
        assert_eq!(
            keys.get("aws:sourceip"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(keys.get("aws:userid"), None);
    }

    #[test]
    fn keys_over_a_base_win_and_the_base_fills_in() {
        let mut request = ContextKeys::new();
        request.set("aws:SourceIp", "10.0.0.1");
        request.set("dynamodb:Select", "ALL_ATTRIBUTES");
        let mut keys = ContextKeys::over(std::sync::Arc::new(request));
        keys.set("dynamodb:Select", "COUNT");
        assert_eq!(
            keys.get("aws:sourceip"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(
            keys.get("dynamodb:select"),
            Some(&["COUNT".to_string()][..])
        );
        assert_eq!(keys.get("aws:username"), None);
    }
}
