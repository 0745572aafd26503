//! Route health: the per-route state machine healthy -> suspect -> down -> probing, and
//! the rules that trip, probe and bring routes back.

use super::*;

/// The health of one route (endpoint over link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RouteHealth {
    /// Working, or not yet tried.
    Healthy,
    /// Failed recently; retried after a short back-off, not yet given up on.
    Suspect,
    /// Given up on: only probes go there.
    Down,
    /// A probe is in flight.
    Probing,
}

/// An [`Instant`] kept in two 32-bit halves: aligned to 4 bytes, it packs beside small
/// fields without padding, which saves 4 bytes in each of the many route entries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp([u32; 2]);

impl Stamp {
    pub(super) fn get(self) -> Instant {
        Instant::from_millis(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32))
    }
}

impl From<Instant> for Stamp {
    fn from(t: Instant) -> Self {
        let ms = t.as_millis();
        Stamp([ms as u32, (ms >> 32) as u32])
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    pub(super) health: RouteHealth,
    pub(super) fails: u8,
    pub(super) probe_ok: u8,
    pub(super) attempt: u8,
    pub(super) retry_at: Stamp,
    pub(super) trouble_since: Stamp,
}

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    pub(super) fn backoff(&mut self, base: Duration, attempt: u8, cap: Duration) -> Duration {
        // Full jitter: uniform in [1 ms, min(cap, base * 2^attempt)].
        let ceiling = base
            .saturating_pow2(u32::from(attempt))
            .min(cap)
            .as_millis()
            .max(1);
        Duration::from_millis(self.rng.u64(1..=ceiling))
    }

    pub(super) fn route_ok(&mut self, e: usize, l: usize, probe: bool) {
        let t = *self.config.timings();
        let r = &mut self.routes[e][l];
        if probe {
            r.probe_ok += 1;
            if r.probe_ok >= t.failback_probes {
                *r = Route {
                    health: RouteHealth::Healthy,
                    fails: 0,
                    probe_ok: 0,
                    trouble_since: Instant::NEVER.into(),
                    ..*r
                };
                self.push_event(Raw::RouteUp(e as u8, l as u8));
            } else {
                r.health = RouteHealth::Down;
                r.retry_at = Stamp::from(self.now + t.probe_first);
            }
        } else if r.health != RouteHealth::Down && r.health != RouteHealth::Probing {
            r.health = RouteHealth::Healthy;
            r.fails = 0;
            r.trouble_since = Stamp::from(Instant::NEVER);
            r.attempt = r.attempt.saturating_sub(1);
        }
    }

    pub(super) fn route_fail(&mut self, e: usize, l: usize, probe: bool) {
        let t = *self.config.timings();
        if probe {
            let attempt = self.routes[e][l].attempt;
            let wait = self.backoff(t.probe_first, attempt, t.probe_max);
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Down;
            r.probe_ok = 0;
            r.attempt = attempt.saturating_add(1).min(20);
            r.retry_at = Stamp::from(self.now + wait);
            return;
        }
        let r = &mut self.routes[e][l];
        if matches!(r.health, RouteHealth::Down | RouteHealth::Probing) {
            return;
        }
        r.fails = r.fails.saturating_add(1);
        r.trouble_since = Stamp::from(r.trouble_since.get().min(self.now));
        let (fails, since) = (r.fails, r.trouble_since.get());
        if fails >= t.trip_failures || self.now.saturating_since(since) >= t.trip_after {
            let cause = self.classify(e, l);
            self.trip_with_cause(e, l, cause);
        } else {
            let wait = self.backoff(t.retry_base, fails - 1, t.trip_after);
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Suspect;
            r.retry_at = Stamp::from(self.now + wait);
        }
    }

    /// A region problem if another endpoint works over the same link; a link problem if
    /// every other endpoint fails there too; unknown (`None`) with no other endpoint.
    pub(super) fn classify(&self, e: usize, l: usize) -> Option<DownCause> {
        let mut others = (0..self.config.endpoints().len())
            .filter(|&o| o != e && !self.endpoints[o].drained)
            .peekable();
        others.peek()?;
        if others.any(|o| self.routes[o][l].health == RouteHealth::Healthy) {
            Some(DownCause::Region)
        } else {
            Some(DownCause::Link)
        }
    }

