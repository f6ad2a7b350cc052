//! Exponential backoff with jitter, shared by the sinks and the writer.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `attempt` (1 for the first retry): `base · 2^(attempt−1)`,
/// capped at `max`, then drawn uniformly between half of it and all of it, so that nodes which
/// failed together do not retry together.
pub(crate) fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let jitter_ms = rand::rng().random_range(0..=(exp - half).as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_within_the_jitter_band() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for (attempt, cap) in [(1, 100), (2, 200), (3, 400), (7, 5000), (40, 5000)] {
            for _ in 0..50 {
                let d = delay(attempt, base, max).as_millis() as u64;
                assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d} ms");
            }
        }
    }
}
