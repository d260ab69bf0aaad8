//! The order in which a domain's servers are tried: SRV by priority, then RFC 2782
//! weighted random order within a priority; MX by preference, equal preferences in
//! random order (RFC 5321 §5.1). Pure functions over an injected RNG, so the tests can
//! fix the seed and count.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

/// One SRV record's ordering fields and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SrvEntry<T> {
    pub priority: u16,
    pub weight: u16,
    pub target: T,
}

/// SRV targets in the order to try them: ascending priority; within one priority the
/// RFC 2782 selection: weight-0 entries first, then repeatedly a random number in
/// `0..=sum of remaining weights` picks the first entry whose running sum reaches it.
/// Weight-0 entries are therefore chosen first only when the number is 0, a small
/// chance, as the RFC intends.
pub(super) fn order_srv<T>(mut entries: Vec<SrvEntry<T>>, rng: &mut impl Rng) -> Vec<T> {
    // Shuffled first so that entries the weights cannot tell apart (weight 0 among
    // themselves) do not keep the order the DNS server happened to send.
    entries.shuffle(rng);
    // Stable: keeps the shuffle within a priority, and weight-0 entries in front.
    entries.sort_by_key(|e| (e.priority, e.weight != 0));
    let mut out = Vec::with_capacity(entries.len());
    let mut rest = entries.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(e) = rest.next_if(|e| e.priority == group[0].priority) {
            group.push(e);
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|e| u32::from(e.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|e| {
                    running += u32::from(e.weight);
                    running >= pick
                })
                // The running sum ends at `total` >= `pick`, so some entry matches.
                .unwrap_or(0);
            out.push(group.remove(index).target);
        }
    }
    out
}

/// MX exchanges in the order to try them: lowest preference first, equal preferences
/// shuffled (RFC 5321 §5.1: "randomize them to spread the load").
pub(super) fn order_mx<T>(mut entries: Vec<(u16, T)>, rng: &mut impl Rng) -> Vec<T> {
    entries.shuffle(rng);
    entries.sort_by_key(|e| e.0);
    entries.into_iter().map(|e| e.1).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn srv(priority: u16, weight: u16, target: &'static str) -> SrvEntry<&'static str> {
        SrvEntry {
            priority,
            weight,
            target,
        }
    }

    /// How often each target comes first over `n` orderings of `entries`.
    fn firsts(entries: &[SrvEntry<&'static str>], n: usize) -> HashMap<&'static str, usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut count = HashMap::new();
        for _ in 0..n {
            let order = order_srv(entries.to_vec(), &mut rng);
            assert_eq!(order.len(), entries.len(), "every entry is kept once");
            *count.entry(order[0]).or_insert(0) += 1;
        }
        count
    }

    #[test]
    fn priorities_ascend_whatever_the_weights() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..200 {
            let order = order_srv(
                vec![
                    srv(30, 100, "c"),
                    srv(10, 0, "a1"),
                    srv(20, 65535, "b"),
                    srv(10, 9, "a2"),
                ],
                &mut rng,
            );
            let mut head = order[..2].to_vec();
            head.sort();
            assert_eq!(head, ["a1", "a2"]);
            assert_eq!(&order[2..], ["b", "c"]);
        }
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        // 1 : 3. The draw is in 0..=4 (inclusive, as RFC 2782 has it), so the heavy one
        // wins 3 of 5 draws when listed second and 4 of 5 when listed first: 0.7 in all,
        // near the 3/4 of its weight. The bound is about ±6 standard deviations.
        let c = firsts(&[srv(10, 1, "light"), srv(10, 3, "heavy")], 4000);
        let heavy = c["heavy"] as f64 / 4000.0;
        assert!((0.65..0.75).contains(&heavy), "heavy first {heavy}: {c:?}");
    }

    #[test]
    fn weight_zero_gets_a_small_chance() {
        // Sum 99: the zero-weight entry is first only when the draw is 0 (1 in 100).
        let c = firsts(&[srv(1, 0, "zero"), srv(1, 99, "heavy")], 20_000);
        let zero = c.get("zero").copied().unwrap_or(0);
        assert!(
            (120..300).contains(&zero),
            "zero first {zero} times of 20000: {c:?}"
        );
    }

    #[test]
    fn all_zero_weights_are_shuffled() {
        let c = firsts(&[srv(1, 0, "a"), srv(1, 0, "b"), srv(1, 0, "c")], 3000);
        for t in ["a", "b", "c"] {
            let n = c.get(t).copied().unwrap_or(0);
            assert!((800..1200).contains(&n), "{t} first {n} of 3000: {c:?}");
        }
    }

    #[test]
    fn a_seed_fixes_the_order() {
        let entries = vec![
            srv(1, 5, "a"),
            srv(1, 5, "b"),
            srv(1, 5, "c"),
            srv(1, 5, "d"),
        ];
        let a = order_srv(entries.clone(), &mut SmallRng::seed_from_u64(42));
        let b = order_srv(entries, &mut SmallRng::seed_from_u64(42));
        assert_eq!(a, b);
    }

    #[test]
    fn mx_by_preference_with_ties_shuffled() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut first = HashMap::new();
        for _ in 0..2000 {
            let order = order_mx(
                vec![(20, "late"), (10, "x"), (10, "y"), (5, "early")],
                &mut rng,
            );
            assert_eq!(order[0], "early");
            assert_eq!(order[3], "late");
            *first.entry(order[1]).or_insert(0usize) += 1;
        }
        for t in ["x", "y"] {
            let n = first.get(t).copied().unwrap_or(0);
            assert!((850..1150).contains(&n), "{t} ahead {n} of 2000: {first:?}");
        }
    }
}
