//! Reproducible 70/15/15 splits (stratified by class for classification) and balanced
//! one-vs-rest label sets.

use super::data::Targets;
use super::error::{ProbeError, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Row indices of the three splits and the seed that produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub seed: u64,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

const TRAIN: f64 = 0.70;
const VAL: f64 = 0.15;

/// Splits one group of indices (already shuffled) 70/15/15 with at least one training row.
fn cut(idx: &[usize], out: &mut Split) {
    let n = idx.len();
    let n_train = ((n as f64 * TRAIN).round() as usize).clamp(1, n);
    let n_val = ((n as f64 * VAL).round() as usize).min(n - n_train);
    out.train.extend_from_slice(&idx[..n_train]);
    out.val.extend_from_slice(&idx[n_train..n_train + n_val]);
    out.test.extend_from_slice(&idx[n_train + n_val..]);
}

/// Stratified for class targets (each class is cut 70/15/15), plain for regression targets.
/// Errors if a class has fewer than 2 samples or the whole set is too small for a validation set.
pub fn split(y: &Targets, seed: u64) -> Result<Split> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Split {
        seed,
        train: vec![],
        val: vec![],
        test: vec![],
    };
    match y {
        Targets::Classes(c) => {
            let k = y.n_classes();
            let mut groups: Vec<Vec<usize>> = vec![vec![]; k];
            for (i, &cl) in c.iter().enumerate() {
                groups[cl].push(i);
            }
            for (cl, g) in groups.iter_mut().enumerate() {
                if g.is_empty() {
                    continue; // an unused class index
                }
                if g.len() == 1 {
                    return Err(ProbeError::TooFewPerClass {
                        class: cl.to_string(),
                        count: 1,
                        need: 2,
                    });
                }
                g.shuffle(&mut rng);
                cut(g, &mut out);
            }
        }
        Targets::Values(v) => {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.shuffle(&mut rng);
            cut(&idx, &mut out);
        }
    }
    if out.val.is_empty() || out.train.len() < 2 {
        return Err(ProbeError::TooFewSamples { n: y.len() });
    }
    // Shuffle within splits so class blocks do not stay contiguous.
    out.train.shuffle(&mut rng);
    out.val.shuffle(&mut rng);
    out.test.shuffle(&mut rng);
    Ok(out)
}

/// One-vs-rest for `positive`: all its rows plus an equal number of negatives drawn uniformly
/// (all negatives if there are fewer). Returns (row indices, 0/1 labels).
pub fn one_vs_rest(classes: &[usize], positive: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pos: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i] == positive)
        .collect();
    let mut neg: Vec<usize> = (0..classes.len())
        .filter(|&i| classes[i] != positive)
        .collect();
    neg.shuffle(&mut rng);
    neg.truncate(pos.len());
    let mut rows: Vec<usize> = pos.iter().chain(&neg).copied().collect();
    rows.sort_unstable();
    let labels = rows
        .iter()
        .map(|&i| usize::from(classes[i] == positive))
        .collect();
    (rows, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_is_disjoint_complete_and_seeded() {
        let y = Targets::Classes((0..100).map(|i| i % 3).collect());
        let s = split(&y, 7).unwrap();
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.val)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s, split(&y, 7).unwrap());
        assert_ne!(s.train, split(&y, 8).unwrap().train);
        for k in 0..3 {
            let tr = s.train.iter().filter(|&&i| i % 3 == k).count();
            assert!((22..=24).contains(&tr), "class {k}: {tr}");
        }
    }

    #[test]
    fn unused_class_index_and_singleton_class() {
        let y = Targets::Classes((0..40).map(|i| if i % 2 == 0 { 0 } else { 2 }).collect());
        assert!(split(&y, 1).is_ok());
        let mut c: Vec<usize> = (0..40).map(|i| i % 2).collect();
        c[3] = 5;
        let e = split(&Targets::Classes(c), 1).unwrap_err();
        assert!(e.to_string().contains("class 5 has only 1 sample"), "{e}");
    }

    #[test]
    fn balanced_one_vs_rest() {
        let cls: Vec<usize> = (0..60).map(|i| i % 4).collect();
        let (rows, lab) = one_vs_rest(&cls, 2, 1);
        assert_eq!(lab.iter().filter(|&&l| l == 1).count(), 15);
        assert_eq!(rows.len(), 30);
    }
}
