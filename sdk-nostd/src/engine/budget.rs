//! Link budgets and the arming of costly links.

use super::*;

/// A link's budget use in its current window, as carried across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkSpend {
    /// Bytes charged in the current window.
    pub spent: u64,
    /// How much of the current window had passed.
    pub window_elapsed: Duration,
}

/// A byte count kept in two 32-bit halves, so that [`LinkRt`] packs to 4-byte alignment
/// without padding (12 bytes over the three links an engine holds).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bytes([u32; 2]);

impl Bytes {
    pub(super) fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

impl From<u64> for Bytes {
    fn from(n: u64) -> Self {
        Bytes([n as u32, (n >> 32) as u32])
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct LinkRt {
    pub(super) window_start: Stamp,
    pub(super) spent: Bytes,
    pub(super) app_down: bool,
    pub(super) armed: bool,
    pub(super) exhausted: bool,
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Arms or disarms the costly links as route health now says.
    #[inline]
    pub(super) fn refresh_arming(&mut self) {
        // Arming only matters where a costly link could ever be used; that check is inlined
        // (most configurations have none) and the work kept out of line.
        if self.facts & HAS_COSTLY != 0 {
            self.rearm();
        }
    }

    #[inline(never)]
    fn rearm(&mut self) {
        let (ne, links) = (self.config.endpoints().len(), self.config.links());
        let cheap_up = (0..ne).any(|e| {
            links
                .iter()
                .enumerate()
                .any(|(l, link)| link.cost != Cost::Costly && self.status(e, l) != Status::Dead)
        });
        if cheap_up {
            self.cheap_down_since = Instant::NEVER;
            for l in 0..links.len() {
                if self.links[l].armed {
                    self.links[l].armed = false;
                    self.push_event(Raw::LinkDisarmed(l as u8));
                }
            }
            return;
        }
        self.cheap_down_since = self.cheap_down_since.min(self.now);
        for l in 0..links.len() {
            let link = &self.config.links()[l];
            let arm = link.cost == Cost::Costly
                && link.usable()
                && !self.links[l].armed
                && !self.links[l].app_down
                && self.now.saturating_since(self.cheap_down_since) >= link.arm_after;
            if arm {
                self.links[l].armed = true;
                self.push_event(Raw::LinkArmed(l as u8));
            }
        }
    }
}
