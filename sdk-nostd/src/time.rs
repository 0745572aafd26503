//! The engine's own clock types. The engine never reads a clock: the caller passes `now`.

use core::fmt;
use core::ops::{Add, Sub};

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds from an origin the caller chooses.
///
/// Use one origin for the whole life of a store: with a store that survives restarts (a
/// disk outbox), pick a stable one such as the Unix epoch so record ages stay meaningful.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Instant(u64);

/// A span of time in milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Duration(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);
    /// Later than every real instant; used for "never".
    pub const NEVER: Instant = Instant(u64::MAX);

    /// `ms` milliseconds after the origin.
    #[inline]
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the origin.
    #[inline]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    #[inline]
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Instant::NEVER`].
    #[inline]
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable span.
    pub const MAX: Duration = Duration(u64::MAX);

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }
    /// From seconds.
    #[inline]
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }
    /// From minutes.
    pub const fn from_mins(m: u64) -> Self {
        Duration::from_secs(m.saturating_mul(60))
    }
    /// From hours.
    pub const fn from_hours(h: u64) -> Self {
        Duration::from_mins(h.saturating_mul(60))
    }
    /// From days.
    pub const fn from_days(d: u64) -> Self {
        Duration::from_hours(d.saturating_mul(24))
    }
    /// In milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// `self * 2^exp`, saturating.
    #[inline]
    pub const fn saturating_pow2(self, exp: u32) -> Duration {
        if exp >= 63 {
            return if self.0 == 0 {
                Duration(0)
            } else {
                Duration::MAX
            };
        }
        Duration(self.0.saturating_mul(1u64 << exp))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    #[inline]
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Add<Duration> for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    #[inline]
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Instant::NEVER {
            f.write_str("never")
        } else {
            write!(f, "t+{}ms", self.0)
        }
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

// Printed as milliseconds, as `Debug` does, rather than as the inner integer.
#[cfg(feature = "defmt")]
impl defmt::Format for Instant {
    fn format(&self, f: defmt::Formatter<'_>) {
        if *self == Instant::NEVER {
            defmt::write!(f, "never")
        } else {
            defmt::write!(f, "{=u64}ms", self.0)
        }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Duration {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=u64}ms", self.0)
    }
}
