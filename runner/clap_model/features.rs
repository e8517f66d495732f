//! transformers' `ClapFeatureExtractor` (feature_extraction_clap.py + audio_utils.py), one clip at a
//! time: centred reflect-padded STFT with a periodic Hann window, power spectrum, mel filter bank
//! (slaney scale and area norm for `rand_trunc`, HTK without norm for `fusion`), floor 1e-10, dB.
//!
//! Numerics follow the reference step by step so the features agree to float32 rounding: the STFT is
//! computed in f64 but each bin is stored as complex64 (numpy's `spectrogram` buffer is complex64),
//! the power, mel product and dB are f64, the log-mel is cast to f32 (the function's default `dtype`),
//! and fusion's bilinear shrink runs on those f32 values with torch's CPU arithmetic.
//!
//! `top_db` is read from the config but, as in transformers (`_np_extract_fbank_features` never passes
//! `db_range`), not applied; the laion checkpoints set it to null anyway.
//!
//! Randomness (the crop of a long clip) comes from [`Crops`]: seeded for real use, or given
//! explicitly to replay what a reference run drew.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::ClapError;
use super::config::{FeatureConfig, Padding, Truncation};

/// Where the random crops of a clip longer than `max_length_s` go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crops {
    /// Draw them from a ChaCha8 generator with this seed (uniform over the same ranges as numpy's
    /// `randint` / `choice` in transformers, not the same stream).
    Seeded(u64),
    /// Use these: `rand_trunc` one sample offset in `0..=len - max_samples`; `fusion` three frame
    /// offsets (front, middle, back), each inside its third of `0..=frames - chunk_frames` as
    /// `np.array_split` cuts it. Ignored for clips that are not cropped.
    Given(Vec<usize>),
}

/// The extractor's `input_features` for one clip, `[channels, frames, mels]` row-major, and its
/// `is_longer` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct MelInput {
    pub data: Vec<f32>,
    pub channels: usize,
    pub frames: usize,
    pub mels: usize,
    /// With `fusion` this is always true: transformers marks a random clip of the batch as longer
    /// when none is, and in a batch of one that is this clip. With `rand_trunc` it is true exactly
    /// when the clip was cropped.
    pub is_longer: bool,
}

impl MelInput {
    /// `[1, channels, frames, mels]` f32, as the audio encoder takes it.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, ClapError> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, self.channels, self.frames, self.mels),
            device,
        )?)
    }
}

