//! Sizes, durations and budgets as people write them: `256MiB`, `15m`, `2MiB/1d`.
//!
//! Public so the CLI and applications parse flags (`--drain-timeout 30s`) exactly like the
//! config file does.

use std::time::Duration;

use twinhub_core::Budget;

/// Why a size, duration or budget was refused. The messages read after the quoted value:
/// `"256XB" is not a size (use e.g. 256MiB)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a number followed by a size unit.
    #[error("is not a size (use e.g. 256MiB, 64KB or 1000)")]
    Size,
    /// Not a number followed by a duration unit.
    #[error("is not a duration (use e.g. 250ms, 30s, 15m, 1h or 1d)")]
    Duration,
    /// Not `SIZE/DURATION`.
    #[error("is not a budget (use e.g. 2MiB/1d)")]
    Budget,
    /// The value does not fit in 64 bits (bytes or milliseconds).
    #[error("is too large")]
    Overflow,
    /// A budget whose window is zero would refill continuously, so it is refused.
    #[error("is not a budget: the window must be longer than 0 (use e.g. 2MiB/1d)")]
    ZeroWindow,
}

/// Splits a leading run of ASCII digits from the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    // `end` is at an ASCII boundary, so both halves are valid slices.
    s.split_at(end)
}

/// Parses a byte size: a whole number with an optional unit, `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024). A space may separate the
/// number and the unit.
///
/// ```
/// use twinhub::config::units::parse_size;
/// assert_eq!(parse_size("256MiB"), Ok(256 << 20));
/// assert_eq!(parse_size("64 KB"), Ok(64_000));
/// assert_eq!(parse_size("1000"), Ok(1000));
/// assert!(parse_size("256XB").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let (digits, unit) = split_digits(s.trim());
    if digits.is_empty() {
        return Err(UnitError::Size);
    }
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(UnitError::Size),
    };
    // Only digits remain, so the only way parsing fails is overflow.
    let n: u64 = digits.parse().map_err(|_| UnitError::Overflow)?;
    n.checked_mul(multiplier).ok_or(UnitError::Overflow)
}

/// Parses a duration: one or more `NUMBER UNIT` parts with units `ms`, `s`, `m`
/// (minutes), `h` and `d`, e.g. `30s`, `15m`, `1h30m`. A bare number is refused because
/// its unit would be a guess.
///
/// ```
/// use std::time::Duration;
/// use twinhub::config::units::parse_duration;
/// assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert!(parse_duration("30").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(UnitError::Duration);
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let (digits, after) = split_digits(rest);
        if digits.is_empty() {
            return Err(UnitError::Duration);
        }
        let after = after.trim_start();
        // `ms` before `m`, so milliseconds are not read as minutes.
        let (unit_ms, tail): (u64, &str) = if let Some(t) = after.strip_prefix("ms") {
            (1, t)
        } else if let Some(t) = after.strip_prefix('s') {
            (1000, t)
        } else if let Some(t) = after.strip_prefix('m') {
            (60_000, t)
        } else if let Some(t) = after.strip_prefix('h') {
            (3_600_000, t)
        } else if let Some(t) = after.strip_prefix('d') {
            (86_400_000, t)
        } else {
            return Err(UnitError::Duration);
        };
        let n: u64 = digits.parse().map_err(|_| UnitError::Overflow)?;
        let part = n.checked_mul(unit_ms).ok_or(UnitError::Overflow)?;
        total_ms = total_ms.checked_add(part).ok_or(UnitError::Overflow)?;
        rest = tail.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a budget `SIZE/DURATION`, e.g. `2MiB/1d`: that many bytes per fixed window. The
/// window must be longer than zero.
///
/// ```
/// use twinhub::config::units::parse_budget;
/// use twinhub::{Budget, EngineDuration};
/// assert_eq!(
///     parse_budget("2MiB/1d"),
///     Ok(Budget { bytes: 2 << 20, window: EngineDuration::from_days(1) })
/// );
/// ```
pub fn parse_budget(s: &str) -> Result<Budget, UnitError> {
    let (size, window) = s.split_once('/').ok_or(UnitError::Budget)?;
    let bytes = parse_size(size).map_err(|e| match e {
        UnitError::Overflow => UnitError::Overflow,
        _ => UnitError::Budget,
    })?;
    let window = parse_duration(window).map_err(|e| match e {
        UnitError::Overflow => UnitError::Overflow,
        _ => UnitError::Budget,
    })?;
    if window.is_zero() {
        return Err(UnitError::ZeroWindow);
    }
    Ok(Budget {
        bytes,
        window: to_engine(window),
    })
}

/// Converts a std duration to the engine's millisecond duration, saturating (the engine
/// counts milliseconds in a `u64`, which no configured value reaches).
pub fn to_engine(d: Duration) -> twinhub_core::Duration {
    twinhub_core::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Converts an engine duration to a std duration.
pub fn from_engine(d: twinhub_core::Duration) -> Duration {
    Duration::from_millis(d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("MiB"), Err(UnitError::Size));
        assert_eq!(parse_size("1.5MiB"), Err(UnitError::Size));
        assert_eq!(parse_size("-1"), Err(UnitError::Size));
        assert_eq!(parse_size("1mib"), Err(UnitError::Size));
        assert_eq!(parse_size("99999999999999999999"), Err(UnitError::Overflow));
        assert_eq!(parse_size("17179869184GiB"), Err(UnitError::Overflow));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(""), Err(UnitError::Duration));
        assert_eq!(parse_duration("s"), Err(UnitError::Duration));
        assert_eq!(parse_duration("5x"), Err(UnitError::Duration));
        assert_eq!(parse_duration("5sec"), Err(UnitError::Duration));
        assert_eq!(
            parse_duration("99999999999999999d"),
            Err(UnitError::Overflow)
        );
    }

    #[test]
    fn budgets() {
        assert_eq!(parse_budget("2MiB"), Err(UnitError::Budget));
        assert_eq!(parse_budget("2XB/1d"), Err(UnitError::Budget));
        assert_eq!(parse_budget("2MiB/1y"), Err(UnitError::Budget));
        assert_eq!(parse_budget("2MiB/0s"), Err(UnitError::ZeroWindow));
        assert_eq!(
            parse_budget("500 KB / 12h"),
            Ok(Budget {
                bytes: 500_000,
                window: twinhub_core::Duration::from_hours(12)
            })
        );
    }
}
