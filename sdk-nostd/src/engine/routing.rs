//! Route choice: active-passive, active-active (smooth weighted round robin) and mirror,
//! and which down routes are worth a probe.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) struct EndpointRt {
    pub(super) throttled_until: Instant,
    pub(super) throttled_since: Instant,
    pub(super) left_at: Instant,
    pub(super) wrr: i32,
    pub(super) weight: u16,
    pub(super) isolate: u16,
    pub(super) throttles: u8,
    pub(super) drained: bool,
    // Mirror routing: every record up to this key was acknowledged here (when `has_floor`).
    pub(super) floor_epoch: u32,
    pub(super) floor_seq: u64,
    pub(super) has_floor: bool,
}

impl EndpointRt {
    pub(super) fn floor(&self) -> Option<RecordKey> {
        self.has_floor.then_some(RecordKey {
            epoch: self.floor_epoch,
            seq: self.floor_seq,
        })
    }

    pub(super) fn raise_floor(&mut self, key: RecordKey) {
        if self.floor() < Some(key) {
            (self.floor_epoch, self.floor_seq, self.has_floor) = (key.epoch, key.seq, true);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Dead,
    Wait,
    Ready,
}

pub(super) const TIERS: [Cost; 3] = [Cost::Free, Cost::Metered, Cost::Costly];

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    pub(super) fn probeable(&self, e: usize, l: usize) -> bool {
        let link = &self.config.links()[l];
        !self.endpoints[e].drained
            && !self.links[l].app_down
            && link.usable()
            && (link.cost != Cost::Costly || self.links[l].armed)
            && self.endpoints[e].throttled_until <= self.now
    }

    /// Whether a down route could be chosen if it recovered: only then is a probe (which
    /// costs bytes on a metered link) worth sending. Active-passive never uses a route
    /// ranked after the first live one; otherwise an endpoint uses its cheapest live route.
    pub(super) fn worth_probing(&self, e: usize, l: usize) -> bool {
        let order = self.config.route_order();
        match self.config.routing() {
            Routing::ActivePassive => {
                let first_live = order
                    .iter()
                    .position(|&(oe, ol)| self.status(oe as usize, ol as usize) != Status::Dead);
                let me = order
                    .iter()
                    .position(|&(oe, ol)| (oe as usize, ol as usize) == (e, l));
                match (first_live, me) {
                    (Some(live), Some(me)) => me < live,
                    _ => true,
                }
            }
            _ => {
                let cost = self.config.links()[l].cost;
                !self.config.links().iter().enumerate().any(|(ol, link)| {
                    ol != l && link.cost <= cost && self.status(e, ol) != Status::Dead
                })
            }
        }
    }

    pub(super) fn status(&self, e: usize, l: usize) -> Status {
        let link = &self.config.links()[l];
        if self.endpoints[e].drained
            || self.links[l].app_down
            || !link.usable()
            || (link.cost == Cost::Costly && !self.links[l].armed)
        {
            return Status::Dead;
        }
        let r = &self.routes[e][l];
        let st = match r.health {
            RouteHealth::Down | RouteHealth::Probing => return Status::Dead,
            RouteHealth::Healthy => Status::Ready,
            RouteHealth::Suspect if r.retry_at.get() <= self.now => Status::Ready,
            RouteHealth::Suspect => Status::Wait,
        };
        if self.endpoints[e].throttled_until > self.now {
            Status::Wait
        } else {
            st
        }
    }

    /// The cheapest live route of endpoint `e`, optionally only within one cost tier.
    pub(super) fn best_route(&self, e: usize, tier: Option<Cost>) -> Option<(usize, Status)> {
        for t in TIERS {
            if tier.is_some_and(|x| x != t) {
                continue;
            }
            for (l, link) in self.config.links().iter().enumerate() {
                if link.cost == t {
                    let s = self.status(e, l);
                    if s != Status::Dead {
                        return Some((l, s));
                    }
                }
            }
        }
        None
    }

    pub(super) fn choose_active_passive(&mut self) -> Option<(usize, usize)> {
        let pick = self.config.route_order().iter().find_map(|&(e, l)| {
            let (e, l) = (e as usize, l as usize);
            let s = self.status(e, l);
            (s != Status::Dead).then_some((e, l, s))
        });
        let (mut e, mut l, mut s) = pick?;
        let a = self.active as usize;
        // Failback waits for the minimum dwell on the fallback, if the fallback still works.
        if e < a
            && self.now.saturating_since(self.active_since) < self.config.timings().min_dwell
            && let Some((al, as_)) = self.best_route(a, None)
        {
            (e, l, s) = (a, al, as_);
        }
        (s == Status::Ready).then_some((e, l))
    }

    pub(super) fn note_active(&mut self, e: usize) {
        let a = self.active as usize;
        if e == a {
            return;
        }
        if e < a {
            self.ledger.failed_back();
            self.push_event(Raw::FailedBack(a as u8, e as u8));
        } else {
            self.ledger.failed_over();
            self.push_event(Raw::FailedOver(a as u8, e as u8));
        }
        self.active = e as u8;
        self.active_since = self.now;
    }

    pub(super) fn choose_active_active(&mut self) -> Option<(usize, usize)> {
        let ne = self.config.endpoints().len();
        let dwell = self.config.timings().min_dwell;
        // Which endpoints take a share now; a returning one waits out the dwell.
        let mut mask = 0u8;
        for e in 0..ne {
            let was = self.aa_mask & (1 << e) != 0;
            let alive = self.endpoints[e].weight > 0 && self.best_route(e, None).is_some();
            if alive && (was || self.now.saturating_since(self.endpoints[e].left_at) >= dwell) {
                mask |= 1 << e;
            }
        }
        if mask != self.aa_mask {
            let first = |m: u8| (0..ne).find(|&i| m & (1 << i) != 0);
            for e in 0..ne {
                let bit = 1 << e;
                if self.aa_mask & bit != 0 && mask & bit == 0 {
                    self.endpoints[e].left_at = self.now;
                    if let Some(to) = first(mask) {
                        self.ledger.failed_over();
                        self.push_event(Raw::FailedOver(e as u8, to as u8));
                    }
                } else if self.aa_mask & bit == 0 && mask & bit != 0 {
                    let from = first(mask & !bit).unwrap_or(e);
                    self.ledger.failed_back();
                    self.push_event(Raw::FailedBack(from as u8, e as u8));
                }
            }
            self.aa_mask = mask;
            for ep in &mut self.endpoints {
                ep.wrr = 0;
            }
        }
        for t in TIERS {
            let mut any = false;
            let mut best: Option<(usize, usize)> = None;
            let mut total = 0i32;
            for e in 0..ne {
                if mask & (1 << e) == 0 {
                    continue;
                }
                let Some((l, s)) = self.best_route(e, Some(t)) else {
                    continue;
                };
                any = true;
                if s != Status::Ready {
                    continue;
                }
                let w = i32::from(self.endpoints[e].weight);
                total += w;
                self.endpoints[e].wrr += w;
                if best.is_none_or(|(b, _)| self.endpoints[e].wrr > self.endpoints[b].wrr) {
                    best = Some((e, l));
                }
            }
            if any {
                // Smooth weighted round robin: exact shares, no memory of past outages.
                let (e, l) = best?;
                self.endpoints[e].wrr -= total;
                return Some((e, l));
            }
        }
        None
    }

    pub(super) fn probeable_later(&self, e: usize, l: usize) -> bool {
        let link = &self.config.links()[l];
        !self.endpoints[e].drained
            && !self.links[l].app_down
            && link.usable()
            && (link.cost != Cost::Costly || self.links[l].armed)
    }

    pub(super) fn mirror_required(&self) -> u8 {
        (0..self.config.endpoints().len())
            .filter(|&e| !self.endpoints[e].drained)
            .fold(0, |m, e| m | (1 << e))
    }
}
