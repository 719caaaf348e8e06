//! INTERNALDATE of copies: the date given to APPEND (OLD's, the `Date:` header's, or none), read
//! leniently from OLD and always written in RFC 3501's strict form (so a malformed or hostile date
//! never reaches NEW's command line), and which instants servers commonly cannot store (outside
//! 32-bit time), so the copy can check what NEW kept. Pure.

use super::DateSource;
use super::adopt::header_of;
use super::identity::header_lines;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`) read leniently: a space-padded or one-digit
/// day and any case of month are accepted. The instant (unix seconds) and the canonical form.
pub(crate) fn parse_date_time(s: &str) -> Option<(i64, String)> {
    let mut words = s.split_ascii_whitespace();
    let (date, time, zone) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let mut dmy = date.split('-');
    let (day, month, year) = (dmy.next()?, dmy.next()?, dmy.next()?);
    if dmy.next().is_some() || !(1..=2).contains(&day.len()) || year.len() != 4 {
        return None;
    }
    let day: u32 = digits(day)?;
    let year: i32 = digits(year)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let hms: Vec<u32> = time
        .split(':')
        .map(|p| if p.len() == 2 { digits(p) } else { None })
        .collect::<Option<_>>()?;
    let [h, mi, sec] = hms[..] else { return None };
    let (sign, zone_digits) = match zone.split_at_checked(1)? {
        ("+", z) => (1, z),
        ("-", z) => (-1, z),
        _ => return None,
    };
    if zone_digits.len() != 4 {
        return None;
    }
    let z: i32 = digits(zone_digits)?;
    let (zh, zm) = (z / 100, z % 100);
    if zm > 59 || zh > 23 {
        return None;
    }
    let offset = chrono::FixedOffset::east_opt(sign * (zh * 3600 + zm * 60))?;
    let naive =
        chrono::NaiveDate::from_ymd_opt(year, month as u32 + 1, day)?.and_hms_opt(h, mi, sec)?;
    let local = naive.and_local_timezone(offset).single()?;
    let canonical = format!(
        "{day:02}-{}-{year:04} {h:02}:{mi:02}:{sec:02} {}{zone_digits}",
        MONTHS[month],
        if sign < 0 { '-' } else { '+' }
    );
    Some((local.timestamp(), canonical))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Instants outside 32-bit `time_t` (before 1970, or after 2038-01-19 03:14:07 UTC): Dovecot,
/// for one, stores the time of the APPEND or a clamped value instead, so the copy checks them.
pub(crate) fn beyond_32bit(instant: i64) -> bool {
    instant < 0 || instant > i64::from(i32::MAX)
}

/// The INTERNALDATE given to APPEND for a message with OLD's `internal` date and these `head`er
/// bytes: OLD's (the default), the `Date:` header's instant (`--idatefromheader`, OLD's
/// INTERNALDATE when it is missing or unparseable), or none (`--nosyncinternaldates`: NEW stamps
/// the time of the copy). OLD's date is rewritten in canonical form; `Err` carries a date from
/// OLD that is not an IMAP date-time (the message is then appended without a date).
pub(crate) fn append_date(
    internal: Option<&str>,
    head: &[u8],
    dates: DateSource,
) -> Result<Option<String>, String> {
    let from_old = || match internal {
        None => Ok(None),
        Some(d) => parse_date_time(d)
            .map(|(_, canonical)| Some(canonical))
            .ok_or_else(|| d.to_string()),
    };
    match dates {
        DateSource::Internal => from_old(),
        DateSource::None => Ok(None),
        DateSource::Header => match header_lines(header_of(head))
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("Date"))
            .and_then(|(_, v)| imap_date_of_header(&String::from_utf8_lossy(&v)))
        {
            Some(d) => Ok(Some(d)),
            None => from_old(),
        },
    }
}

/// An RFC 5322 `Date:` value as an IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`), keeping its
/// zone. Trailing comments such as `(CEST)` are ignored. `None` when it cannot be parsed.
fn imap_date_of_header(value: &str) -> Option<String> {
    let mut v = value.trim();
    while let Some(open) = v.strip_suffix(')').and_then(|rest| rest.rfind('(')) {
        v = v[..open].trim_end();
    }
    let date = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(date.format("%d-%b-%Y %H:%M:%S %z").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_dates() {
        for (header, expected) in [
            (
                "Tue, 5 Mar 2024 14:07:09 +0100",
                Some("05-Mar-2024 14:07:09 +0100"),
            ),
            (
                "Sun, 31 Dec 2023 23:59:59 -0800 (PST)",
                Some("31-Dec-2023 23:59:59 -0800"),
            ),
            (
                "1 Jan 2020 00:00:00 GMT",
                Some("01-Jan-2020 00:00:00 +0000"),
            ),
            (
                "  Fri, 12 Jul 2019 08:30:00 +0000  ",
                Some("12-Jul-2019 08:30:00 +0000"),
            ),
            ("yesterday", None),
            ("", None),
        ] {
            assert_eq!(imap_date_of_header(header).as_deref(), expected, "{header}");
        }
    }

    #[test]
    fn internal_dates_are_read_leniently_and_written_strictly() {
        for (input, expected) in [
            (
                "01-Feb-2024 10:00:00 +0100",
                Some((1_706_778_000, "01-Feb-2024 10:00:00 +0100")),
            ),
            (
                " 1-Feb-2024 10:00:00 +0100",
                Some((1_706_778_000, "01-Feb-2024 10:00:00 +0100")),
            ),
            (
                "1-feb-2024 10:00:00 +0100",
                Some((1_706_778_000, "01-Feb-2024 10:00:00 +0100")),
            ),
            (
                "01-Jan-1960 00:00:00 +0000",
                Some((-315_619_200, "01-Jan-1960 00:00:00 +0000")),
            ),
            (
                "31-Dec-1969 23:59:59 +0000",
                Some((-1, "31-Dec-1969 23:59:59 +0000")),
            ),
            (
                "01-Jan-2040 00:00:00 -0330",
                Some((2_208_988_800 + 12_600, "01-Jan-2040 00:00:00 -0330")),
            ),
            ("", None),
            ("01-Feb-2024", None),
            ("01-Feb-24 10:00:00 +0100", None),
            ("32-Feb-2024 10:00:00 +0100", None),
            ("30-Feb-2024 10:00:00 +0100", None),
            ("01-Foo-2024 10:00:00 +0100", None),
            ("01-Feb-2024 25:00:00 +0100", None),
            ("01-Feb-2024 10:00 +0100", None),
            ("01-Feb-2024 10:00:00 0100", None),
            ("01-Feb-2024 10:00:00 +01", None),
            ("01-Feb-2024 10:00:00 +0100 x", None),
            // an injection attempt from a hostile OLD never reaches NEW's command line
            ("01-Feb-2024 10:00:00 +0100\"\r\nx DELETE INBOX", None),
        ] {
            let got = parse_date_time(input);
            let got = got.as_ref().map(|(t, s)| (*t, s.as_str()));
            assert_eq!(got, expected, "{input:?}");
        }
    }

    #[test]
    fn dates_outside_32_bit_time_are_flagged() {
        for (date, beyond) in [
            ("01-Jan-1970 00:00:00 +0000", false),
            ("19-Jan-2038 03:14:07 +0000", false),
            ("19-Jan-2038 03:14:08 +0000", true),
            ("31-Dec-1969 23:59:59 +0000", true),
            ("01-Jan-1960 00:00:00 +0000", true),
            ("01-Jan-1970 00:30:00 +0100", true),
        ] {
            let (t, _) = parse_date_time(date).unwrap();
            assert_eq!(beyond_32bit(t), beyond, "{date}");
        }
    }

    #[test]
    fn append_dates_by_source() {
        let head = b"Date: Tue, 5 Mar 2024 14:07:09 +0100\r\nSubject: x\r\n\r\n";
        let old = Some(" 1-Feb-2024 10:00:00 +0100");
        let canonical = Ok(Some("01-Feb-2024 10:00:00 +0100".to_string()));
        assert_eq!(append_date(old, head, DateSource::Internal), canonical);
        assert_eq!(append_date(old, head, DateSource::None), Ok(None));
        assert_eq!(
            append_date(old, head, DateSource::Header),
            Ok(Some("05-Mar-2024 14:07:09 +0100".to_string()))
        );
        assert_eq!(
            append_date(old, b"Subject: x\r\n\r\n", DateSource::Header),
            canonical
        );
        assert_eq!(append_date(None, head, DateSource::Internal), Ok(None));
        assert_eq!(
            append_date(Some("garbage"), head, DateSource::Internal),
            Err("garbage".to_string())
        );
    }
}
