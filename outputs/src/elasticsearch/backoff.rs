//! Equal-jitter exponential backoff (libbeat's): wait half the current
//! step plus a random part of the other half, doubling up to `max`.

use std::time::Duration;

use rand::Rng;

/// Backoff state of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    init: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `init`, never waits longer than `max`.
    pub fn new(init: Duration, max: Duration) -> Self {
        Self {
            init,
            max,
            current: init,
        }
    }

    /// The next wait, then doubles the step.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
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
}
