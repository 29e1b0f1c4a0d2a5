//! Queue times as integer microseconds since the Unix epoch (docs/queue.md#time-precision-and-range).
//!
//! Every provider stores `next_attempt_at` through [`Micros`], so every provider truncates the
//! same way (towards the past) and orders instants, not strings (docs/queue.md#time-precision-and-range).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant as whole microseconds since the Unix epoch; negative before 1970.
///
/// Covers about ±292,000 years, so every instant from year 1 to 9999 fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    /// Converts an instant, truncating towards the past to whole microseconds.
    ///
    /// Returns `None` for an instant outside the `i64` microsecond range.
    #[must_use]
    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).ok().map(Micros),
            Err(e) => {
                let before = e.duration();
                // Round the magnitude up so the result is the floor of the true instant.
                let whole = before.as_micros() + u128::from(before.subsec_nanos() % 1000 != 0);
                i64::try_from(whole).ok().map(|m| Micros(-m))
            }
        }
    }

    /// Converts back to an instant. Exact for every value `from_system_time` produced.
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
    }

    /// The order-preserving big-endian key of this instant: the sign bit flipped, so byte order
    /// equals numeric order (for byte-ordered stores such as redb).
    #[must_use]
    pub fn to_order_bytes(self) -> [u8; 8] {
        (self.0.cast_unsigned() ^ (1 << 63)).to_be_bytes()
    }

    /// Inverse of [`Micros::to_order_bytes`].
    #[must_use]
    pub fn from_order_bytes(bytes: [u8; 8]) -> Self {
        Micros((u64::from_be_bytes(bytes) ^ (1 << 63)).cast_signed())
    }
}

/// Truncates an instant to the microsecond precision every provider stores (towards the past).
///
/// Instants outside the representable range are returned unchanged.
#[must_use]
pub fn truncate_to_micros(t: SystemTime) -> SystemTime {
    Micros::from_system_time(t).map_or(t, Micros::to_system_time)
}

/// An instant as RFC 3339 text in UTC with nanoseconds (`2026-11-26T10:11:12.123456789Z`), as
/// envelopes carry times. Instants before 1970 work too (proleptic Gregorian calendar).
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => (i128::from(after.as_secs()), after.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            let (whole, frac) = (-i128::from(before.as_secs()), before.subsec_nanos());
            if frac == 0 { (whole, 0) } else { (whole - 1, 1_000_000_000 - frac) }
        }
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i128) -> (i128, i128, i128) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i128::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_before_and_after_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000, 253_402_300_799_999_999] {
            let t = Micros(micros).to_system_time();
            assert_eq!(Micros::from_system_time(t), Some(Micros(micros)));
        }
    }

    #[test]
    fn truncates_towards_the_past() {
        let after = UNIX_EPOCH + Duration::from_nanos(1_999);
        assert_eq!(Micros::from_system_time(after), Some(Micros(1)));
        let before = UNIX_EPOCH - Duration::from_nanos(1_001);
        assert_eq!(Micros::from_system_time(before), Some(Micros(-2)));
    }

    #[test]
    fn order_bytes_sort_like_numbers() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let keys: Vec<_> = values.iter().map(|&v| Micros(v).to_order_bytes()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for v in values {
            assert_eq!(Micros::from_order_bytes(Micros(v).to_order_bytes()), Micros(v));
        }
    }

    #[test]
    fn rfc3339_formats_both_sides_of_the_epoch() {
        let t = UNIX_EPOCH + Duration::new(1_764_151_872, 123_456_789);
        assert_eq!(rfc3339(t), "2025-11-26T10:11:12.123456789Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_nanos(1)), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(62_135_596_800)),
            "0001-01-01T00:00:00.000000000Z"
        );
    }
}
