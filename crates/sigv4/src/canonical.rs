//! The canonical forms of a request's path, query and headers.

use http::HeaderMap;

use crate::PathRules;

/// The canonical URI of a received path.
///
/// The path is percent-decoded, optionally normalised (dot segments and
/// repeated slashes removed), then each segment is encoded with SigV4's
/// strict set (everything but `A-Za-z0-9-._~`), and optionally encoded
/// once more, as the SDKs do outside S3.
pub fn canonical_uri(raw_path: &str, rules: PathRules) -> String {
    // The path of every JSON and query API request, under either rules.
    if raw_path == "/" {
        return "/".to_owned();
    }
    let decoded = percent_decode(raw_path.as_bytes());
    let segments: Vec<&[u8]> = decoded.split(|b| *b == b'/').collect();
    let path: Vec<&[u8]> = if rules.normalize {
        let mut kept: Vec<&[u8]> = Vec::new();
        for seg in &segments {
            match *seg {
                b"" | b"." => {}
                b".." => {
                    kept.pop();
                }
                other => kept.push(other),
            }
        }
        // A trailing slash (or a trailing dot segment) keeps the path a "directory".
        let trailing = matches!(segments.last(), Some(&(b"" | b"." | b"..")));
        if trailing && !kept.is_empty() {
            kept.push(b"");
        }
        kept.insert(0, b"");
        if kept.len() == 1 {
            kept.push(b"");
        }
        kept
    } else if decoded.is_empty() {
        vec![b"".as_slice(), b"".as_slice()]
    } else {
        segments
    };
    let mut out = String::with_capacity(decoded.len() + 8);
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        let once = encode_strict(seg);
        if rules.double_encode {
            out.push_str(&encode_strict(once.as_bytes()));
        } else {
            out.push_str(&once);
        }
    }
    out
}

/// The canonical query string: every parameter decoded, strictly re-encoded,
/// sorted by name then value, and joined with `&`; those `skip` names are left out.
pub fn canonical_query(raw_query: &str, skip: impl Fn(&[u8]) -> bool) -> String {
    let mut pairs: Vec<(String, String)> = decode_query(raw_query)
        .into_iter()
        .filter(|(k, _)| !skip(k))
        .map(|(k, v)| (encode_strict(&k), encode_strict(&v)))
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Splits a raw query into decoded name/value pairs. `+` stays a plus sign:
/// SigV4 clients encode a space as `%20`.
pub(crate) fn decode_query(raw_query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k.as_bytes()), percent_decode(v.as_bytes()))
        })
        .collect()
}

/// Appends a signed header's canonical value to `out`: every value of the
/// header in order, trimmed, inner runs of white space folded to one space,
/// joined by commas.
pub(crate) fn push_header_value(out: &mut String, headers: &HeaderMap, name: &str) {
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_folded(out, &String::from_utf8_lossy(value.as_bytes()));
    }
}

/// Appends `text` trimmed, with each inner run of white space folded to one
/// space. Byte by byte: white space is ASCII, so every cut falls between
/// characters (splitting at a set of `char`s decoded every character, a
/// percent of a GetItem).
fn push_folded(out: &mut String, text: &str) {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        while at < bytes.len() && is_space(bytes[at]) {
            at += 1;
        }
        let start = at;
        while at < bytes.len() && !is_space(bytes[at]) {
            at += 1;
        }
        if start < at {
            if !first {
                out.push(' ');
            }
            out.push_str(&text[start..at]);
            first = false;
        }
    }
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(input).collect()
}

fn encode_strict(input: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Folding byte by byte gives what splitting at white space and
        /// joining the words with one space gives.
        #[test]
        fn folding_matches_splitting_into_words(text in "[ \t\r\na-zé😀,;]{0,40}") {
            let mut folded = String::new();
            push_folded(&mut folded, &text);
            let words: Vec<&str> = text
                .split([' ', '\t', '\r', '\n'])
                .filter(|w| !w.is_empty())
                .collect();
            proptest::prop_assert_eq!(folded, words.join(" "));
        }
    }

    const SINGLE: PathRules = PathRules {
        normalize: true,
        double_encode: false,
    };
    const RAW: PathRules = PathRules {
        normalize: false,
        double_encode: false,
    };

    #[test]
    fn canonical_uris() {
        let cases: &[(&str, PathRules, &str)] = &[
            ("/", SINGLE, "/"),
            ("", SINGLE, "/"),
            ("", RAW, "/"),
            ("/example/..", SINGLE, "/"),
            ("/example1/example2/../..", SINGLE, "/"),
            ("/./", SINGLE, "/"),
            ("/./example", SINGLE, "/example"),
            ("//example//", SINGLE, "/example/"),
            ("//example//", RAW, "//example//"),
            ("/example space/", SINGLE, "/example%20space/"),
            ("/ሴ", SINGLE, "/%E1%88%B4"),
            ("/a%20b", PathRules::AWS_SERVICES, "/a%2520b"),
            ("/a/b/../c/", SINGLE, "/a/c/"),
        ];
        for (raw, rules, want) in cases {
            assert_eq!(&canonical_uri(raw, *rules), want, "{raw} {rules:?}");
        }
    }

    #[test]
    fn canonical_queries() {
        let q = canonical_query("b=2&a=1&a=0&c&X-Amz-Signature=x&%E1%88%B4=v+w", |k| {
            k == b"X-Amz-Signature"
        });
        assert_eq!(q, "%E1%88%B4=v%2Bw&a=0&a=1&b=2&c=");
    }
}
