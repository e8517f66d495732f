//! Probe scores: accuracy, ROC AUC (macro one-vs-rest for multiclass), MSE and R².

use super::data::{Targets, Task};
use serde::{Deserialize, Serialize};

/// Scores of one split. Absent entries do not apply to the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Scores {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    pub n: usize,
}

impl Scores {
    /// The model-selection criterion, larger is better: AUC for classification, −MSE for
    /// regression (the reference tunes on these).
    pub fn selection(&self, task: Task) -> f64 {
        match task {
            Task::Regression => -self.mse.unwrap_or(f64::INFINITY),
            _ => self.auc.unwrap_or(f64::NEG_INFINITY),
        }
    }
}

/// ROC AUC of `score` for the positives in `pos` (Mann–Whitney with mid-ranks for ties).
/// `None` when one of the two groups is empty.
pub fn auc(score: &[f64], pos: &[bool]) -> Option<f64> {
    let n_pos = pos.iter().filter(|&&p| p).count();
    let n_neg = pos.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if pos[o] {
                rank_sum += mid;
            }
        }
        i = j + 1;
    }
    let np = n_pos as f64;
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * n_neg as f64))
}

pub fn mse(pred: &[f64], y: &[f64]) -> f64 {
    pred.iter()
        .zip(y)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / y.len().max(1) as f64
}

pub fn r2(pred: &[f64], y: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let ss_tot: f64 = y.iter().map(|t| (t - mean) * (t - mean)).sum();
    let ss_res: f64 = pred.iter().zip(y).map(|(p, t)| (p - t) * (p - t)).sum();
    1.0 - ss_res / ss_tot
}

/// Scores `pred` (row-major n×c model outputs) against `y`.
pub fn score(task: Task, pred: &[f64], c: usize, y: &Targets) -> Scores {
    let n = y.len();
    let mut s = Scores {
        n,
        ..Default::default()
    };
    match (task, y) {
        (Task::Binary, Targets::Classes(cls)) => {
            let pos: Vec<bool> = cls.iter().map(|&k| k == 1).collect();
            let hits = pred
                .iter()
                .zip(&pos)
                .filter(|(p, t)| (**p >= 0.5) == **t)
                .count();
            s.accuracy = Some(hits as f64 / n as f64);
            s.auc = auc(pred, &pos);
        }
        (Task::Multiclass, Targets::Classes(cls)) => {
            let hits = (0..n)
                .filter(|&i| {
                    let row = &pred[i * c..(i + 1) * c];
                    let arg = (0..c)
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                        .unwrap_or(0);
                    arg == cls[i]
                })
                .count();
            s.accuracy = Some(hits as f64 / n as f64);
            // Macro average over the classes present in this split (others have no AUC).
            let aucs: Vec<f64> = (0..c)
                .filter_map(|k| {
                    let col: Vec<f64> = (0..n).map(|i| pred[i * c + k]).collect();
                    let pos: Vec<bool> = cls.iter().map(|&t| t == k).collect();
                    auc(&col, &pos)
                })
                .collect();
            s.auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);
        }
        (_, y) => {
            let t = y.as_f64();
            s.mse = Some(mse(pred, &t));
            s.r2 = Some(r2(pred, &t));
        }
    }
    s
}

/// Pearson correlation (0 when either side is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_counts_with_ties() {
        // pairs (pos,neg): (0.8 vs 0.1,0.4,0.8) -> 1 + 1 + 0.5; (0.4 vs ...) -> 1 + 0.5 + 0
        let s = [0.8, 0.4, 0.1, 0.4, 0.8];
        let p = [true, true, false, false, false];
        assert!((auc(&s, &p).unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(auc(&s, &[true; 5]), None);
    }

    #[test]
    fn r2_of_perfect_and_mean_predictions() {
        let y = [1.0, 2.0, 3.0];
        assert!((r2(&y, &y) - 1.0).abs() < 1e-12);
        assert!(r2(&[2.0, 2.0, 2.0], &y).abs() < 1e-12);
    }
}
