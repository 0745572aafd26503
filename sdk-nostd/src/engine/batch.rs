//! Building a transmit from the store: limits, budget, linger and the run of records.

use super::*;

/// What one transmit may hold, fixed before the store is walked.
struct Limits {
    max_records: u16,
    max_wire: u64,
    budget_left: u64,
    record_overhead: u32,
    frame_overhead: u32,
    allow: ClassSet,
    mirror: bool,
}

/// A transmit being filled: the frames copied so far and why the filling stopped.
struct Batch {
    /// Bytes of frames in the buffer.
    len: usize,
    count: u16,
    /// Bytes counted against the endpoint's batch limit.
    wire: u64,
    /// Bytes charged to the link's budget.
    charged: u64,
    /// The first record taken, and the span up to the last.
    first: Option<RecordKey>,
    span: u16,
    first_at: Instant,
    /// A limit stopped the batch (sending it now cannot wait for more records).
    full: bool,
    /// The budget had no room for the next record.
    over_budget: bool,
    /// The buffer cannot hold the first record: the bytes its frame needs.
    too_small: Option<usize>,
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Selects records for `(e, l)`, copies their frames into `buf` and marks them in
    /// flight; `Ok(None)` when there is nothing to send there now.
    pub(super) fn build(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        e: usize,
        l: usize,
        probe: bool,
    ) -> Result<Option<Transmit>, TransmitError> {
        let mirror = self.config.routing() == Routing::Mirror;
        // Mirror routing sends each endpoint its records in order, one transmit at a time,
        // so what an endpoint acknowledged is always everything up to its floor.
        if mirror
            && self
                .inflight
                .iter()
                .any(|f| f.id != 0 && usize::from(f.endpoint) == e)
        {
            return Ok(None);
        }
        let (ep, link) = (&self.config.endpoints()[e], &self.config.links()[l]);
        let limits = Limits {
            max_records: if probe || self.endpoints[e].isolate > 0 {
                1
            } else {
                ep.max_batch_records
            },
            max_wire: u64::from(ep.max_batch_bytes),
            budget_left: link.budget.map_or(u64::MAX, |b| {
                b.bytes.saturating_sub(self.links[l].spent.get())
            }),
            record_overhead: ep.record_overhead,
            frame_overhead: link.frame_overhead,
            allow: link.allow,
            mirror,
        };
        let after = if mirror {
            self.endpoints[e].floor()
        } else {
            None
        };
        let batch = self.fill(buf, after, &limits);
        if let Some(needed) = batch.too_small {
            return Err(TransmitError::BufferTooSmall { needed });
        }
        if batch.count == 0 {
            if batch.over_budget && !self.links[l].exhausted {
                self.links[l].exhausted = true;
                self.push_event(Raw::BudgetExhausted(l as u8));
            }
            return Ok(None);
        }
        let linger = self.config.timings().linger;
        let young = linger > Duration::ZERO && batch.first_at + linger > self.now;
        if !probe && !batch.full && batch.count < limits.max_records && young {
            // Wait for more records: nothing was marked yet.
            return Ok(None);
        }
        Ok(Some(self.launch(slot, e, l, probe, &batch)))
    }

    /// Walks the store from `after` and copies the run of records that fits `limits` into
    /// `buf`.
    fn fill(&mut self, buf: &mut [u8], mut after: Option<RecordKey>, lim: &Limits) -> Batch {
        let mut b = Batch {
            len: 0,
            count: 0,
            wire: 0,
            charged: 0,
            first: None,
            span: 0,
            first_at: Instant::NEVER,
            full: false,
            over_budget: false,
            too_small: None,
        };
        // Records looked at: once it is every record held, the walk is over without asking
        // the store for one more.
        let mut seen = 0;
        // With no transmit in flight (the usual case on a healthy link), no record is in one:
        // asked once, not for every record.
        let check_in_flight = !lim.mirror && self.inflight.iter().any(|f| f.id != 0);
        // Expired records were dropped by `touch` before we got here.
        while b.count < lim.max_records && seen < self.store.len() {
            // Borrowed where the store returned it, not copied out.
            let next = self.store.next_after(after);
            let Ok(Some(info)) = &next else {
                // The end, or a store that cannot be walked now: send what we have.
                break;
            };
            let key = info.key();
            after = Some(key);
            seen += 1;
            if check_in_flight && self.in_flight(info) {
                if b.first.is_some() {
                    // The records of a transmit are a run with no gap: stop at another's.
                    b.full = true;
                    break;
                }
                continue;
            }
            if !lim.allow.contains(info.meta.class) {
                if lim.mirror {
                    // In order or not at all: the floor cannot pass a record left behind.
                    b.full = true;
                    break;
                }
                continue;
            }
            let w = u64::from(info.payload_len) + u64::from(lim.record_overhead);
            let cost = u64::from(info.frame_len) + u64::from(lim.frame_overhead);
            if b.wire + w > lim.max_wire || b.len + info.frame_len as usize > buf.len() {
                if b.count == 0 && info.frame_len as usize > buf.len() {
                    // Not a full batch: no batch at all fits. Said, rather than left to
                    // look like nothing to send while the record waits for its TTL.
                    b.too_small = Some(info.frame_len as usize);
                }
                b.full = true;
                break;
            }
            if b.charged + cost > lim.budget_left {
                b.over_budget = true;
                break;
            }
            let offset = match b.first {
                None => Some(0),
                Some(f) if f.epoch == key.epoch => u16::try_from(key.seq - f.seq).ok(),
                Some(_) => None,
            };
            let Some(offset) = offset else {
                // Another epoch, or past what one transmit can span: the next transmit.
                b.full = true;
                break;
            };
            let n = match self.store.read(key, &mut buf[b.len..]) {
                Ok(n) => n,
                // A frame that fails its check can never be sent as it was accepted: drop
                // it, counted, rather than keep it pending for ever.
                Err(StoreError::Corrupt(err)) if err != FrameError::BufferTooSmall => {
                    if self.drop_record(info, DropReason::Corrupt) {
                        seen -= 1;
                    }
                    continue;
                }
                // A read that failed for now (I/O): try again with the next transmit, which
                // must then not span this record.
                Err(_) => {
                    b.full = true;
                    break;
                }
            };
            b.first.get_or_insert(key);
            b.span = offset;
            b.first_at = b.first_at.min(info.meta.enqueued_at);
            b.len += n;
            b.count += 1;
            b.wire += w;
            b.charged += cost;
        }
        b
    }

    /// Charges the link and puts the batch in flight in `slot`.
    fn launch(&mut self, slot: usize, e: usize, l: usize, probe: bool, b: &Batch) -> Transmit {
        let spent = self.links[l].spent.get() + b.charged;
        self.links[l].spent = spent.into();
        self.ledger.charged(l, b.charged);
        let id = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1).max(1);
        self.inflight[slot] = InFlight {
            sent_at: self.now,
            id,
            records: b.count,
            endpoint: e as u8,
            link: l as u8,
            probe,
            first: b.first.map_or(0, |k| k.seq),
            epoch: b.first.map_or(0, |k| k.epoch),
            span: b.span,
        };
        if !probe {
            self.endpoints[e].isolate = self.endpoints[e].isolate.saturating_sub(1);
        }
        Transmit {
            id: TransmitId(id),
            endpoint: EndpointId(e as u8),
            link: LinkId(l as u8),
            len: b.len,
            records: b.count,
            probe,
        }
    }
}
