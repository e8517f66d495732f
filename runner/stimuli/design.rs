//! Blinded ids and per-subject presentation orders.
//!
//! Trials come in blocks: one block per (target, replicate) holding one clip of every condition.
//! Each subject gets the blocks in a seeded random order; inside the block at position b, subject s
//! hears the conditions in row (s + b) mod R of a Williams design (a Latin square balanced for
//! first-order carry-over; R = k rows for an even number k of conditions, 2k for odd k). So with a
//! multiple of R subjects, every condition takes every within-block position equally often at every
//! block position, and every ordered pair of conditions is adjacent equally often.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One stimulus: what the private key records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub condition: String,
    pub target: String,
    pub replicate: usize,
}

/// Rows of a Williams design for `k` conditions (each row a permutation of 0..k).
pub fn williams(k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return Vec::new();
    }
    // First row 0, 1, k-1, 2, k-2, ...; row i adds i mod k.
    let mut first = Vec::with_capacity(k);
    let (mut lo, mut hi) = (1usize, k - 1);
    first.push(0);
    let mut take_lo = true;
    while first.len() < k {
        if take_lo {
            first.push(lo);
            lo += 1;
        } else {
            first.push(hi);
            hi -= 1;
        }
        take_lo = !take_lo;
    }
    let mut rows: Vec<Vec<usize>> = (0..k)
        .map(|i| first.iter().map(|&c| (c + i) % k).collect())
        .collect();
    if k % 2 == 1 {
        let mirrored: Vec<Vec<usize>> = rows
            .iter()
            .map(|r| r.iter().rev().copied().collect())
            .collect();
        rows.extend(mirrored);
    }
    rows
}

/// A seeded generator for one purpose (so adding subjects never changes the ids).
pub fn rng(seed: u64, purpose: &str) -> ChaCha20Rng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    ChaCha20Rng::from_seed(*h.finalize().as_bytes())
}

/// `n` distinct random ids: a letter then five letters/digits (no look-alikes).
pub fn blinded_ids(n: usize, seed: u64) -> Vec<String> {
    const ALPHA: &[u8] = b"abcdefghjkmnpqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut r = rng(seed, "ids");
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut s = String::with_capacity(6);
        s.push(ALPHA[r.random_range(0..ALPHA.len())] as char);
        for _ in 0..5 {
            s.push(ALNUM[r.random_range(0..ALNUM.len())] as char);
        }
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    out
}

/// The items of a test, canonical order (target, replicate, condition), with blinded ids.
pub fn items(conditions: &[String], targets: &[String], replicates: usize, seed: u64) -> Vec<Item> {
    let n = conditions.len() * targets.len() * replicates;
    let ids = blinded_ids(n, seed);
    let mut out = Vec::with_capacity(n);
    for t in targets {
        for r in 0..replicates {
            for c in conditions {
                out.push(Item {
                    id: ids[out.len()].clone(),
                    condition: c.clone(),
                    target: t.clone(),
                    replicate: r,
                });
            }
        }
    }
    out
}

/// Presentation order of every subject, as indices into `items` (canonical order from `items`).
pub fn orders(
    n_conditions: usize,
    n_targets: usize,
    replicates: usize,
    subjects: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let k = n_conditions;
    let rows = williams(k);
    let blocks = n_targets * replicates;
    (0..subjects)
        .map(|s| {
            let mut block_order: Vec<usize> = (0..blocks).collect();
            block_order.shuffle(&mut rng(seed, &format!("subject-{s}")));
            let mut seq = Vec::with_capacity(blocks * k);
            for (b, &blk) in block_order.iter().enumerate() {
                for &c in &rows[(s + b) % rows.len()] {
                    seq.push(blk * k + c);
                }
            }
            seq
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carryover_balanced(k: usize) {
        let rows = williams(k);
        let mut pairs = vec![vec![0usize; k]; k];
        for r in &rows {
            let set: BTreeSet<_> = r.iter().collect();
            assert_eq!(set.len(), k);
            for w in r.windows(2) {
                pairs[w[0]][w[1]] += 1;
            }
        }
        for a in 0..k {
            for b in 0..k {
                if a != b {
                    assert_eq!(pairs[a][b], pairs[0][1], "k={k} pair {a}->{b}");
                }
            }
        }
    }

    #[test]
    fn williams_designs_balance_carryover() {
        for k in 2..=7 {
            carryover_balanced(k);
            let rows = williams(k);
            assert_eq!(rows.len(), if k % 2 == 0 { k } else { 2 * k });
            for pos in 0..k {
                let mut count = vec![0; k];
                for r in &rows {
                    count[r[pos]] += 1;
                }
                assert!(count.iter().all(|&c| c == count[0]), "k={k} pos={pos}");
            }
        }
    }

    #[test]
    fn ids_are_distinct_and_seeded() {
        let a = blinded_ids(500, 3);
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 500);
        assert_eq!(a, blinded_ids(500, 3));
        assert_ne!(a, blinded_ids(500, 4));
    }
}
