//! What an outcome does to the records of its transmit and to route health.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    pub(super) fn complete(&mut self, slot: usize, outcome: Outcome) {
        let f = self.inflight[slot];
        self.inflight[slot].id = 0;
        let (e, l) = (f.endpoint as usize, f.link as usize);
        match outcome {
            Outcome::Delivered => {
                self.finish(&f, e);
                self.endpoints[e].throttled_since = Instant::NEVER;
                self.endpoints[e].throttles = 0;
                self.route_ok(e, l, f.probe);
            }
            Outcome::Timeout => {
                self.release_slot(slot, true);
                self.route_fail(e, l, f.probe);
            }
            Outcome::Unreachable | Outcome::ServerError => {
                self.release_slot(slot, false);
                self.route_fail(e, l, f.probe);
            }
            Outcome::Throttled { retry_after } => {
                self.release_slot(slot, false);
                self.throttle(e, l, retry_after, f.probe);
            }
            Outcome::Unauthorized => {
                self.release_slot(slot, false);
                if f.probe {
                    self.route_fail(e, l, true);
                } else {
                    self.push_event(Raw::AuthFailed(e as u8));
                    for l in 0..self.config.links().len() {
                        self.trip(e, l, DownCause::Auth);
                    }
                }
            }
            Outcome::Rejected(reason) => {
                if f.records == 1 {
                    if let Ok(Some(info)) = self.store.next_after(f.walk_start())
                        && info.key() == f.first_key()
                    {
                        let reason = match reason {
                            RejectReason::TooLarge => DropReason::TooLarge,
                            RejectReason::Malformed => DropReason::Malformed,
                        };
                        self.drop_record(&info, reason);
                    }
                } else {
                    // Which record is poison is unknown: resend them one at a time.
                    self.release_slot(slot, false);
                    self.endpoints[e].isolate = f.records;
                }
                if f.probe {
                    // A rejection says nothing about health: the route stays down and may
                    // be probed again at once with another record.
                    self.routes[e][l].health = RouteHealth::Down;
                    self.routes[e][l].retry_at = Stamp::from(self.now);
                }
            }
        }
    }
}