pub struct FeatureExtractor {
    cfg: FeatureConfig,
    /// `[mels][bins]` and, per mel, the range of bins with a non-zero weight (summing only those
    /// adds exactly the same terms, zeros left out, in the same order).
    filters: Vec<Vec<f64>>,
    support: Vec<(usize, usize)>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl FeatureExtractor {
    pub fn new(cfg: FeatureConfig) -> Result<Self, ClapError> {
        let bad = |m: String| Err(ClapError::Input(format!("feature extractor config: {m}")));
        if cfg.fft_window_size < 2 || cfg.hop_length == 0 || cfg.sampling_rate == 0 {
            return bad("fft_window_size, hop_length and sampling_rate must be positive".into());
        }
        if cfg.feature_size == 0 || cfg.max_samples() == 0 {
            return bad("feature_size and max_length_s must be positive".into());
        }
        // The filter bank (feature_size × bins) and the window are computed from these, not
        // read: a hostile config must not size them. 16× the largest real values.
        if cfg.fft_window_size > 1 << 16 || cfg.feature_size > 4096 || cfg.max_length_s > 3600 {
            return bad(format!(
                "fft_window_size {} (at most 65536), feature_size {} (at most 4096) or \
                 max_length_s {} (at most 3600) is out of range",
                cfg.fft_window_size, cfg.feature_size, cfg.max_length_s
            ));
        }
        if !(cfg.frequency_min >= 0.0 && cfg.frequency_min <= cfg.frequency_max) {
            return bad(format!(
                "need 0 <= frequency_min ({}) <= frequency_max ({})",
                cfg.frequency_min, cfg.frequency_max
            ));
        }
        let bins = cfg.fft_window_size / 2 + 1;
        let scale = match cfg.truncation {
            Truncation::Fusion => MelScale::Htk,
            Truncation::RandTrunc => MelScale::Slaney,
        };
        let filters = mel_filter_bank(
            bins,
            cfg.feature_size,
            cfg.frequency_min,
            cfg.frequency_max,
            cfg.sampling_rate,
            scale,
        );
        let support = filters
            .iter()
            .map(|row| {
                let lo = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let hi = row.iter().rposition(|&w| w != 0.0).map_or(0, |i| i + 1);
                (lo, hi.max(lo))
            })
            .collect();
        let window = hann_periodic(cfg.fft_window_size);
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.fft_window_size);
        Ok(Self {
            cfg,
            filters,
            support,
            window,
            fft,
        })
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// One clip at cfg.sampling_rate, processed alone (a batch of one), as transformers would.
    pub fn extract(&self, wave: &[f64], crops: &Crops) -> Result<MelInput, ClapError> {
        if wave.is_empty() {
            return Err(ClapError::Input("CLAP features of an empty clip".into()));
        }
        if let Some(i) = wave.iter().position(|v| !v.is_finite()) {
            return Err(ClapError::Input(format!(
                "CLAP features: sample {i} is not finite ({})",
                wave[i]
            )));
        }
        let max = self.cfg.max_samples();
        let mels = self.cfg.feature_size;
        if wave.len() > max {
            match self.cfg.truncation {
                Truncation::RandTrunc => {
                    let overflow = wave.len() - max;
                    let idx = match crops {
                        Crops::Seeded(seed) => {
                            rand_chacha::ChaCha8Rng::seed_from_u64(*seed).random_range(0..=overflow)
                        }
                        Crops::Given(v) => match v.as_slice() {
                            [i] if *i <= overflow => *i,
                            _ => {
                                return Err(ClapError::Input(format!(
                                    "rand_trunc crop: expected one sample offset in 0..={overflow}, got {v:?}"
                                )));
                            }
                        },
                    };
                    let (data, frames) = self.log_mel(&wave[idx..idx + max])?;
                    Ok(MelInput {
                        data,
                        channels: 1,
                        frames,
                        mels,
                        is_longer: true,
                    })
                }
                Truncation::Fusion => {
                    let (mel, total) = self.log_mel(wave)?;
                    let chunk = max / self.cfg.hop_length + 1;
                    if chunk == total {
                        // Longer than max_length but by less than a hop: the whole mel, as is.
                        return Ok(four_copies(mel, total, mels));
                    }
                    let offsets = fusion_offsets(total, chunk, crops)?;
                    // transformers shrinks to [chunk, 64] (the mel count hard-coded); with the
                    // default 64 mels that is the mel axis unchanged, which is what we do for any
                    // feature_size (transformers would fail to stack the channels otherwise).
                    let mut data = Vec::with_capacity(4 * chunk * mels);
                    data.extend(bilinear_shrink(&mel, total, mels, chunk, mels));
                    for o in offsets {
                        data.extend_from_slice(&mel[o * mels..(o + chunk) * mels]);
                    }
                    Ok(MelInput {
                        data,
                        channels: 4,
                        frames: chunk,
                        mels,
                        is_longer: true,
                    })
                }
            }
        } else {
            let padded = pad_to(wave, max, self.cfg.padding);
            let (mel, frames) = self.log_mel(&padded)?;
            Ok(match self.cfg.truncation {
                Truncation::Fusion => four_copies(mel, frames, mels),
                Truncation::RandTrunc => MelInput {
                    data: mel,
                    channels: 1,
                    frames,
                    mels,
                    is_longer: false,
                },
            })
        }
    }

    /// audio_utils.spectrogram(center=True, pad_mode="reflect", power=2, log_mel="dB") transposed:
    /// `[frames, mels]` f32 and the frame count.
    fn log_mel(&self, wave: &[f64]) -> Result<(Vec<f32>, usize), ClapError> {
        let n = self.cfg.fft_window_size;
        let hop = self.cfg.hop_length;
        let half = (n / 2) as isize;
        let padded_len = wave.len() + 2 * (n / 2);
        let frames = 1 + (padded_len - n) / hop;
        let mels = self.cfg.feature_size;
        let mut input = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; spec.len()];
        let mut out = Vec::with_capacity(frames * mels);
        for f in 0..frames {
            let start = (f * hop) as isize - half;
            for (k, slot) in input.iter_mut().enumerate() {
                *slot = wave[reflect(start + k as isize, wave.len())] * self.window[k];
            }
            self.fft
                .process_with_scratch(&mut input, &mut spec, &mut scratch)
                .map_err(|e| ClapError::Input(format!("CLAP features: FFT: {e}")))?;
            for (p, c) in power.iter_mut().zip(&spec) {
                // numpy keeps the spectrum as complex64 before taking |.|² in f64.
                let c = Complex::new(c.re as f32 as f64, c.im as f32 as f64);
                *p = c.re * c.re + c.im * c.im;
            }
            for (row, &(lo, hi)) in self.filters.iter().zip(&self.support) {
                let mut acc = 0.0f64;
                for b in lo..hi {
                    acc += row[b] * power[b];
                }
                // mel_floor 1e-10, then power_to_db's clip at min_value 1e-10 and reference 1.
                let db = 10.0 * acc.max(1e-10).log10();
                out.push(db as f32);
            }
        }
        Ok((out, frames))
    }
}

