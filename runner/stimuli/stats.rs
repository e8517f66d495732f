//! Statistics for listening tests: t confidence intervals, the Wilcoxon signed-rank test (exact
//! null distribution without ties/zeros and n ≤ 50, else the normal approximation with tie
//! correction and no continuity correction — scipy.stats.wilcoxon's defaults, zero_method =
//! "wilcox"), Holm's step-down adjustment, and ICC(2,1)/ICC(2,k) (two-way random effects, absolute
//! agreement; Shrout & Fleiss 1979, McGraw & Wong 1996).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Mean with a two-sided 95% t interval (None for fewer than 2 values: only the mean).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MeanCi {
    pub n: usize,
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

pub fn mean_ci(x: &[f64]) -> MeanCi {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return MeanCi {
            n,
            mean,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
        };
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let se = (var / n as f64).sqrt();
    let q = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .map(|t| t.inverse_cdf(0.975))
        .unwrap_or(f64::NAN);
    MeanCi {
        n,
        mean,
        ci_low: mean - q * se,
        ci_high: mean + q * se,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    Exact,
    Normal,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Wilcoxon {
    /// Pairs with a non-zero difference (zeros are dropped, Wilcoxon's method).
    pub n: usize,
    pub zeros: usize,
    pub w_plus: f64,
    pub w_minus: f64,
    /// Normal-approximation z (also given for exact tests, for reference).
    pub z: f64,
    pub p: f64,
    pub method: WilcoxonMethod,
}

/// Average ranks (1-based) of `v`, and Σ(t³ − t) over tie groups.
fn ranks(v: &[f64]) -> (Vec<f64>, f64) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut ties = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    (r, ties)
}

/// Two-sided Wilcoxon signed-rank test of the paired differences `d` (= x − y).
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    let nz: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
    let zeros = d.len() - nz.len();
    let n = nz.len();
    if n == 0 {
        return None;
    }
    let abs: Vec<f64> = nz.iter().map(|v| v.abs()).collect();
    let (r, ties) = ranks(&abs);
    // `+ 0.0`: an empty float sum is -0.0
    let w_plus: f64 = nz
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum::<f64>()
        + 0.0;
    let total = (n * (n + 1)) as f64 / 2.0;
    let w_minus = total - w_plus;
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - ties / 48.0;
    let z = if var > 0.0 {
        (w_plus - mean) / var.sqrt()
    } else {
        0.0
    };
    let (p, method) = if ties == 0.0 && zeros == 0 && n <= 50 {
        // Exact: the number of subsets of {1..n} with each rank sum.
        let max = n * (n + 1) / 2;
        let mut count = vec![0f64; max + 1];
        count[0] = 1.0;
        for k in 1..=n {
            for s in (k..=max).rev() {
                count[s] += count[s - k];
            }
        }
        let all = 2f64.powi(n as i32);
        let t = w_plus.min(w_minus).round() as usize;
        let cdf: f64 = count[..=t].iter().sum::<f64>() / all;
        ((2.0 * cdf).min(1.0), WilcoxonMethod::Exact)
    } else {
        let normal = Normal::new(0.0, 1.0).ok()?;
        ((2.0 * normal.sf(z.abs())).min(1.0), WilcoxonMethod::Normal)
    };
    Some(Wilcoxon {
        n,
        zeros,
        w_plus,
        w_minus,
        z,
        p,
        method,
    })
}

/// Holm–Bonferroni adjusted p-values (same order as `p`).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running = 0f64;
    for (rank, &i) in idx.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Intra-class correlations of an n-targets × k-raters matrix (complete).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Icc {
    pub targets: usize,
    pub raters: usize,
    /// ICC(2,1): agreement of single raters.
    pub icc2_1: f64,
    /// ICC(2,k): agreement of the mean of k raters.
    pub icc2_k: f64,
}

pub fn icc2(m: &[Vec<f64>]) -> Option<Icc> {
    let n = m.len();
    let k = m.first()?.len();
    if n < 2 || k < 2 || m.iter().any(|r| r.len() != k) {
        return None;
    }
    let (nf, kf) = (n as f64, k as f64);
    let grand = m.iter().flatten().sum::<f64>() / (nf * kf);
    let row_means: Vec<f64> = m.iter().map(|r| r.iter().sum::<f64>() / kf).collect();
    let col_means: Vec<f64> = (0..k)
        .map(|j| m.iter().map(|r| r[j]).sum::<f64>() / nf)
        .collect();
    let ss_rows = kf * row_means.iter().map(|v| (v - grand).powi(2)).sum::<f64>();
    let ss_cols = nf * col_means.iter().map(|v| (v - grand).powi(2)).sum::<f64>();
    let ss_total = m.iter().flatten().map(|v| (v - grand).powi(2)).sum::<f64>();
    let ss_err = ss_total - ss_rows - ss_cols;
    let msr = ss_rows / (nf - 1.0);
    let msc = ss_cols / (kf - 1.0);
    let mse = ss_err / ((nf - 1.0) * (kf - 1.0));
    let icc2_1 = (msr - mse) / (msr + (kf - 1.0) * mse + kf * (msc - mse) / nf);
    let icc2_k = (msr - mse) / (msr + (msc - mse) / nf);
    Some(Icc {
        targets: n,
        raters: k,
        icc2_1,
        icc2_k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrout_fleiss_table() {
        // Shrout & Fleiss (1979), Table 2: ICC(2,1) = .29, ICC(2,4) = .62.
        let m = vec![
            vec![9.0, 2.0, 5.0, 8.0],
            vec![6.0, 1.0, 3.0, 2.0],
            vec![8.0, 4.0, 6.0, 8.0],
            vec![7.0, 1.0, 2.0, 6.0],
            vec![10.0, 5.0, 6.0, 9.0],
            vec![6.0, 2.0, 4.0, 7.0],
        ];
        let icc = icc2(&m).unwrap();
        assert!(wilcoxon(&[-1.0, -2.0]).unwrap().w_plus.is_sign_positive());
        assert!((icc.icc2_1 - 0.29).abs() < 0.005, "{icc:?}");
        assert!((icc.icc2_k - 0.62).abs() < 0.005, "{icc:?}");
    }

    #[test]
    fn holm_is_monotone() {
        let a = holm(&[0.01, 0.04, 0.03]);
        assert_eq!(a, vec![0.03, 0.06, 0.06]);
    }
}
