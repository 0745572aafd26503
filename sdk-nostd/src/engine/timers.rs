//! Time: the clock, budget windows and expiry as time passes.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Engine<S, C, E, L> {
    /// Brings time forward and does what time alone decides: budget windows, expiry, arming.
    ///
    /// Small enough to inline, with the work out of line: on the hot path none of it is
    /// due, and that answer should not pay for saving the registers the work needs.
    #[inline]
    pub(super) fn touch(&mut self, now: Instant) {
        if now <= self.now && self.now < self.next_expiry {
            // Time has not moved: windows, expiry and arming are as they were (every call
            // that changes a route or link refreshes the arming before it returns).
            return;
        }
        self.now = self.now.max(now);
        if self.facts & HAS_BUDGET != 0
            || self.now >= self.next_expiry
            || self.cheap_down_since != Instant::NEVER
        {
            self.time_passed();
        }
    }

    /// What time alone decides, once the clock has moved to `self.now`.
    #[inline(never)]
    fn time_passed(&mut self) {
        let links = if self.facts & HAS_BUDGET != 0 {
            self.config.links()
        } else {
            &[]
        };
        for (l, link) in links.iter().enumerate() {
            if let Some(b) = link.budget {
                let rt = &mut self.links[l];
                let elapsed = self.now.saturating_since(rt.window_start.get()).as_millis();
                if elapsed >= b.window.as_millis() {
                    let windows = elapsed / b.window.as_millis();
                    rt.window_start = Stamp::from(
                        rt.window_start.get()
                            + Duration::from_millis(windows * b.window.as_millis()),
                    );
                    rt.spent = 0.into();
                    rt.exhausted = false;
                }
            }
        }
        if self.now >= self.next_expiry {
            self.expire();
        }
        // Time alone can only arm a costly link once every cheap route is down; while one
        // is up, arming changes only with route health, which the calls that change it
        // refresh themselves.
        if self.cheap_down_since != Instant::NEVER {
            self.refresh_arming();
        }
    }

    /// Times out transmits past `request_timeout` and trips routes whose send stalled for
    /// `trip_after`.
    pub(super) fn settle_deadlines(&mut self) {
        let t = *self.config.timings();
        for slot in 0..MAX_INFLIGHT {
            let f = self.inflight[slot];
            if f.id == 0 {
                continue;
            }
            if self.now >= f.sent_at + t.request_timeout {
                self.complete(slot, Outcome::Timeout);
            } else if !f.probe && self.now >= f.sent_at + t.trip_after {
                // A send stalled for `trip_after` without any success: the route is down.
                let (e, l) = (f.endpoint as usize, f.link as usize);
                let r = &mut self.routes[e][l];
                r.trouble_since = Stamp::from(r.trouble_since.get().min(f.sent_at));
                if self.now.saturating_since(r.trouble_since.get()) >= t.trip_after {
                    let cause = self.classify(e, l);
                    self.trip_with_cause(e, l, cause);
                }
            }
        }
    }

    /// The next time `handle_timeout` has work: transmit deadlines (due at once when the
    /// clock passed them), then back-offs, throttles, arming, budget windows, linger and
    /// expiry, from the engine's own state (the store is asked only for its oldest record,
    /// and only with a linger set).
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        let t = *self.config.timings();
        let now = self.now;
        let mut next = Instant::NEVER;
        for f in self.inflight.iter().filter(|f| f.id != 0) {
            // Only deadlines `handle_timeout` clears may be reported as due, or a caller
            // would spin: a request timeout always; a stall only while its route can trip.
            let trips = !matches!(
                self.routes[usize::from(f.endpoint)][usize::from(f.link)].health,
                RouteHealth::Down | RouteHealth::Probing
            );
            let deadlines = [
                Some(f.sent_at + t.request_timeout),
                (!f.probe && trips).then(|| f.sent_at + t.trip_after),
            ];
            for d in deadlines.into_iter().flatten() {
                next = next.min(d.max(now));
            }
        }
        let mut at = |x: Instant| {
            if x > now && x < next {
                next = x;
            }
        };
        if self.ledger.pending() > u64::from(self.inflight_records())
            || self.config.routing() == Routing::Mirror
        {
            for e in 0..self.config.endpoints().len() {
                for l in 0..self.config.links().len() {
                    let r = &self.routes[e][l];
                    let waits = match r.health {
                        RouteHealth::Suspect => true,
                        RouteHealth::Down => self.probeable_later(e, l),
                        _ => false,
                    };
                    if waits {
                        at(r.retry_at.get().max(self.endpoints[e].throttled_until));
                    }
                }
                at(self.endpoints[e].throttled_until);
            }
            if self.cheap_down_since != Instant::NEVER {
                for (l, link) in self.config.links().iter().enumerate() {
                    if link.cost == Cost::Costly && link.usable() && !self.links[l].armed {
                        at(self.cheap_down_since + link.arm_after);
                    }
                }
            }
            for (l, link) in self.config.links().iter().enumerate() {
                if let (Some(b), true) = (link.budget, self.links[l].exhausted) {
                    at(self.links[l].window_start.get() + b.window);
                }
            }
            if t.linger > Duration::ZERO
                && let Ok(Some(oldest)) = self.store.next_after(None)
            {
                at(oldest.meta.enqueued_at + t.linger);
            }
        }
        if self.ledger.pending() > 0 {
            at(self.next_expiry);
        }
        (next != Instant::NEVER).then_some(next)
    }
}
