//! `X-Amz-Date` timestamps (`YYYYMMDD'T'HHMMSS'Z'`), UTC only.

use std::fmt;

/// A SigV4 timestamp with one-second resolution.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AmzDate(i64);

impl AmzDate {
    /// Parses the ISO 8601 basic format SigV4 uses; `None` for anything else.
    pub fn parse(text: &str) -> Option<AmzDate> {
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = &b[range];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(
                digits
                    .iter()
                    .fold(0, |acc, d| acc * 10 + i64::from(d - b'0')),
            )
        };
        let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(AmzDate(days * 86_400 + hour * 3600 + minute * 60 + second))
    }

    pub fn from_unix_seconds(secs: i64) -> AmzDate {
        AmzDate(secs)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, the extended ISO 8601 form AWS uses in responses and logs.
    pub fn to_iso8601_extended(self) -> String {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        let secs = self.0.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }

    /// Appends the basic form (`YYYYMMDD'T'HHMMSS'Z'`), as `Display` prints
    /// it, without the formatting machinery: every request's string to sign
    /// holds it.
    pub(crate) fn push_basic(self, out: &mut String) {
        match self.basic() {
            Some(basic) => out.extend(basic.iter().map(|&b| char::from(b))),
            None => out.push_str(&self.to_string()),
        }
    }

    /// The basic form's bytes, for years 0 to 9999 (all that `parse` reads).
    pub(crate) fn basic(self) -> Option<[u8; 16]> {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        if !(0..=9999).contains(&y) {
            return None;
        }
        let secs = self.0.rem_euclid(86_400);
        let mut out = *b"00000000T000000Z";
        let fields = [
            (y, 0, 4),
            (m, 4, 2),
            (d, 6, 2),
            (secs / 3600, 9, 2),
            (secs % 3600 / 60, 11, 2),
            (secs % 60, 13, 2),
        ];
        for (mut value, start, width) in fields {
            for place in out[start..start + width].iter_mut().rev() {
                *place = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        Some(out)
    }

    /// `YYYYMMDD`, the date part used in the credential scope.
    pub fn date_stamp(self) -> String {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        format!("{y:04}{m:02}{d:02}")
    }
}

impl fmt::Display for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        let secs = self.0.rem_euclid(86_400);
        write!(
            f,
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl fmt::Debug for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_basic_form_is_what_display_prints() {
        for secs in [
            0,
            1,
            86_399,
            951_782_400,
            1_700_000_000,
            253_402_300_799,
            -1,
            253_402_300_800,
        ] {
            let date = AmzDate::from_unix_seconds(secs);
            let mut quick = String::new();
            date.push_basic(&mut quick);
            assert_eq!(quick, date.to_string(), "{secs}");
        }
    }

    #[test]
    fn parses_and_prints_round_trip() {
        let d = AmzDate::parse("20150830T123600Z").unwrap();
        assert_eq!(d.unix_seconds(), 1_440_938_160);
        assert_eq!(d.to_string(), "20150830T123600Z");
        assert_eq!(d.date_stamp(), "20150830");
        assert_eq!(d.to_iso8601_extended(), "2015-08-30T12:36:00Z");
        let leap = AmzDate::parse("20240229T235959Z").unwrap();
        assert_eq!(leap.to_string(), "20240229T235959Z");
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "20150830T123600",
            "20150830 123600Z",
            "20151330T123600Z",
            "20150230T123600Z",
            "20230229T000000Z",
            "20150830T246000Z",
            "2015083XT123600Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(AmzDate::parse(bad), None, "{bad}");
        }
    }
}
