//! Time as the services see it: microseconds since the Unix epoch (UTC),
//! from a clock that tests can set.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;
/// One hour in [`Micros`].
pub const HOUR: Micros = 3_600 * SECOND;
/// One day in [`Micros`].
pub const DAY: Micros = 86_400 * SECOND;

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Micros;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as Micros)
            .unwrap_or(0)
    }
}

/// A clock that stands still until a test moves it.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: Micros) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: Micros) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Micros) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A protobuf timestamp.
pub fn to_timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(SECOND),
        nanos: (micros.rem_euclid(SECOND) * 1_000) as i32,
    }
}

/// A protobuf timestamp in microseconds; `None` when it is not a valid time.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(t.nanos / 1000))
}

/// RFC 3339 in UTC to the second, for messages: `2026-01-31T09:30:00Z`.
pub fn to_rfc3339(micros: Micros) -> String {
    let seconds = micros.div_euclid(SECOND);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A calendar date `YYYY-MM-DD` (UTC) to its first instant; `None` when it
/// is not one (a wrong shape, month 13, February 30).
pub fn parse_date(text: &str) -> Option<Micros> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month {
        return None;
    }
    Some(days_from_civil(year, month as u32, day as u32) * DAY)
}

/// The same time of day `years` calendar years later (UTC); 29 February
/// becomes 28 February in a year that has none.
pub fn add_years(at: Micros, years: u32) -> Micros {
    let (days, of_day) = (at.div_euclid(DAY), at.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    let year = year + i64::from(years);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let day = if month == 2 && day == 29 && !leap {
        28
    } else {
        day
    };
    days_from_civil(year, month, day) * DAY + of_day
}

/// The UTC calendar date of an instant, `YYYY-MM-DD`.
pub fn to_date(micros: Micros) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(DAY));
    format!("{year:04}-{month:02}-{day:02}")
}

/// A (year, month, day) date to days since 1970-01-01 (Howard Hinnant's
/// algorithm, the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_in_utc() {
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00Z");
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(
            to_rfc3339(1_709_210_096 * SECOND + 999_999),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(to_rfc3339(-SECOND), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn dates_parse_strictly_and_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800 * SECOND));
        assert_eq!(
            parse_date("2026-12-01").map(to_date).as_deref(),
            Some("2026-12-01")
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-04-31",
            "2026-1-01",
            "26-01-01x",
            "2026/01/01",
            "",
            "+026-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        for days in [-600_000, -1, 0, 59, 60, 11_016, 20_000, 2_000_000] {
            let date = to_date(days * DAY);
            assert_eq!(parse_date(&date), Some(days * DAY), "{date}");
        }
    }

    #[test]
    fn years_are_added_on_the_calendar() {
        let at = parse_date("2026-03-01").unwrap() + 5 * HOUR;
        assert_eq!(
            add_years(at, 1),
            parse_date("2027-03-01").unwrap() + 5 * HOUR
        );
        assert_eq!(
            add_years(at, 3),
            parse_date("2029-03-01").unwrap() + 5 * HOUR
        );
        let leap = parse_date("2028-02-29").unwrap();
        assert_eq!(add_years(leap, 1), parse_date("2029-02-28").unwrap());
        assert_eq!(add_years(leap, 4), leap + (365 * 3 + 366) * DAY);
    }

    #[test]
    fn timestamps_split_seconds_and_nanos() {
        let t = to_timestamp(1_500_001);
        assert_eq!((t.seconds, t.nanos), (1, 500_001_000));
        let t = to_timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(10);
        assert_eq!(clock.now(), 10);
        clock.advance(DAY);
        assert_eq!(clock.now(), 10 + DAY);
        clock.set(5);
        assert_eq!(clock.now(), 5);
    }
}
