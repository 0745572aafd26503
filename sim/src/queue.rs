//! The world's event queue: a calendar of one-millisecond buckets for device wake-ups,
//! reboots and transmit outcomes, with a heap for events beyond its horizon.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use twinhub_core::{Duration as EDuration, Outcome};

/// The retry-after a throttling region answers with.
const THROTTLE_RETRY_MS: u64 = 1_000;

/// What happens to a device at an event. Three bits in the queue (see [`Near`]).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The device wakes: a record may be due, or the engine's deadline.
    Wake = 0,
    /// A region answers a transmit: delivered.
    Delivered = 1,
    /// A transmit failed: the region refused it or the link was down.
    Unreachable = 2,
    /// A region answers a transmit: over capacity, retry later.
    Throttled = 3,
    /// The device restarts its engine.
    Reboot = 4,
}

impl Kind {
    /// The kind packed in three bits by [`Near::pack`].
    fn from_bits(bits: u32) -> Kind {
        match bits {
            0 => Kind::Wake,
            1 => Kind::Delivered,
            2 => Kind::Unreachable,
            3 => Kind::Throttled,
            _ => Kind::Reboot,
        }
    }

    /// Whether this is an answer to a transmit (it carries the transmit's id).
    pub fn is_answer(self) -> bool {
        !matches!(self, Kind::Wake | Kind::Reboot)
    }

    /// The engine's outcome for an answer.
    pub fn outcome(self) -> Outcome {
        match self {
            Kind::Delivered => Outcome::Delivered,
            Kind::Unreachable => Outcome::Unreachable,
            _ => Outcome::Throttled {
                retry_after: Some(EDuration::from_millis(THROTTLE_RETRY_MS)),
            },
        }
    }
}

/// One queued event. Fields in this order, so the heap orders by time first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    /// Simulated time, ms.
    pub at: u32,
    /// The device's slot in its shard.
    pub slot: u32,
    /// For answers: the transmit id, tagged with the device's boot generation.
    pub tx: u32,
    /// What happens.
    pub kind: Kind,
}

/// Buckets in the calendar: one per millisecond, about a minute ahead.
const BUCKETS: u64 = 1 << 16;

/// An event in a bucket, which says its time: the slot with the kind in its low 3 bits,
/// and the transmit id. Eight bytes, as a large fleet keeps millions queued.
#[derive(Clone, Copy)]
struct Near(u32, u32);

impl Near {
    fn pack(e: Entry) -> Near {
        Near((e.slot << 3) | e.kind as u32, e.tx)
    }
    fn unpack(self, at: u64) -> Entry {
        Entry {
            at: at as u32,
            slot: self.0 >> 3,
            tx: self.1,
            kind: Kind::from_bits(self.0 & 7),
        }
    }
}

/// A calendar queue: events within [`BUCKETS`] ms of now sit in per-millisecond buckets
/// (O(1) in and out, in insertion order within a millisecond, which is deterministic);
/// later ones wait in a heap until their bucket comes into range.
pub(crate) struct Queue {
    ring: Vec<Vec<Near>>,
    far: BinaryHeap<Reverse<Entry>>,
    /// The millisecond being drained.
    now: u64,
    /// Before the first pop, the bucket `now` is still open for pushes.
    fresh: bool,
    current: Vec<Near>,
    next: usize,
    /// Entries in `ring`.
    near: usize,
}

impl Queue {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        Queue {
            ring: (0..BUCKETS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            now: 0,
            fresh: true,
            current: Vec::new(),
            next: 0,
            near: 0,
        }
    }

    fn bucket(&mut self, t: u64) -> &mut Vec<Near> {
        &mut self.ring[(t % BUCKETS) as usize]
    }

    /// Queues `kind` for a device at `at` ms (clamped to the queue's range).
    pub fn push(&mut self, at: u64, slot: u32, tx: u32, kind: Kind) {
        // Every delay is at least 1 ms; never queue into the millisecond being drained.
        let earliest = if self.fresh { self.now } else { self.now + 1 };
        let at = at.min(u64::from(u32::MAX - 1)).max(earliest);
        let e = Entry {
            at: at as u32,
            slot,
            tx,
            kind,
        };
        if at < self.now + BUCKETS {
            self.bucket(at).push(Near::pack(e));
            self.near += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    /// The next event in time order (insertion order within a millisecond).
    pub fn pop(&mut self) -> Option<Entry> {
        loop {
            if let Some(e) = self.current.get(self.next) {
                self.next += 1;
                return Some(e.unpack(self.now));
            }
            self.current.clear();
            self.next = 0;
            if self.near == 0 && self.far.is_empty() {
                return None;
            }
            if !self.fresh {
                self.now += 1;
            }
            self.fresh = false;
            if self.near == 0
                && let Some(Reverse(e)) = self.far.peek()
            {
                // Nothing near: jump to the earliest far event.
                self.now = self.now.max(u64::from(e.at));
            }
            // Far events whose bucket is now in range join it.
            while let Some(Reverse(e)) = self.far.peek() {
                if u64::from(e.at) >= self.now + BUCKETS {
                    break;
                }
                if let Some(Reverse(e)) = self.far.pop() {
                    self.bucket(u64::from(e.at)).push(Near::pack(e));
                    self.near += 1;
                }
            }
            let slot = (self.now % BUCKETS) as usize;
            std::mem::swap(&mut self.ring[slot], &mut self.current);
            self.near -= self.current.len();
        }
    }
}
