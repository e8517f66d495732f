//! Fundamental frequency by YIN (de Cheveigné & Kawahara 2002): cumulative-mean-normalised
//! difference function, absolute threshold, parabolic interpolation; median over frames.

use realfft::RealFftPlanner;

const THRESHOLD: f32 = 0.15;

/// f0 in Hz of one frame starting at `x[0]` (needs `win + sr/fmin` samples), or None if unvoiced.
pub fn yin_frame(x: &[f32], sr: u32, fmin: f32, fmax: f32, win: usize) -> Option<f32> {
    let tau_max = (sr as f32 / fmin).ceil() as usize;
    let tau_min = ((sr as f32 / fmax).floor() as usize).max(2);
    if x.len() < win + tau_max + 1 {
        return None;
    }
    let d = difference(&x[..win + tau_max + 1], win, tau_max);
    // Cumulative mean normalised difference.
    let mut cmnd = vec![1f32; tau_max + 1];
    let mut running = 0f32;
    for tau in 1..=tau_max {
        running += d[tau];
        cmnd[tau] = if running > 0.0 {
            d[tau] * tau as f32 / running
        } else {
            1.0
        };
    }
    let mut best = None;
    let mut tau = tau_min;
    while tau < tau_max {
        if cmnd[tau] < THRESHOLD {
            while tau + 1 < tau_max && cmnd[tau + 1] < cmnd[tau] {
                tau += 1;
            }
            best = Some(tau);
            break;
        }
        tau += 1;
    }
    let tau = best.or_else(|| {
        (tau_min..tau_max)
            .min_by(|&a, &b| cmnd[a].total_cmp(&cmnd[b]))
            .filter(|&t| cmnd[t] < 0.5)
    })?;
    // Interpolate on d(τ), not on the normalised d'(τ): d' carries a factor τ/Σd that skews the
    // parabola and biases short periods (≈3 cents at 2 kHz / 44.1 kHz).
    let (a, b, c) = (d[tau - 1], d[tau], d[tau + 1]);
    let denom = a - 2.0 * b + c;
    let shift = if denom.abs() > 1e-12 {
        0.5 * (a - c) / denom
    } else {
        0.0
    };
    Some(sr as f32 / (tau as f32 + shift.clamp(-1.0, 1.0)))
}

/// YIN's difference d(τ) = Σ_{j<win} (x_j − x_{j+τ})² for τ ≤ tau_max, via one FFT correlation.
fn difference(x: &[f32], win: usize, tau_max: usize) -> Vec<f32> {
    let n = (win + tau_max + win).next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut a = vec![0f32; n];
    a[..win].copy_from_slice(&x[..win]);
    let mut b = vec![0f32; n];
    b[..x.len()].copy_from_slice(x);
    let mut fa = fwd.make_output_vec();
    let mut fb = fwd.make_output_vec();
    fwd.process(&mut a, &mut fa).expect("fft sizes match");
    fwd.process(&mut b, &mut fb).expect("fft sizes match");
    for (p, q) in fa.iter_mut().zip(&fb) {
        *p = p.conj() * q;
    }
    let mut r = vec![0f32; n];
    inv.process(&mut fa, &mut r).expect("fft sizes match");
    let scale = 1.0 / n as f32;
    let mut sq = vec![0f64; x.len() + 1];
    for (i, v) in x.iter().enumerate() {
        sq[i + 1] = sq[i] + (*v as f64) * (*v as f64);
    }
    let e0 = sq[win];
    (0..=tau_max)
        .map(|t| (e0 + (sq[t + win] - sq[t]) - 2.0 * (r[t] * scale) as f64).max(0.0) as f32)
        .collect()
}

/// Median f0 over frames hopped through `x` (unvoiced frames skipped); None if none voiced.
pub fn estimate_f0(x: &[f32], sr: u32, fmin: f32, fmax: f32) -> Option<f32> {
    let win = (sr as usize / 40).next_power_of_two();
    let need = win + (sr as f32 / fmin).ceil() as usize + 1;
    let hop = (sr as usize / 20).max(1);
    let mut f: Vec<f32> = (0..x.len().saturating_sub(need))
        .step_by(hop)
        .filter_map(|s| yin_frame(&x[s..s + need], sr, fmin, fmax, win))
        .collect();
    if f.is_empty() {
        return None;
    }
    f.sort_by(f32::total_cmp);
    Some(f[f.len() / 2])
}

/// Signed distance in cents from `hz` to MIDI note `midi`.
pub fn cents_from_midi(hz: f32, midi: f32) -> f32 {
    1200.0 * (hz / (440.0 * 2f32.powf((midi - 69.0) / 12.0))).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sawtooth_f0_within_a_cent() {
        for f in [65.4f32, 261.6, 1046.5, 2093.0] {
            let x: Vec<f32> = (0..22_050)
                .map(|i| {
                    (1..8)
                        .map(|k| {
                            // f64 phase: an f32 phase of ~5e4 rad is off by ~4e-3 rad.
                            ((2.0 * std::f64::consts::PI * f as f64 * k as f64 * i as f64
                                / 44_100.0)
                                .sin()
                                / k as f64) as f32
                        })
                        .sum()
                })
                .collect();
            let est = estimate_f0(&x, 44_100, 50.0, 2500.0).unwrap();
            assert!((1200.0 * (est / f).log2()).abs() < 1.0, "{f} -> {est}");
        }
    }
}