fn four_copies(mel: Vec<f32>, frames: usize, mels: usize) -> MelInput {
    let mut data = Vec::with_capacity(4 * mel.len());
    for _ in 0..4 {
        data.extend_from_slice(&mel);
    }
    MelInput {
        data,
        channels: 4,
        frames,
        mels,
        // transformers: a batch with no longer clip gets a random one marked longer; alone, this one.
        is_longer: true,
    }
}

/// Index into `0..len` with numpy's "reflect" padding (mirror without repeating the edge sample).
fn reflect(mut i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let n = len as isize;
    let period = 2 * (n - 1);
    i = i.rem_euclid(period);
    if i >= n {
        (period - i) as usize
    } else {
        i as usize
    }
}

/// The short-clip branch of `_get_input_mel`: repeat and/or zero-pad to `max` samples.
fn pad_to(wave: &[f64], max: usize, padding: Padding) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(max);
    let n_repeat = max / wave.len();
    match padding {
        Padding::Repeat => {
            while out.len() < max {
                let take = (max - out.len()).min(wave.len());
                out.extend_from_slice(&wave[..take]);
            }
        }
        Padding::Repeatpad => {
            for _ in 0..n_repeat {
                out.extend_from_slice(wave);
            }
        }
        Padding::Pad => out.extend_from_slice(wave),
    }
    out.resize(max, 0.0);
    out
}

/// `np.array_split(range(0, total - chunk + 1), 3)` with the empty-part fallback to `[0]`, as
/// half-open ranges.
fn fusion_ranges(total: usize, chunk: usize) -> [(usize, usize); 3] {
    let n = total - chunk + 1;
    let (q, r) = (n / 3, n % 3);
    let sizes = [q + usize::from(r > 0), q + usize::from(r > 1), q];
    let mut ranges = [(0, 0); 3];
    let mut start = 0;
    for (k, s) in sizes.iter().enumerate() {
        ranges[k] = if *s == 0 { (0, 1) } else { (start, start + s) };
        start += s;
    }
    ranges
}

fn fusion_offsets(total: usize, chunk: usize, crops: &Crops) -> Result<[usize; 3], ClapError> {
    let ranges = fusion_ranges(total, chunk);
    match crops {
        Crops::Seeded(seed) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
            Ok(ranges.map(|(lo, hi)| rng.random_range(lo..hi)))
        }
        Crops::Given(v) => {
            let ok = v.len() == 3
                && v.iter()
                    .zip(&ranges)
                    .all(|(o, (lo, hi))| (*lo..*hi).contains(o));
            if !ok {
                return Err(ClapError::Input(format!(
                    "fusion crops: expected three frame offsets in {:?} (front, middle, back), got {v:?}",
                    ranges.map(|(lo, hi)| lo..hi)
                )));
            }
            Ok([v[0], v[1], v[2]])
        }
    }
}

/// torch `interpolate(mode="bilinear", align_corners=False)` of a `[h_in, w_in]` f32 image to
/// `[h_out, w_out]`, with the CPU kernel's f32 index/weight arithmetic and summation order.
fn bilinear_shrink(x: &[f32], h_in: usize, w_in: usize, h_out: usize, w_out: usize) -> Vec<f32> {
    let hs = axis_weights(h_in, h_out);
    let ws = axis_weights(w_in, w_out);
    let mut out = Vec::with_capacity(h_out * w_out);
    for &(h0, h1, lh0, lh1) in &hs {
        for &(w0, w1, lw0, lw1) in &ws {
            let top = x[h0 * w_in + w0] * lw0 + x[h0 * w_in + w1] * lw1;
            let bottom = x[h1 * w_in + w0] * lw0 + x[h1 * w_in + w1] * lw1;
            out.push(top * lh0 + bottom * lh1);
        }
    }
    out
}

/// Per output index: (i0, i1, λ0, λ1) as aten's `compute_indices_weights_linear`.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `window_function(n, "hann")` (periodic): `np.hanning(n + 1)[:-1]`, with numpy's formula.
fn hann_periodic(n: usize) -> Vec<f64> {
    let m = n + 1;
    (0..n)
        .map(|k| {
            let x = (1 + 2 * k) as f64 - m as f64;
            0.5 + 0.5 * (std::f64::consts::PI * x / (m - 1) as f64).cos()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum MelScale {
    /// HTK mels, no normalisation (torchaudio's defaults): fusion.
    Htk,
    /// Slaney mels with area normalisation (librosa's defaults): rand_trunc.
    Slaney,
}

fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            if f >= 1000.0 {
                15.0 + (f / 1000.0).ln() * (27.0 / 6.4f64.ln())
            } else {
                3.0 * f / 200.0
            }
        }
    }
}

fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            if m >= 15.0 {
                1000.0 * ((6.4f64.ln() / 27.0) * (m - 15.0)).exp()
            } else {
                200.0 * m / 3.0
            }
        }
    }
}

/// `np.linspace(a, b, n)`: `a + i·step`, the last point exactly `b`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
    v[n - 1] = b;
    v
}

/// audio_utils.mel_filter_bank (triangles in Hz; `norm="slaney"` exactly with the slaney scale),
/// returned as `[mels][bins]`.
fn mel_filter_bank(
    bins: usize,
    mels: usize,
    fmin: f64,
    fmax: f64,
    sampling_rate: u32,
    scale: MelScale,
) -> Vec<Vec<f64>> {
    let mel_freqs = linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), mels + 2);
    let filter_freqs: Vec<f64> = mel_freqs.iter().map(|&m| mel_to_hz(m, scale)).collect();
    let fft_freqs = linspace(0.0, (sampling_rate / 2) as f64, bins);
    let diff: Vec<f64> = filter_freqs.windows(2).map(|w| w[1] - w[0]).collect();
    (0..mels)
        .map(|m| {
            let enorm = match scale {
                MelScale::Slaney => 2.0 / (filter_freqs[m + 2] - filter_freqs[m]),
                MelScale::Htk => 1.0,
            };
            fft_freqs
                .iter()
                .map(|&f| {
                    let down = -(filter_freqs[m] - f) / diff[m];
                    let up = (filter_freqs[m + 2] - f) / diff[m + 1];
                    let w = 0f64.max(down.min(up));
                    match scale {
                        MelScale::Slaney => w * enorm,
                        MelScale::Htk => w,
                    }
                })
                .collect()
        })
        .collect()
}

/// Band-limited resampling with rubato (sinc, high quality), e.g. MusicGen's 32 kHz → CLAP's 48 kHz.
///
/// Delegates to [`crate::audio::resample::resample`] (rubato's synchronous FFT resampler: a
/// BlackmanHarris2-windowed sinc low-pass, exact for the rational ratio, group delay removed, output
/// length `round(n · to / from)`), so the whole crate resamples one way.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ClapError> {
    if from == 0 || to == 0 {
        return Err(ClapError::Input(format!(
            "cannot resample from {from} Hz to {to} Hz: rates must be positive"
        )));
    }
    if samples.is_empty() {
        return Err(ClapError::Input("cannot resample an empty clip".into()));
    }
    if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
        return Err(ClapError::Input(format!(
            "cannot resample: sample {i} is not finite ({})",
            samples[i]
        )));
    }
    crate::audio::resample::resample(samples, from, to)
        .map_err(|e| ClapError::Input(format!("resampling {from} Hz → {to} Hz: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 3, mode="reflect") == [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn array_split_ranges() {
        // np.array_split(range(0, 8), 3) -> [0,1,2], [3,4,5], [6,7]
        assert_eq!(fusion_ranges(8 + 9, 10), [(0, 3), (3, 6), (6, 8)]);
        // two candidates: [0], [1], [] -> the empty third falls back to [0]
        assert_eq!(fusion_ranges(11, 10), [(0, 1), (1, 2), (0, 1)]);
    }

    #[test]
    fn padding_modes() {
        let w = [1.0, 2.0, 3.0];
        assert_eq!(
            pad_to(&w, 8, Padding::Repeatpad),
            [1., 2., 3., 1., 2., 3., 0., 0.]
        );
        assert_eq!(
            pad_to(&w, 8, Padding::Repeat),
            [1., 2., 3., 1., 2., 3., 1., 2.]
        );
        assert_eq!(
            pad_to(&w, 8, Padding::Pad),
            [1., 2., 3., 0., 0., 0., 0., 0.]
        );
    }

    #[test]
    fn bilinear_identity_and_halving() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(bilinear_shrink(&x, 4, 3, 4, 3), x);
        // 4 rows -> 2: each output row is the mean of two input rows (src = 0.5, 2.5).
        let y = bilinear_shrink(&x, 4, 3, 2, 3);
        assert_eq!(y, [1.5, 2.5, 3.5, 7.5, 8.5, 9.5]);
    }
}
