//! Equal-jitter exponential backoff (libbeat's): wait half the current
//! step plus a random part of the other half, doubling up to `max`.
//!
//! Every retry loop in threatbeat waits with it — the Elasticsearch output,
//! the queue consumer, the httpjson fetcher and the supervisor restarting a
//! panicked input — so that they all grow, cap and jitter the same way.
//!
//! Why the jitter: a fleet of agents that lost the same cluster or feed at
//! the same moment would, with a plain doubling, all come back at the same
//! instants and hit the recovering server in lock-step. Waiting a random
//! time between half the step and the whole step spreads them out, while
//! the guaranteed half keeps each agent from retrying sooner than the
//! exponential schedule intends ("equal jitter").

use std::time::Duration;

use rand::Rng;

/// Backoff state of one retry loop: keep one value per loop, call
/// [`Backoff::next_wait`] before each retry and [`Backoff::reset`] after a
/// success.
///
/// The `n`-th wait (counting from 0) lies in `[s/2, s]` where
/// `s = min(init · 2^n, max)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    init: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `init`, never waits longer than `max` (an `init` above
    /// `max` starts at `max`).
    pub fn new(init: Duration, max: Duration) -> Self {
        let init = init.min(max);
        Self {
            init,
            max,
            current: init,
        }
    }

    /// The next wait, then doubles the step.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        let half = step / 2;
        half.saturating_add((step - half).mul_f64(rand::rng().random_range(0.0..=1.0)))
    }

    /// The longest wait (used when retrying slowly, after a credential error).
    pub fn max_wait(&self) -> Duration {
        self.max
    }

    /// Back to `init` after a success.
    pub fn reset(&mut self) {
        self.current = self.init;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let first = backoff.next_wait();
        assert!(
            first >= Duration::from_millis(500) && first <= Duration::from_millis(1000),
            "{first:?}"
        );
        let second = backoff.next_wait();
        assert!(
            second >= Duration::from_secs(1) && second <= Duration::from_secs(2),
            "{second:?}"
        );
        for _ in 0..10 {
            assert!(backoff.next_wait() <= Duration::from_secs(4));
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_secs(1));
    }

    /// The ranges httpjson's retries relied on (`retry.wait_min` 1 s,
    /// `retry.wait_max` 10 s): attempt 0 waits 0.5–1 s, attempt 2 waits
    /// 2–4 s, and once the step is capped, at least half of and at most
    /// `wait_max`.
    #[test]
    fn each_attempt_stays_in_its_equal_jitter_range() {
        for _ in 0..50 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
            let first = backoff.next_wait();
            assert!(
                first >= Duration::from_millis(500) && first <= Duration::from_secs(1),
                "{first:?}"
            );
            backoff.next_wait();
            let third = backoff.next_wait();
            assert!(
                third >= Duration::from_secs(2) && third <= Duration::from_secs(4),
                "{third:?}"
            );
            let fourth = backoff.next_wait();
            assert!(
                fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8),
                "{fourth:?}"
            );
            for _ in 4..40 {
                let wait = backoff.next_wait();
                assert!(
                    wait >= Duration::from_secs(5) && wait <= Duration::from_secs(10),
                    "{wait:?}"
                );
            }
        }
    }

    #[test]
    fn agents_do_not_wait_in_lock_step() {
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).next_wait())
            .collect();
        assert!(waits.len() > 1, "50 fresh backoffs all waited {waits:?}");
    }

    #[test]
    fn an_init_above_max_waits_at_most_max() {
        let mut backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(2));
        for _ in 0..5 {
            let wait = backoff.next_wait();
            assert!(
                wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn a_huge_max_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..100 {
            backoff.next_wait();
        }
        assert!(backoff.next_wait() >= Duration::MAX / 2 - Duration::from_secs(1));
    }
}
