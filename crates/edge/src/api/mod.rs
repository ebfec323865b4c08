//! The query-protocol APIs: decoding each operation's parameters, calling the
//! service crate, and encoding its answer as AWS's XML.

pub mod dynamodb;
mod dynamodb_legacy;
pub mod iam;
pub mod kms;
pub mod sts;

use std::fmt::Write;

use moat_iam::{Caller, Iam, IamError, Tag};
use moat_policy::ContextKeys;
use moat_sigv4::AmzDate;
use ring::rand::SystemRandom;

use crate::codec::{xml_escape, QueryParams};
use crate::error::ApiError;

/// Everything an operation handler may use. Authentication and the
/// authorisation the operation table asks for have already happened.
pub struct Ctx<'a> {
    pub iam: &'a Iam,
    pub kms: &'a moat_kms::Kms,
    /// The region the request is for (the SigV4 scope's).
    pub region: &'a str,
    pub caller: Option<&'a Caller>,
    pub params: &'a QueryParams,
    pub now: i64,
    pub rng: &'a SystemRandom,
    /// Request-level condition keys (source address, time, TLS, region).
    pub keys: &'a RequestKeys<'a>,
    /// Where web identity key sets come from.
    pub jwks: &'a dyn JwksSource,
}

/// The request's own condition keys (`aws:SourceIp`, `aws:CurrentTime`,
/// `aws:EpochTime`, `aws:SecureTransport`, `aws:RequestedRegion`,
/// `aws:UserAgent`), built the first time a decision needs them: most
/// callers' policies read none of them, and building them for every request
/// was a few percent of a GetItem.
pub struct RequestKeys<'a> {
    remote: std::net::IpAddr,
    now: i64,
    tls: bool,
    /// The SigV4 scope's region, for a signed request.
    requested_region: Option<&'a str>,
    user_agent: Option<&'a str>,
    built: std::sync::OnceLock<std::sync::Arc<ContextKeys>>,
}

impl<'a> RequestKeys<'a> {
    pub fn new(
        remote: std::net::IpAddr,
        now: i64,
        tls: bool,
        requested_region: Option<&'a str>,
        user_agent: Option<&'a str>,
    ) -> RequestKeys<'a> {
        RequestKeys {
            remote,
            now,
            tls,
            requested_region,
            user_agent,
            built: std::sync::OnceLock::new(),
        }
    }

    /// The keys, built once and shared by every decision that reads them.
    pub fn shared(&self) -> &std::sync::Arc<ContextKeys> {
        self.built.get_or_init(|| {
            let mut keys = ContextKeys::new();
            keys.set("aws:SourceIp", self.remote.to_string());
            keys.set(
                "aws:CurrentTime",
                crate::pipeline::iso8601_seconds(self.now),
            );
            keys.set("aws:EpochTime", self.now.to_string());
            keys.set(
                "aws:SecureTransport",
                if self.tls { "true" } else { "false" },
            );
            if let Some(region) = self.requested_region {
                keys.set("aws:RequestedRegion", region);
            }
            if let Some(agent) = self.user_agent {
                keys.set("aws:UserAgent", agent);
            }
            std::sync::Arc::new(keys)
        })
    }

    /// The keys under an empty layer, for one decision that adds keys of
    /// its own on top (a batch's table, a transaction's action).
    pub fn layer(&self) -> ContextKeys {
        ContextKeys::over(self.shared().clone())
    }
}

/// Finds an OpenID Connect provider's signing keys (the JWKS document).
pub trait JwksSource: Send + Sync {
    /// The key set for `issuer`; `refresh` asks for a fresh copy (an unknown `kid`).
    fn key_set(&self, issuer: &str, refresh: bool) -> Result<serde_json::Value, String>;
}

