//! Conversions of condition values: numbers, dates, IP ranges and base64.
//! Policy values are converted once at parse time; context values at
//! evaluation, where a value that does not convert simply matches nothing.

use std::net::IpAddr;

/// A number for the `Numeric...` operators (AWS: "an integer or decimal
/// value"). Non-finite values are refused so that comparisons are total.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    // `f64::from_str` also reads "inf", "NaN" and "1e5"; policies and
    // requests use plain decimals, so only digits, one sign and one point
    // pass.
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let mut points = 0;
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| {
            points += usize::from(b == b'.');
            b.is_ascii_digit() || b == b'.'
        })
        && points <= 1
        && digits.bytes().any(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A point in time as nanoseconds since the Unix epoch, from either epoch
/// seconds (`1500000000`, optionally with a fraction; `aws:EpochTime`) or one
/// of the W3C profiles of ISO 8601 that AWS documents (`2020-01-01`,
/// `2020-01-01T12:00Z`, `2020-01-01T12:00:00.5+02:00`), also in basic format
/// (`20200101T120000Z`). A time without a zone is UTC. Digits alone are
/// epoch seconds, never a bare year.
pub(crate) fn parse_date(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Some(epoch) = parse_epoch(s) {
        return Some(epoch);
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let year = c.digits(4)?;
    let (month, day) = if c.eat(b'-') {
        let month = c.digits(2)?;
        let day = if c.eat(b'-') { c.digits(2)? } else { 1 };
        (month, day)
    } else {
        let month = c.digits(2)?;
        (month, c.digits(2)?)
    };
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    let mut offset_secs: i64 = 0;
    if c.eat(b'T') || c.eat(b't') {
        hour = c.digits(2)?;
        c.eat(b':');
        minute = c.digits(2)?;
        let had_colon = c.eat(b':');
        if had_colon || c.peek_digit() {
            second = c.digits(2)?;
            if c.eat(b'.') || c.eat(b',') {
                nanos = c.fraction()?;
            }
        }
        if c.eat(b'Z') || c.eat(b'z') {
        } else if let Some(sign) = c.sign() {
            let oh = c.digits(2)?;
            c.eat(b':');
            let om = if c.peek_digit() { c.digits(2)? } else { 0 };
            if oh > 23 || om > 59 {
                return None;
            }
            offset_secs = sign * (oh * 3600 + om * 60);
        }
    }
    if c.i != c.b.len() {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    // Second 60 is a leap second; it counts as the first second of the next
    // minute, as a plain epoch computation does.
    if !(1..=max_day).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn parse_epoch(s: &str) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    // More than 15 digits of seconds is beyond year 30 million; refusing them
    // also keeps the arithmetic below from overflowing.
    if whole.is_empty() || whole.len() > 15 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = whole.parse().ok()?;
    let nanos = match frac {
        Some(f) => {
            let mut c = Cursor {
                b: f.as_bytes(),
                i: 0,
            };
            let n = c.fraction()?;
            if c.i != f.len() {
                return None;
            }
            i128::from(n)
        }
        None => 0,
    };
    let total = secs * 1_000_000_000 + nanos;
    Some(if neg { -total } else { total })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era-based conversion; exact for every year this parser accepts).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        if self.b.get(self.i) == Some(&byte) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek_digit(&self) -> bool {
        self.b.get(self.i).is_some_and(u8::is_ascii_digit)
    }

    fn digits(&mut self, n: usize) -> Option<i64> {
        let chunk = self.b.get(self.i..self.i + n)?;
        let mut v: i64 = 0;
        for &d in chunk {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        self.i += n;
        Some(v)
    }

    /// Fractional seconds: one or more digits, of which the first nine count.
    fn fraction(&mut self) -> Option<u32> {
        let start = self.i;
        let mut nanos: u32 = 0;
        let mut scale: u32 = 100_000_000;
        while self.peek_digit() {
            let d = u32::from(self.b[self.i] - b'0');
            nanos += d * scale;
            scale /= 10;
            self.i += 1;
        }
        (self.i > start).then_some(nanos)
    }

    fn sign(&mut self) -> Option<i64> {
        if self.eat(b'+') {
            Some(1)
        } else if self.eat(b'-') {
            Some(-1)
        } else {
            None
        }
    }
}

/// An address range for `IpAddress`/`NotIpAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// `203.0.113.0/24`, `2001:DB8::/32`, or a bare address (AWS: "IAM uses
    /// the default prefix value of /32", /128 for IPv6). Host bits beyond the
    /// prefix are ignored, as a network mask does.
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a, Some(p.parse::<u32>().ok()?))
            }
            None => (s, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let p = prefix.unwrap_or(32);
                if p > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                Some(Cidr::V4 {
                    net: u32::from(a) & mask,
                    mask,
                })
            }
            IpAddr::V6(a) => {
                let p = prefix.unwrap_or(128);
                if p > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                Some(Cidr::V6 {
                    net: u128::from(a) & mask,
                    mask,
                })
            }
        }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

