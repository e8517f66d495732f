//! Onsets from log-energy rises and tempo from their spacing.
//!
//! Envelope: energy of 256-sample frames every 64 samples (1.5 ms at 44.1 kHz) in dB (floor −100);
//! onset strength: the rise over 4 hops; onsets: local maxima within ±40 ms above half the largest
//! rise. Tempo: least-squares period of onset times against beat indices (each onset's index is its
//! distance from the first in median inter-onset intervals), so precision grows with the count.

const WIN: usize = 256;
const HOP: usize = 64;
const LAG: usize = 4;

pub fn onset_times(x: &[f32], sr: u32) -> Vec<f64> {
    if x.len() < WIN {
        return Vec::new();
    }
    let frames = (x.len() - WIN) / HOP + 1;
    let db: Vec<f32> = (0..frames)
        .map(|f| {
            let e = x[f * HOP..f * HOP + WIN].iter().map(|v| v * v).sum::<f32>() / WIN as f32;
            10.0 * e.max(1e-10).log10()
        })
        .collect();
    let odf: Vec<f32> = (0..frames)
        .map(|f| {
            if f >= LAG {
                (db[f] - db[f - LAG]).max(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let max = odf.iter().cloned().fold(0f32, f32::max);
    if max <= 0.0 {
        return Vec::new();
    }
    let radius = (0.04 * sr as f64 / HOP as f64).round() as usize;
    (0..frames)
        .filter(|&f| {
            odf[f] >= 0.5 * max
                && (f.saturating_sub(radius)..(f + radius + 1).min(frames))
                    .all(|g| odf[g] < odf[f] || (odf[g] == odf[f] && g >= f))
        })
        .map(|f| (f * HOP + WIN / 2) as f64 / sr as f64)
        .collect()
}

/// Tempo in BPM from onset times (one onset per beat), or None with fewer than 3 onsets.
pub fn tempo_bpm(onsets: &[f64]) -> Option<f64> {
    if onsets.len() < 3 {
        return None;
    }
    let mut ioi: Vec<f64> = onsets.windows(2).map(|w| w[1] - w[0]).collect();
    ioi.sort_by(f64::total_cmp);
    let m = ioi[ioi.len() / 2];
    let b: Vec<f64> = onsets
        .iter()
        .map(|t| ((t - onsets[0]) / m).round())
        .collect();
    let n = b.len() as f64;
    let (mb, mt) = (b.iter().sum::<f64>() / n, onsets.iter().sum::<f64>() / n);
    let cov: f64 = b
        .iter()
        .zip(onsets)
        .map(|(bi, ti)| (bi - mb) * (ti - mt))
        .sum();
    let var: f64 = b.iter().map(|bi| (bi - mb).powi(2)).sum();
    (var > 0.0).then(|| 60.0 * var / cov)
}
