//! Exponential backoff with jitter: the one retry pace of the outbox relay,
//! the refund workflow and every other loop that retries a peer.

use std::time::Duration;

/// Waits that double from `base` up to `max`, with up to 20% random jitter
/// so replicas do not retry in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub base: Duration,
    /// No wait is longer (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// Doubling from `base`, capped at `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait before retry number `retry` (1 for the first retry; anything
    /// lower counts as 1).
    pub fn delay(&self, retry: i32) -> Duration {
        let exponent = retry.clamp(1, 31) as u32 - 1;
        let delay = self
            .base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max);
        let permille = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        delay + delay * permille / 5000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_is_capped_with_at_most_a_fifth_of_jitter() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let within = |retry, low: u64, high: u64| {
            let d = backoff.delay(retry).as_millis() as u64;
            assert!((low..=high).contains(&d), "retry {retry}: {d} ms");
        };
        within(0, 100, 120);
        within(1, 100, 120);
        within(2, 200, 240);
        within(3, 400, 480);
        within(10, 1000, 1200);
        within(i32::MAX, 1000, 1200);
    }
}
