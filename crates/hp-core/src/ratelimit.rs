//! A lock-free limit on log lines per time window.
//!
//! The replacement may run on any CPU in any context, so this takes no lock:
//! two CPUs crossing into a new window at once may let a few extra lines
//! through, which is harmless. Callers count what was refused, so nothing is
//! dropped silently.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct RateLimit {
    burst: u64,
    window: AtomicU64,
    used: AtomicU64,
}

impl RateLimit {
    /// At most `burst` lines per window; 0 means no limit.
    pub const fn new(burst: u64) -> Self {
        Self { burst, window: AtomicU64::new(0), used: AtomicU64::new(0) }
    }

    /// Whether one more line may go out in window number `now`.
    pub fn allow(&self, now: u64) -> bool {
        if self.burst == 0 {
            return true;
        }
        let seen = self.window.load(Relaxed);
        if seen != now && self.window.compare_exchange(seen, now, Relaxed, Relaxed).is_ok() {
            self.used.store(0, Relaxed);
        }
        self.used.fetch_add(1, Relaxed) < self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_per_window() {
        let rl = RateLimit::new(2);
        assert!(rl.allow(1) && rl.allow(1));
        assert!(!rl.allow(1));
        assert!(rl.allow(2) && rl.allow(2) && !rl.allow(2));
    }

    #[test]
    fn zero_burst_is_unlimited() {
        let rl = RateLimit::new(0);
        assert!((0..1000).all(|_| rl.allow(5)));
    }
}