    pub(super) fn trip_with_cause(&mut self, e: usize, l: usize, cause: Option<DownCause>) {
        match cause {
            Some(DownCause::Link) => {
                self.push_event(Raw::LinkDown(l as u8));
                for o in 0..self.config.endpoints().len() {
                    self.trip(o, l, DownCause::Link);
                }
            }
            Some(DownCause::Region) => {
                // The region is dark whatever the path: every route to it goes down (and is
                // probed back), so a later link loss does not lead back to it.
                self.trip(e, l, DownCause::Region);
                for o in 0..self.config.links().len() {
                    self.trip(e, o, DownCause::Region);
                }
            }
            // One endpoint only: no evidence either way, so only this route goes down.
            _ => self.trip(e, l, DownCause::Region),
        }
    }

    /// Takes a route down and abandons its transmits in flight (their records may have
    /// arrived: counted as possible duplicates and sent again elsewhere).
    pub(super) fn trip(&mut self, e: usize, l: usize, cause: DownCause) {
        let t = *self.config.timings();
        if matches!(
            self.routes[e][l].health,
            RouteHealth::Down | RouteHealth::Probing
        ) {
            return;
        }
        let attempt = self.routes[e][l].attempt;
        let wait = self.backoff(t.probe_first, attempt, t.probe_max);
        self.routes[e][l] = Route {
            health: RouteHealth::Down,
            fails: 0,
            probe_ok: 0,
            attempt: attempt.saturating_add(1).min(20),
            retry_at: (self.now + wait).into(),
            trouble_since: Instant::NEVER.into(),
        };
        self.push_event(Raw::RouteDown(e as u8, l as u8, cause));
        for slot in 0..MAX_INFLIGHT {
            let f = self.inflight[slot];
            if f.id != 0 && f.endpoint as usize == e && f.link as usize == l {
                self.inflight[slot].id = 0;
                self.release_slot(slot, true);
            }
        }
    }

    pub(super) fn throttle(
        &mut self,
        e: usize,
        l: usize,
        retry_after: Option<Duration>,
        probe: bool,
    ) {
        let t = *self.config.timings();
        let throttles = self.endpoints[e].throttles;
        let wait = match retry_after {
            Some(d) => d,
            None => t.throttle_backoff + self.backoff(t.throttle_backoff, throttles, t.probe_max),
        };
        let ep = &mut self.endpoints[e];
        ep.throttles = throttles.saturating_add(1).min(20);
        ep.throttled_since = ep.throttled_since.min(self.now);
        ep.throttled_until = self.now + wait;
        let since = ep.throttled_since;
        if probe {
            let r = &mut self.routes[e][l];
            r.health = RouteHealth::Down;
            r.retry_at = Stamp::from(r.retry_at.get().max(self.now + wait));
        }
        if self.now.saturating_since(since) >= t.throttle_failover_after {
            for l in 0..self.config.links().len() {
                self.trip(e, l, DownCause::Throttled);
            }
        }
    }

    /// The application's word on a link: `Down` takes every route over it down, `Up` lets
    /// them be probed at once.
    pub(super) fn link_reported(&mut self, link: LinkId, state: LinkState) {
        let l = link.0 as usize;
        if l >= self.config.links().len() {
            return;
        }
        match state {
            LinkState::Down if !self.links[l].app_down => {
                self.links[l].app_down = true;
                self.push_event(Raw::LinkDown(l as u8));
                for e in 0..self.config.endpoints().len() {
                    self.trip(e, l, DownCause::Link);
                }
            }
            LinkState::Up if self.links[l].app_down => {
                self.links[l].app_down = false;
                self.push_event(Raw::LinkUp(l as u8));
                for e in 0..self.config.endpoints().len() {
                    let r = &mut self.routes[e][l];
                    r.attempt = 0;
                    r.retry_at = Stamp::from(self.now);
                }
            }
            _ => {}
        }
    }
}
