//! Which requests are captured: a decision that depends only on the request
//! id, so a replayed request (same id) is sampled the same way on every
//! replica and every run.

use sha2::{Digest, Sha256};

/// True when the request with this id falls in the sampled fraction `rate`
/// (0 to 1). The id's SHA-256, read as a number in [0, 1), is compared with
/// the rate, so the sampled fraction of many ids tends to `rate` and raising
/// the rate only adds ids to those already sampled.
pub fn sampled(rate: f64, request_id: &str) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let digest = Sha256::digest(request_id.as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (head as f64 / 18_446_744_073_709_551_616.0) < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_id_is_always_decided_the_same_way_and_the_fraction_follows_the_rate() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("req-{i}")).collect();
        for rate in [0.1, 0.5, 0.9] {
            let picked: Vec<&String> = ids.iter().filter(|id| sampled(rate, id)).collect();
            let fraction = picked.len() as f64 / ids.len() as f64;
            // 20,000 Bernoulli draws: 5 standard deviations is under 0.018.
            assert!((fraction - rate).abs() < 0.018, "rate {rate}: {fraction}");
            assert!(picked.iter().all(|id| sampled(rate, id)));
            // A higher rate keeps every id a lower one picked.
            assert!(picked.iter().all(|id| sampled(rate + 0.05, id)));
        }
        assert!(ids.iter().all(|id| sampled(1.0, id)));
        assert!(!ids.iter().any(|id| sampled(0.0, id)));
    }
}
