//! Time: the clock, budget windows and expiry as time passes.

use super::*;

impl<S: Store, C: Deref<Target = Config>, const E: usize, const L: usize> Producer<S, C, E, L> {
    /// Brings time forward and does what time alone decides: budget windows, expiry, arming.
    pub(super) fn touch(&mut self, now: Instant) {
        if now <= self.now && self.now < self.next_expiry {
            // Time has not moved: windows, expiry and arming are as they were (every call
            // that changes a route or link refreshes the arming before it returns).
            return;
        }
        self.now = self.now.max(now);
        let links = if self.has_budget {
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
                    rt.spent = 0;
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
}
