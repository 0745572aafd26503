//! Building a transmit from the store: limits, budget, linger and the run of records.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Producer<S, C, E, L> {
    /// Selects records for `(e, l)`, copies their frames into `buf` and marks them in flight.
    pub(super) fn build(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        e: usize,
        l: usize,
        probe: bool,
    ) -> Option<Transmit> {
        let ep = &self.config.endpoints()[e];
        let link = &self.config.links()[l];
        let mirror = self.config.routing() == Routing::Mirror;
        // Mirror routing sends each endpoint its records in order, one transmit at a time,
        // so what an endpoint acknowledged is always everything up to its floor.
        if mirror
            && self
                .inflight
                .iter()
                .any(|f| f.id != 0 && usize::from(f.endpoint) == e)
        {
            return None;
        }
        let max_records = if probe || self.endpoints[e].isolate > 0 {
            1
        } else {
            ep.max_batch_records
        };
        let budget_left = link
            .budget
            .map_or(u64::MAX, |b| b.bytes.saturating_sub(self.links[l].spent));
        // Copied out: dropping a rotted record below needs `self` mutably.
        let (record_overhead, max_batch_bytes) = (ep.record_overhead, ep.max_batch_bytes);
        let (allow, frame_overhead) = (link.allow, link.frame_overhead);
        let (mut len, mut count, mut wire, mut charged) = (0usize, 0u16, 0u64, 0u64);
        // The first record taken, and the span up to the last.
        let mut first: Option<RecordKey> = None;
        let mut span = 0u16;
        let mut first_at = Instant::NEVER;
        let mut full = false;
        let mut over_budget = false;
        let mut after = if mirror {
            self.endpoints[e].floor()
        } else {
            None
        };
        // Expired records were dropped by `touch` before we got here.
        while count < max_records {
            let info = match self.store.next_after(after) {
                Ok(Some(info)) => info,
                // The end, or a store that cannot be walked now: send what we have.
                _ => break,
            };
            let key = info.key();
            after = Some(key);
            if !mirror && self.in_flight(&info) {
                if first.is_some() {
                    // The records of a transmit are a run with no gap: stop at another's.
                    full = true;
                    break;
                }
                continue;
            }
            if !allow.contains(info.meta.class) {
                if mirror {
                    // In order or not at all: the floor cannot pass a record left behind.
                    full = true;
                    break;
                }
                continue;
            }
            let w = u64::from(info.payload_len) + u64::from(record_overhead);
            let cost = u64::from(info.frame_len) + u64::from(frame_overhead);
            if wire + w > u64::from(max_batch_bytes) || len + info.frame_len as usize > buf.len() {
                full = true;
                break;
            }
            if charged + cost > budget_left {
                over_budget = true;
                break;
            }
            let offset = match first {
                None => Some(0),
                Some(f) if f.epoch == key.epoch => u16::try_from(key.seq - f.seq).ok(),
                Some(_) => None,
            };
            let Some(offset) = offset else {
                // Another epoch, or past what one transmit can span: the next transmit.
                full = true;
                break;
            };
            let n = match self.store.read(key, &mut buf[len..]) {
                Ok(n) => n,
                // A frame that fails its check can never be sent as it was accepted: drop
                // it, counted, rather than keep it pending for ever.
                Err(StoreError::Corrupt(err)) if err != FrameError::BufferTooSmall => {
                    self.drop_record(&info, DropReason::Corrupt);
                    continue;
                }
                // A read that failed for now (I/O): try again with the next transmit, which
                // must then not span this record.
                Err(_) => {
                    full = true;
                    break;
                }
            };
            first.get_or_insert(key);
            span = offset;
            first_at = first_at.min(info.meta.enqueued_at);
            len += n;
            count += 1;
            wire += w;
            charged += cost;
        }
        if count == 0 {
            if over_budget && !self.links[l].exhausted {
                self.links[l].exhausted = true;
                self.push_event(Raw::BudgetExhausted(l as u8));
            }
            return None;
        }
        let linger = self.config.timings().linger;
        let young = linger > Duration::ZERO && first_at + linger > self.now;
        if !probe && !full && count < max_records && young {
            // Wait for more records: nothing was marked yet.
            return None;
        }
        self.links[l].spent += charged;
        self.ledger.charged(l, charged);
        let id = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1).max(1);
        self.inflight[slot] = InFlight {
            sent_at: self.now,
            id,
            records: count,
            endpoint: e as u8,
            link: l as u8,
            probe,
            first: first.map_or(0, |k| k.seq),
            epoch: first.map_or(0, |k| k.epoch),
            span,
        };
        if !probe {
            self.endpoints[e].isolate = self.endpoints[e].isolate.saturating_sub(1);
        }
        Some(Transmit {
            id: TransmitId(id),
            endpoint: EndpointId(e as u8),
            link: LinkId(l as u8),
            len,
            records: count,
            probe,
        })
    }
}
