//! Consumer-side duplicate detection by [`MessageId`].
//!
//! Failover can deliver a record twice (a timeout after the bytes left, a replay to the
//! other region). Every record carries `device:epoch:seq`; a consumer in either region keeps
//! a sliding window of sequence numbers per device and epoch and drops what it has seen.
//!
//! ```
//! use twinhub::dedup::{Dedup, Verdict};
//! let mut dedup = Dedup::new(4096);
//! let id = "sensor-1:3:17".parse().unwrap();
//! assert_eq!(dedup.check(&id), Verdict::New);
//! assert_eq!(dedup.check(&id), Verdict::Duplicate);
//! ```

use std::collections::HashMap;

use twinhub_core::MessageId;

/// What [`Dedup::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: process it.
    New,
    /// Seen before: drop it.
    Duplicate,
    /// Older than its epoch's window: it cannot be told apart; the consumer decides (most
    /// drop it, as a replay from long ago). An epoch the window no longer remembers is
    /// never `TooOld`: its records count as new, so a forgotten epoch can at worst let a
    /// duplicate through, never drop a record.
    TooOld,
}

/// Epochs remembered per device; a device restarts far less often than this many times
/// within a replay window.
const EPOCHS_PER_DEVICE: usize = 4;

#[derive(Debug)]
struct Window {
    epoch: u32,
    /// When this epoch was last checked (the `Dedup`'s own counter), so the epoch used
    /// least recently is forgotten first: epochs need not grow (a device without a
    /// persisted counter draws them at random), so their values say nothing of age.
    used: u64,
    /// Highest sequence number seen, plus one.
    top: u64,
    /// Bit i set: sequence `top - 1 - i` was seen.
    bits: Vec<u64>,
}

impl Window {
    fn new(epoch: u32, size: usize) -> Self {
        Window {
            epoch,
            used: 0,
            top: 0,
            bits: vec![0; size.div_ceil(64)],
        }
    }

    fn size(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn bit(&mut self, back: u64) -> (&mut u64, u64) {
        (&mut self.bits[(back / 64) as usize], 1 << (back % 64))
    }

    fn check(&mut self, seq: u64) -> Verdict {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.shift(shift);
            self.top = seq + 1;
            let (word, mask) = self.bit(0);
            *word |= mask;
            return Verdict::New;
        }
        let back = self.top - 1 - seq;
        if back >= self.size() {
            return Verdict::TooOld;
        }
        let (word, mask) = self.bit(back);
        if *word & mask != 0 {
            Verdict::Duplicate
        } else {
            *word |= mask;
            Verdict::New
        }
    }

    /// Moves the window forward by `n` sequence numbers.
    fn shift(&mut self, n: u64) {
        if n >= self.size() {
            self.bits.iter_mut().for_each(|w| *w = 0);
            return;
        }
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s] << bits);
            let lo = match (bits, src.and_then(|s| s.checked_sub(1))) {
                (0, _) | (_, None) => 0,
                (b, Some(s)) => self.bits[s] >> (64 - b),
            };
            self.bits[i] = hi | lo;
        }
    }
}

/// Remembers recent message ids per device to drop duplicates exactly.
#[derive(Debug)]
pub struct Dedup {
    window: usize,
    checks: u64,
    devices: HashMap<String, Vec<Window>>,
}

impl Dedup {
    /// Remembers the last `window` sequence numbers per device and epoch (rounded up to a
    /// multiple of 64). Size it to exceed the records a device can have pending: a
    /// failover replays at most its outbox.
    pub fn new(window: usize) -> Self {
        Dedup {
            window: window.max(64),
            checks: 0,
            devices: HashMap::new(),
        }
    }

    /// Checks an id and records it as seen.
    pub fn check(&mut self, id: &MessageId) -> Verdict {
        self.checks += 1;
        let now = self.checks;
        let windows = self
            .devices
            .entry(id.device.as_str().to_owned())
            .or_default();
        if let Some(w) = windows.iter_mut().find(|w| w.epoch == id.epoch) {
            w.used = now;
            return w.check(id.seq);
        }
        // An epoch not remembered: keep the few used most recently, forget the least.
        if windows.len() >= EPOCHS_PER_DEVICE
            && let Some(stale) = windows
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.used)
                .map(|(i, _)| i)
        {
            windows.swap_remove(stale);
        }
        let mut w = Window::new(id.epoch, self.window);
        w.used = now;
        let verdict = w.check(id.seq);
        windows.push(w);
        verdict
    }

    /// Devices tracked.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn id(d: &str, epoch: u32, seq: u64) -> MessageId {
        format!("{d}:{epoch}:{seq}").parse().unwrap()
    }

    #[test]
    fn devices_and_epochs_are_separate() {
        let mut d = Dedup::new(128);
        assert_eq!(d.check(&id("a", 1, 5)), Verdict::New);
        assert_eq!(d.check(&id("b", 1, 5)), Verdict::New);
        assert_eq!(d.check(&id("a", 2, 5)), Verdict::New);
        assert_eq!(d.check(&id("a", 1, 5)), Verdict::Duplicate);
        assert_eq!(d.check(&id("a", 1, 4)), Verdict::New);
        assert_eq!(d.check(&id("a", 1, 1000)), Verdict::New);
        assert_eq!(d.check(&id("a", 1, 4)), Verdict::TooOld);
        for e in 3..8 {
            d.check(&id("a", e, 0));
        }
        assert_eq!(
            d.check(&id("a", 1, 2000)),
            Verdict::New,
            "epoch 1 forgotten: new, never dropped"
        );
        assert_eq!(d.devices(), 2);
    }

    #[test]
    fn epochs_need_not_grow() {
        // A device without a persisted counter draws its epochs at random: a start with a
        // lower epoch than the ones remembered is new, and still deduplicated.
        let mut d = Dedup::new(128);
        for e in [900, 700, 800, 600, 100, 50] {
            assert_eq!(d.check(&id("a", e, 0)), Verdict::New, "epoch {e}");
            assert_eq!(d.check(&id("a", e, 0)), Verdict::Duplicate, "epoch {e}");
        }
        // The epoch used least recently is forgotten, not the lowest: 50 and 100 are kept.
        assert_eq!(d.check(&id("a", 50, 0)), Verdict::Duplicate);
        assert_eq!(d.check(&id("a", 100, 0)), Verdict::Duplicate);
        assert_eq!(d.check(&id("a", 900, 0)), Verdict::New, "forgotten");
    }

    proptest! {
        /// Within the window, the verdict matches an exact set of what was seen.
        #[test]
        fn matches_a_set_within_the_window(seqs in prop::collection::vec(0u64..600, 1..400)) {
            let mut d = Dedup::new(1024);
            let mut seen = HashSet::new();
            for s in seqs {
                let expected = if seen.insert(s) { Verdict::New } else { Verdict::Duplicate };
                prop_assert_eq!(d.check(&id("dev", 1, s)), expected);
            }
        }
    }
}
