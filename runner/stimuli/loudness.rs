//! EBU R128 loudness normalisation with a true-peak ceiling, and the excerpt's fades.
//!
//! Integrated loudness (ITU-R BS.1770-4 gating) and true peak (4× oversampled below 96 kHz) come
//! from the `ebur128` crate. Normalisation is a gain; when the gained clip's peak exceeds the
//! ceiling a look-ahead limiter (a sliding minimum of the required gain over ±5 ms, smoothed by a
//! box of the same half-width, so the gain never exceeds what any nearby peak needs) brings it
//! down, and gain and ceiling are iterated until the clip is within 0.05 LU of the target and under
//! the true-peak limit.

use super::{Result, StimuliError};
use ebur128::{EbuR128, Mode};
use std::collections::VecDeque;

/// Integrated loudness (LUFS) and true peak (dBTP) of a mono clip.
pub fn measure(x: &[f32], rate: u32) -> std::result::Result<(f64, f64), String> {
    let mut m = EbuR128::new(1, rate, Mode::I | Mode::TRUE_PEAK).map_err(|e| e.to_string())?;
    m.add_frames_f32(x).map_err(|e| e.to_string())?;
    let lufs = m.loudness_global().map_err(|e| e.to_string())?;
    let tp = m.true_peak(0).map_err(|e| e.to_string())?;
    Ok((lufs, 20.0 * tp.max(1e-12).log10()))
}

/// The excerpt `[offset, offset + n)` (zero-padded when the source is shorter) with raised-cosine
/// fades of `fade` samples at both ends.
pub fn excerpt(x: &[f32], offset: usize, n: usize, fade: usize) -> Vec<f32> {
    let mut y: Vec<f32> = (0..n)
        .map(|i| x.get(offset + i).copied().unwrap_or(0.0))
        .collect();
    let fade = fade.min(n / 2);
    for i in 0..fade {
        let w = 0.5 - 0.5 * (std::f64::consts::PI * (i as f64 + 0.5) / fade as f64).cos();
        y[i] *= w as f32;
        y[n - 1 - i] *= w as f32;
    }
    y
}

/// Look-ahead peak limiter: output |y| ≤ `ceiling` at every sample.
pub fn limit(x: &[f32], ceiling: f32, half_width: usize) -> Vec<f32> {
    let n = x.len();
    let req: Vec<f32> = x
        .iter()
        .map(|v| {
            let a = v.abs();
            if a > ceiling { ceiling / a } else { 1.0 }
        })
        .collect();
    // h[i] = min(req[i - w ..= i + w]) with a monotone deque.
    let w = half_width;
    let mut h = vec![1.0f32; n];
    let mut dq: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    for (i, hi) in h.iter_mut().enumerate() {
        while next < n && next <= i + w {
            while dq.back().is_some_and(|&b| req[b] >= req[next]) {
                dq.pop_back();
            }
            dq.push_back(next);
            next += 1;
        }
        while dq.front().is_some_and(|&f| f + w < i) {
            dq.pop_front();
        }
        *hi = dq.front().map_or(1.0, |&f| req[f]);
    }
    // g[i] = mean(h[i - w ..= i + w]) (out-of-range taps count as 1): every h in the box is at most
    // the gain a peak at i requires, so g[i] ≤ req[i].
    let mut prefix = vec![0f64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + h[i] as f64;
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(w);
            let hi = (i + w + 1).min(n);
            let outside = (2 * w + 1 - (hi - lo)) as f64;
            let g = (prefix[hi] - prefix[lo] + outside) / (2 * w + 1) as f64;
            let y = x[i] * g as f32;
            y.clamp(-ceiling, ceiling)
        })
        .collect()
}

/// What normalisation did to one clip.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Normalised {
    pub source_lufs: f64,
    pub source_true_peak_dbtp: f64,
    pub gain_db: f64,
    pub limited: bool,
    pub lufs: f64,
    pub true_peak_dbtp: f64,
}

/// Scales (and if needed limits) `x` to `target_lufs` with true peak ≤ `tp_dbtp`.
pub fn normalise(
    x: &[f32],
    rate: u32,
    target_lufs: f64,
    tp_dbtp: f64,
    what: &str,
) -> Result<(Vec<f32>, Normalised)> {
    let err = |msg: String| StimuliError::Loudness {
        what: what.to_string(),
        msg,
    };
    let (l0, tp0) = measure(x, rate).map_err(err)?;
    if !l0.is_finite() || l0 < -70.0 {
        return Err(err(format!(
            "the excerpt is silent ({l0:.1} LUFS): nothing to normalise"
        )));
    }
    let db = |d: f64| 10f64.powf(d / 20.0);
    let mut gain = db(target_lufs - l0);
    let mut ceiling = db(tp_dbtp);
    let half_width = ((rate as f64 * 0.005) as usize).max(1);
    let mut last = (f64::NAN, f64::NAN);
    for _ in 0..40 {
        let mut y: Vec<f32> = x.iter().map(|v| (*v as f64 * gain) as f32).collect();
        let peak = y.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let limited = peak > ceiling;
        if limited {
            y = limit(&y, ceiling as f32, half_width);
        }
        let (l, tp) = measure(&y, rate).map_err(err)?;
        last = (l, tp);
        if (l - target_lufs).abs() <= 0.05 && tp <= tp_dbtp + 1e-9 {
            return Ok((
                y,
                Normalised {
                    source_lufs: l0,
                    source_true_peak_dbtp: tp0,
                    gain_db: 20.0 * gain.log10(),
                    limited,
                    lufs: l,
                    true_peak_dbtp: tp,
                },
            ));
        }
        if tp > tp_dbtp {
            // Inter-sample peaks: lower the sample ceiling by the overshoot (and a little more).
            ceiling *= db(tp_dbtp - tp - 0.01);
        }
        gain *= db(target_lufs - l);
    }
    Err(err(format!(
        "cannot reach {target_lufs} LUFS with true peak <= {tp_dbtp} dBTP (got {:.2} LUFS, {:.2} dBTP); \
         lower test.target_lufs",
        last.0, last.1
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_holds_the_ceiling_and_leaves_quiet_parts() {
        let mut x = vec![0.1f32; 2000];
        x[1000] = 2.0;
        let y = limit(&x, 0.5, 20);
        assert!(y.iter().all(|v| v.abs() <= 0.5));
        assert!((y[1000] - 0.5).abs() < 1e-6);
        assert!((y[10] - 0.1).abs() < 1e-6 && (y[1990] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn excerpt_pads_and_fades() {
        let x = vec![1.0f32; 100];
        let y = excerpt(&x, 50, 80, 10);
        assert_eq!(y.len(), 80);
        assert!(y[0] < 0.05 && y[79] == 0.0 && (y[40] - 1.0).abs() < 1e-6);
    }
}
