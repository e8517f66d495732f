//! Chromagram: Hann-windowed STFT magnitudes between 60 Hz and 5 kHz folded onto 12 pitch classes
//! (nearest equal-tempered semitone, A4 = 440 Hz), summed over frames, scaled to max 1.

use realfft::RealFftPlanner;

const WIN: usize = 8192;
const FMIN: f32 = 60.0;
const FMAX: f32 = 5000.0;

pub fn chroma(x: &[f32], sr: u32) -> [f32; 12] {
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(WIN);
    let hann: Vec<f32> = (0..WIN)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / WIN as f32).cos())
        .collect();
    let bin_pc: Vec<Option<usize>> = (0..=WIN / 2)
        .map(|k| {
            let f = k as f32 * sr as f32 / WIN as f32;
            (FMIN..=FMAX)
                .contains(&f)
                .then(|| (69.0 + 12.0 * (f / 440.0).log2()).round().rem_euclid(12.0) as usize)
        })
        .collect();
    let mut acc = [0f32; 12];
    let mut frame = vec![0f32; WIN];
    let mut spec = fft.make_output_vec();
    let mut start = 0;
    while start + WIN <= x.len() {
        for (i, f) in frame.iter_mut().enumerate() {
            *f = x[start + i] * hann[i];
        }
        fft.process(&mut frame, &mut spec).expect("fft size");
        for (k, c) in spec.iter().enumerate() {
            if let Some(pc) = bin_pc[k] {
                acc[pc] += c.norm();
            }
        }
        start += WIN / 2;
    }
    let max = acc.iter().cloned().fold(0f32, f32::max);
    if max > 0.0 {
        acc.iter_mut().for_each(|v| *v /= max);
    }
    acc
}

/// The `k` strongest pitch classes, sorted ascending.
pub fn top_pitch_classes(c: &[f32; 12], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..12).collect();
    idx.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
    let mut top = idx[..k].to_vec();
    top.sort();
    top
}