impl Ctx<'_> {
    /// A required parameter, with IAM's validation message when absent.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.params.get(name).ok_or_else(|| {
            let mut field = name.to_owned();
            if let Some(first) = field.get_mut(..1) {
                first.make_ascii_lowercase();
            }
            IamError::validation(format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ))
            .into()
        })
    }

    pub fn optional(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    pub fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.params.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                IamError::validation(format!("Value '{v}' at '{name}' is not a valid integer"))
                    .into()
            }),
        }
    }

    pub fn boolean(&self, name: &str) -> bool {
        self.params
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `Name.member.1`, `Name.member.2`, ... in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.member.");
        let mut items: Vec<(u32, String)> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(&prefix)?.parse::<u32>().ok()?;
                Some((n, v.to_owned()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Name.member.N.Field` groups, in order of N.
    pub fn structs(&self, name: &str) -> Vec<Vec<(String, String)>> {
        let prefix = format!("{name}.member.");
        let mut groups: std::collections::BTreeMap<u32, Vec<(String, String)>> = Default::default();
        for (k, v) in self.params.iter() {
            if let Some(rest) = k.strip_prefix(&prefix) {
                if let Some((n, field)) = rest.split_once('.') {
                    if let Ok(n) = n.parse::<u32>() {
                        groups
                            .entry(n)
                            .or_default()
                            .push((field.to_owned(), v.to_owned()));
                    }
                }
            }
        }
        groups.into_values().collect()
    }

    pub fn tags(&self) -> Vec<Tag> {
        self.structs("Tags")
            .into_iter()
            .map(|fields| {
                let get = |f: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == f)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                Tag {
                    key: get("Key"),
                    value: get("Value"),
                }
            })
            .collect()
    }
}

/// A small writer for the XML of query-protocol answers.
#[derive(Default)]
pub struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    pub fn new() -> Xml {
        Xml {
            out: String::new(),
            depth: 2,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Xml {
        self.indent();
        let _ = writeln!(self.out, "<{name}>{}</{name}>", xml_escape(value));
        self
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Xml {
        if let Some(v) = value {
            self.text(name, v);
        }
        self
    }

    pub fn date(&mut self, name: &str, unix: i64) -> &mut Xml {
        self.text(name, &iso8601(unix))
    }

    pub fn open(&mut self, name: &str) -> &mut Xml {
        self.indent();
        let _ = writeln!(self.out, "<{name}>");
        self.depth += 1;
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Xml {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
        self
    }

    /// `<name><member>..</member>...</name>` with each member written by `each`.
    pub fn members<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Xml, T),
    ) -> &mut Xml {
        self.open(name);
        for item in items {
            self.open("member");
            each(self, item);
            self.close("member");
        }
        self.close(name)
    }

    /// `<name><member>text</member>...</name>`.
    pub fn strings<'s>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = &'s String>,
    ) -> &mut Xml {
        self.open(name);
        for item in items {
            self.text("member", item);
        }
        self.close(name)
    }

    pub fn tags(&mut self, tags: &[Tag]) -> &mut Xml {
        self.members("Tags", tags, |x, t| {
            x.text("Key", &t.key).text("Value", &t.value);
        })
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(unix: i64) -> String {
    AmzDate::from_unix_seconds(unix).to_iso8601_extended()
}

/// One page of a listing: IAM's `Marker` is the index to continue from.
pub struct Page<'a, T> {
    pub items: &'a [T],
    pub next_marker: Option<String>,
}

pub fn paginate<'a, T>(ctx: &Ctx<'_>, items: &'a [T]) -> Result<Page<'a, T>, ApiError> {
    let max = ctx.integer("MaxItems")?.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(IamError::validation(
            "1 validation error detected: Value at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000",
        )
        .into());
    }
    let start = match ctx.optional("Marker") {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ApiError::from(IamError::validation("Invalid Marker.")))?,
    };
    let end = (start + max as usize).min(items.len());
    Ok(Page {
        items: &items[start..end],
        next_marker: (end < items.len()).then(|| end.to_string()),
    })
}

impl Xml {
    pub fn page_end<T>(&mut self, page: &Page<'_, T>) -> &mut Xml {
        self.text(
            "IsTruncated",
            if page.next_marker.is_some() {
                "true"
            } else {
                "false"
            },
        );
        self.opt("Marker", page.next_marker.as_deref())
    }
}

/// Percent-encodes a policy document as IAM returns them.
pub fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A string member of a JSON request; a member of another type is a
/// `SerializationException`.
pub(crate) fn json_text<'a>(
    input: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
    match input.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(
            crate::error::ErrorKind::Serialization,
            format!("{name} must be a string"),
        )),
    }
}

/// A required string member, with the JSON services' `ValidationException`.
pub(crate) fn json_required<'a>(
    input: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<&'a str, ApiError> {
    json_text(input, name)?.ok_or_else(|| {
        let mut field = name.to_owned();
        if let Some(first) = field.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        ApiError::new(
            crate::error::ErrorKind::Service {
                code: "ValidationException",
                status: 400,
            },
            format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ),
        )
    })
}

/// An object member of a JSON request.
pub(crate) fn json_object<'a>(
    input: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<&'a serde_json::Map<String, serde_json::Value>>, ApiError> {
    match input.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ApiError::new(
            crate::error::ErrorKind::Serialization,
            format!("{name} must be an object"),
        )),
    }
}
