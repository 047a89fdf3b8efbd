//! The current time and C `strftime`, in UTC, for `strftime_now`, `datetime` and `date_string`.

/// Seconds since 1970-01-01 UTC, now.
pub(super) fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Days since 1970-01-01 -> (year, month 1..=12, day 1..=31) (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// C `strftime` for a UTC time (the common conversions; glibc's `-` flag drops padding).
pub(super) fn strftime(secs: i64, fmt: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let wday = (days + 4).rem_euclid(7) as usize;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(mo - 1) as usize] + i64::from(d) + i64::from(mo > 2 && is_leap(y));
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |v: i64, width: usize, padc: char| -> String {
            if no_pad {
                v.to_string()
            } else if padc == ' ' {
                format!("{v:>width$}")
            } else {
                format!("{v:0width$}")
            }
        };
        let h12 = if h % 12 == 0 { 12 } else { h % 12 };
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&num(y.rem_euclid(100), 2, '0')),
            Some('C') => out.push_str(&num(y.div_euclid(100), 2, '0')),
            Some('m') => out.push_str(&num(i64::from(mo), 2, '0')),
            Some('d') => out.push_str(&num(i64::from(d), 2, '0')),
            Some('e') => out.push_str(&num(i64::from(d), 2, ' ')),
            Some('j') => out.push_str(&num(yday, 3, '0')),
            Some('H') => out.push_str(&num(h, 2, '0')),
            Some('I') => out.push_str(&num(h12, 2, '0')),
            Some('M') => out.push_str(&num(mi, 2, '0')),
            Some('S') => out.push_str(&num(s, 2, '0')),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('b') | Some('h') => out.push_str(&MONTHS[(mo - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(mo - 1) as usize]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('u') => out.push_str(&(if wday == 0 { 7 } else { wday }).to_string()),
            Some('w') => out.push_str(&wday.to_string()),
            Some('s') => out.push_str(&secs.to_string()),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('F') => out.push_str(&strftime(secs, "%Y-%m-%d")),
            Some('T') => out.push_str(&strftime(secs, "%H:%M:%S")),
            Some('R') => out.push_str(&strftime(secs, "%H:%M")),
            Some('D') | Some('x') => out.push_str(&strftime(secs, "%m/%d/%y")),
            Some('X') => out.push_str(&strftime(secs, "%H:%M:%S")),
            Some('c') => out.push_str(&strftime(secs, "%a %b %e %H:%M:%S %Y")),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday
        let t = 1_709_211_909;
        assert_eq!(strftime(t, "%Y-%m-%d %H:%M:%S"), "2024-02-29 13:05:09");
        assert_eq!(strftime(t, "%d %b %Y"), "29 Feb 2024");
        assert_eq!(
            strftime(t, "%A %B %-d, %I %p, day %j"),
            "Thursday February 29, 01 PM, day 060"
        );
        assert_eq!(strftime(0, "%F %T %a"), "1970-01-01 00:00:00 Thu");
        assert_eq!(strftime(-86_400, "%F %a"), "1969-12-31 Wed");
    }
}
