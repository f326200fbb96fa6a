//! The one place where an endpoint is chosen from a resolved list (every skin's `pick`
//! comes here through [`super::Resolver::pick`]).

use std::collections::HashMap;

use super::{Endpoint, Policy};

/// The share a weight-0 record gets when others of its set weigh more: "a very small
/// chance" (RFC 2782).
const ZERO_WEIGHT: f64 = 0.001;

/// Choose one of `endpoints` by `policy`. `turn` is the round-robin counter (the n-th
/// pick of this name), `random` a random 64-bit number for the weighted choice.
/// `None` only for an empty list.
///
/// - round-robin: `endpoints[turn % len]`;
/// - weighted: each SRV record's weight, split evenly over the addresses its target
///   has, so a target with two addresses is not chosen twice as often; weight 0 is
///   [`ZERO_WEIGHT`] while some record weighs more, and all-zero sets are uniform;
/// - priority: the same weighted choice among the lowest priority value present only.
pub fn select(endpoints: &[Endpoint], policy: Policy, turn: usize, random: u64) -> Option<&Endpoint> {
    if endpoints.is_empty() {
        return None;
    }
    let pool: Vec<&Endpoint> = match policy {
        Policy::RoundRobin => return endpoints.get(turn % endpoints.len()),
        Policy::Weighted => endpoints.iter().collect(),
        Policy::Priority => {
            let best = endpoints.iter().map(|e| e.priority).min()?;
            endpoints.iter().filter(|e| e.priority == best).collect()
        }
    };
    let mut per_record: HashMap<(&str, u16, u16, u16), usize> = HashMap::new();
    for e in &pool {
        *per_record.entry((e.target.as_str(), e.priority, e.weight, e.addr.port())).or_default() += 1;
    }
    let any_weight = pool.iter().any(|e| e.weight > 0);
    let weights: Vec<f64> = pool
        .iter()
        .map(|e| {
            let w = if e.weight > 0 { f64::from(e.weight) } else if any_weight { ZERO_WEIGHT } else { 1.0 };
            w / per_record[&(e.target.as_str(), e.priority, e.weight, e.addr.port())] as f64
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut x = (random >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (e, w) in pool.iter().zip(&weights) {
        if x < *w {
            return Some(e);
        }
        x -= w;
    }
    pool.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, target: &str, priority: u16, weight: u16) -> Endpoint {
        Endpoint { addr: addr.parse().unwrap(), target: target.into(), priority, weight }
    }

    #[test]
    fn rules() {
        let list = vec![ep("10.0.0.1:1", "a", 1, 30), ep("10.0.0.2:1", "b", 1, 10), ep("10.0.0.3:1", "c", 2, 60)];
        assert_eq!(select(&list, Policy::RoundRobin, 4, 0).unwrap().target, "b");
        // random 0 is the first of the pool, u64::MAX the last.
        assert_eq!(select(&list, Policy::Priority, 0, u64::MAX).unwrap().target, "b");
        assert_eq!(select(&list, Policy::Weighted, 0, u64::MAX).unwrap().target, "c");
        assert!(select(&[], Policy::Weighted, 0, 0).is_none());
        // All weights zero: uniform.
        let z = vec![ep("10.0.0.1:1", "a", 0, 0), ep("10.0.0.2:1", "b", 0, 0)];
        assert_eq!(select(&z, Policy::Weighted, 0, u64::MAX / 4 * 3).unwrap().target, "b");
    }
}
