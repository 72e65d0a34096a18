//! A limit on log lines per time window, kept per CPU.
//!
//! The replacement may run on any CPU in any context, and a budget shared
//! by all CPUs would be a cache line they all write. So each CPU keeps its
//! own window and count (the module stores them in per-CPU memory, written
//! with single unlocked instructions), and its share of the lines a window
//! allows: the burst split evenly between the CPUs online at attach, so
//! that all of them together never log much more than the burst. Nothing
//! here locks: an interrupt that crosses into a new window
//! between a task's read and its reset may let a few extra lines through,
//! which is harmless. Callers count what was refused, so nothing is
//! dropped silently.

/// One CPU's budget: where the module keeps it.
pub trait Budget {
    /// The window the count is for.
    fn window(&self) -> usize;
    /// Starts window `now` with nothing used.
    fn restart(&self, now: usize);
    /// Counts one more line; returns the count before it.
    fn take(&self) -> usize;
}

/// Whether one more line may go out in window number `now`, with at most
/// `burst` lines per window; 0 means no limit.
pub fn allow(budget: &impl Budget, burst: usize, now: usize) -> bool {
    if burst == 0 {
        return true;
    }
    if budget.window() != now {
        budget.restart(now);
    }
    budget.take() < burst
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[derive(Default)]
    struct OneCpu {
        window: Cell<usize>,
        used: Cell<usize>,
    }

    impl Budget for OneCpu {
        fn window(&self) -> usize {
            self.window.get()
        }
        fn restart(&self, now: usize) {
            self.window.set(now);
            self.used.set(0);
        }
        fn take(&self) -> usize {
            self.used.replace(self.used.get() + 1)
        }
    }

    #[test]
    fn burst_per_window() {
        let cpu = OneCpu::default();
        assert!(allow(&cpu, 2, 1) && allow(&cpu, 2, 1));
        assert!(!allow(&cpu, 2, 1));
        assert!(allow(&cpu, 2, 2) && allow(&cpu, 2, 2) && !allow(&cpu, 2, 2));
    }

    #[test]
    fn each_cpu_has_its_own_burst() {
        let (a, b) = (OneCpu::default(), OneCpu::default());
        assert!(allow(&a, 1, 7) && !allow(&a, 1, 7));
        assert!(allow(&b, 1, 7) && !allow(&b, 1, 7));
    }

    #[test]
    fn zero_burst_is_unlimited() {
        let cpu = OneCpu::default();
        assert!((0..1000).all(|_| allow(&cpu, 0, 5)));
    }
}
