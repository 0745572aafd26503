//! The world's own account of every device's records: which are resolved (delivered to
//! some region, or reported dropped with a reason), numbered across reboots.
//!
//! Each device keeps a window of 64 sequence numbers in its slot ([`Window`]); a device
//! whose outbox holds a deeper backlog, or that rebooted, has more in the shard's side
//! tables, as few do. A record neither resolved nor still in the device's store at the
//! end is *lost*.

use std::collections::{HashMap, VecDeque};

/// Answers carry the device's boot generation in the transmit id's top bits, so an
/// answer to a transmit made before a reboot is recognised and ignored.
const GEN_SHIFT: u32 = 28;
/// The engine's transmit id below the generation bits.
pub(crate) const TX_MASK: u32 = (1 << GEN_SHIFT) - 1;

/// The widest window, in words beyond the first: far more records than a 16 MiB outbox
/// holds.
const MAX_WIDE_WORDS: usize = 1 << 12;

/// A device's resolved window, kept in its slot: every sequence number below `base` is
/// resolved (a fresh engine starts at 0), and `bits` flags `base..base + 64`.
#[derive(Debug, Default)]
pub(crate) struct Window {
    base: u64,
    bits: u64,
}

/// One byte of marks a device carries: what has been measured of it, and which of the
/// shard's side tables hold something of it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Marks(u8);

impl Marks {
    /// Its failover has been measured.
    pub const FAILED_OVER: u8 = 1;
    /// Its failback has been measured.
    pub const FAILED_BACK: u8 = 2;
    /// It has rebooted: its boots are in [`Ledger`]'s side table.
    pub const REBOOTED: u8 = 4;
    /// Its window has words in [`Ledger`]'s side table.
    pub const WIDE: u8 = 8;

    /// Whether every mark in `m` is set.
    pub fn has(self, m: u8) -> bool {
        self.0 & m == m
    }

    /// Sets the marks in `m`.
    pub fn set(&mut self, m: u8) {
        self.0 |= m;
    }

    fn clear(&mut self, m: u8) {
        self.0 &= !m;
    }
}

/// What the ledger keeps about a device that rebooted.
#[derive(Debug, Default)]
pub(crate) struct Boots {
    /// Boot generation (answers tagged with another are stale).
    pub generation: u32,
    /// Epochs whose records may still be about, with the world's sequence offset of each:
    /// a record `(epoch, seq)` is number `offset + seq` of the device.
    pub epochs: Vec<(u32, u64)>,
    /// Records the current engine recovered at start (counted in its `accepted`).
    pub recovered: u64,
}

/// What marking a record resolved found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// First time: the record is now resolved.
    New,
    /// It was resolved before.
    Again,
    /// Too far ahead of the device's window to keep.
    OutOfWindow,
}

/// A device as the ledger sees it: its slot in the shard, its window and its marks.
pub(crate) struct Account<'d> {
    /// The device's slot in its shard.
    pub slot: u32,
    /// Its window.
    pub window: &'d mut Window,
    /// Its marks.
    pub marks: &'d mut Marks,
}

/// A shard's side tables: boots of devices that rebooted, and window words of devices
/// with a backlog beyond 64 records.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    boots: HashMap<u32, Boots>,
    wide: HashMap<u32, VecDeque<u64>>,
}

impl Ledger {
    /// The boots of a device that rebooted.
    fn boots(&self, marks: Marks, slot: u32) -> Option<&Boots> {
        if marks.has(Marks::REBOOTED) {
            self.boots.get(&slot)
        } else {
            None
        }
    }

    /// The boots of a device about to reboot.
    pub fn boots_mut(&mut self, slot: u32) -> &mut Boots {
        self.boots.entry(slot).or_default()
    }

    /// Records the device's current engine recovered when it started.
    pub fn recovered(&self, marks: Marks, slot: u32) -> u64 {
        self.boots(marks, slot).map_or(0, |b| b.recovered)
    }

    /// The world's number of a device's record `(epoch, seq)`: its sequence across
    /// reboots.
    pub fn number(&self, marks: Marks, slot: u32, epoch: u32, seq: u64) -> u64 {
        self.boots(marks, slot)
            .and_then(|b| b.epochs.iter().find(|(e, _)| *e == epoch))
            .map_or(seq, |(_, offset)| offset + seq)
    }

    /// A transmit id as queued: tagged with the device's boot generation.
    pub fn tag(&self, marks: Marks, slot: u32, id: u32) -> u32 {
        if !marks.has(Marks::REBOOTED) {
            return id;
        }
        let generation = self.boots(marks, slot).map_or(0, |b| b.generation);
        (id & TX_MASK) | ((generation & 0xf) << GEN_SHIFT)
    }

    /// Whether a queued answer belongs to an engine from before the device's last reboot.
    pub fn stale(&self, marks: Marks, slot: u32, tx: u32) -> bool {
        let generation = self.boots(marks, slot).map_or(0, |b| b.generation);
        tx >> GEN_SHIFT != generation & 0xf
    }

    /// Marks record number `n` of a device resolved.
    pub fn resolve(&mut self, dev: Account<'_>, n: u64) -> Resolved {
        let w = &mut *dev.window;
        if n < w.base {
            return Resolved::Again;
        }
        let off = n - w.base;
        if off < 64 {
            let bit = 1u64 << off;
            if w.bits & bit != 0 {
                return Resolved::Again;
            }
            w.bits |= bit;
        } else {
            let word = (off / 64 - 1) as usize;
            if word >= MAX_WIDE_WORDS {
                return Resolved::OutOfWindow;
            }
            let words = self.wide.entry(dev.slot).or_default();
            dev.marks.set(Marks::WIDE);
            if words.len() <= word {
                words.resize(word + 1, 0);
            }
            let bit = 1u64 << (off % 64);
            if words[word] & bit != 0 {
                return Resolved::Again;
            }
            words[word] |= bit;
        }
        self.slide(dev);
        Resolved::New
    }

    /// Slides a device's window past the resolved records at its front.
    fn slide(&mut self, dev: Account<'_>) {
        let w = dev.window;
        loop {
            let run = w.bits.trailing_ones();
            if run == 0 {
                return;
            }
            let words = match self.wide.get_mut(&dev.slot) {
                Some(words) if dev.marks.has(Marks::WIDE) => words,
                _ => {
                    w.bits = w.bits.checked_shr(run).unwrap_or(0);
                    w.base += u64::from(run);
                    return;
                }
            };
            if run == 64 {
                w.bits = words.pop_front().unwrap_or(0);
            } else {
                // Every word moves down by `run` bits, taking the low bits of the next.
                let mut next = words.front().copied().unwrap_or(0);
                w.bits = (w.bits >> run) | (next << (64 - run));
                for i in 0..words.len() {
                    let after = words.get(i + 1).copied().unwrap_or(0);
                    words[i] = (next >> run) | (after << (64 - run));
                    next = after;
                }
            }
            w.base += u64::from(run);
            while words.back() == Some(&0) {
                words.pop_back();
            }
            if words.is_empty() {
                self.wide.remove(&dev.slot);
                dev.marks.clear(Marks::WIDE);
            }
            // After a partial slide the front record is unresolved; after a whole word
            // the next word's front may be resolved too.
        }
    }
}
