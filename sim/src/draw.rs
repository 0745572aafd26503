//! Seeded draws: every random choice of the world is a hash of the seed and the choice's
//! coordinates, so nothing depends on the order devices are visited in.

/// A 64-bit mix of the seed and two coordinates.
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A mix as a uniform draw in `[0, 1)`.
pub(crate) fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Salts for [`mix`], one per kind of choice.
pub(crate) mod salt {
    /// A device's phase within its interval.
    pub const PHASE: u64 = 1;
    /// A record's payload size.
    pub const SIZE: u64 = 2;
    /// A record's class.
    pub const CLASS: u64 = 3;
    /// A transmit's round trip.
    pub const LATENCY: u64 = 4;
    /// Whether a link fault hits a device (plus the fault's index).
    pub const FAULT: u64 = 5;
    /// Where in its cycle a link fault finds a device (plus the fault's index).
    pub const FAULT_PHASE: u64 = 6;
    /// The engine's own seed (plus the boot generation).
    pub const ENGINE: u64 = 7;
    /// Whether a device reboots; `REBOOT + 1`: its first reboot.
    pub const REBOOT: u64 = 8;
    /// Far from `ENGINE + generation`, which grows with every reboot.
    pub const PAYLOAD: u64 = 1 << 20;
}