/// A request's source address. An IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`, what a dual-stack listener reports) is the IPv4
/// address it carries.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.trim().parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }),
        v4 => Some(v4),
    }
}

/// Standard base64 (RFC 4648 alphabet), padding optional.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i128 = 1_000_000_000;

    #[test]
    fn numbers() {
        let cases = [
            ("10", Some(10.0)),
            ("-3", Some(-3.0)),
            ("+3", Some(3.0)),
            ("1.5", Some(1.5)),
            (".5", Some(0.5)),
            (" 7 ", Some(7.0)),
            ("", None),
            ("-", None),
            (".", None),
            ("1.2.3", None),
            ("inf", None),
            ("NaN", None),
            ("1e5", None),
            ("ten", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_number(s), want, "{s:?}");
        }
    }

    #[test]
    fn dates() {
        let cases: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("1500000000", Some(1_500_000_000 * SEC)),
            ("1500000000.25", Some(1_500_000_000 * SEC + SEC / 4)),
            ("-86400", Some(-86_400 * SEC)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-02", Some(86_400 * SEC)),
            ("2017-07-14T02:40:00Z", Some(1_500_000_000 * SEC)),
            ("2017-07-14T02:40Z", Some(1_500_000_000 * SEC)),
            ("2017-07-14T02:40:00", Some(1_500_000_000 * SEC)),
            ("2017-07-14T04:40:00+02:00", Some(1_500_000_000 * SEC)),
            ("2017-07-14T04:40:00+0200", Some(1_500_000_000 * SEC)),
            ("2017-07-13T21:40:00-05:00", Some(1_500_000_000 * SEC)),
            (
                "2017-07-14T02:40:00.5Z",
                Some(1_500_000_000 * SEC + SEC / 2),
            ),
            ("20170714T024000Z", Some(1_500_000_000 * SEC)),
            ("2000-02-29T00:00:00Z", Some(951_782_400 * SEC)),
            ("2017-07", Some(1_498_867_200 * SEC)),
            ("2001-02-29", None),
            ("2017-13-01", None),
            ("2017-07-14T25:00:00Z", None),
            ("2017-07-14T02:40:00Q", None),
            ("2017-07-14X", None),
            ("yesterday", None),
            ("", None),
            ("2017-07-14T02:40:00+", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_date(s), *want, "{s:?}");
        }
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| parse_ip(s).expect(s);
        let net = Cidr::parse("203.0.113.0/24").expect("cidr");
        assert!(net.contains(ip("203.0.113.9")));
        assert!(!net.contains(ip("203.0.114.9")));
        assert!(net.contains(ip("::ffff:203.0.113.9")));
        let host = Cidr::parse("10.1.2.3").expect("host");
        assert!(host.contains(ip("10.1.2.3")));
        assert!(!host.contains(ip("10.1.2.4")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("2001:DB8:1234:5678::/64").expect("v6");
        assert!(v6.contains(ip("2001:db8:1234:5678::1")));
        assert!(!v6.contains(ip("2001:db8:1234:5679::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").expect("all6").contains(ip("::1")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "::/129",
            "x",
            "",
            "1.2.3.4/-1",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(
            decode_base64("QmluYXJ5VmFsdWVJbkJhc2U2NA==").as_deref(),
            Some(&b"BinaryValueInBase64"[..])
        );
        assert_eq!(decode_base64("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Y"), None);
        assert_eq!(decode_base64("Y==="), None);
        assert_eq!(decode_base64("a b="), None);
    }
}
