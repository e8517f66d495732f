//! Sample-rate conversion with rubato's `FftFixedInOut`.
//!
//! Filter: rubato's synchronous FFT resampler multiplies the spectrum with an anti-aliasing
//! low-pass built from a BlackmanHarris2-windowed sinc of `fft_size_in` taps (here 1764 at 44.1 kHz,
//! chunks of 4 × 441 in / 4 × 320 out), cutoff at rubato's `calculate_cutoff` for that length scaled
//! to the output Nyquist (≈ 0.95 × 16 kHz for 44.1 → 32 kHz). It is exact for a fixed rational ratio
//! (no interpolation drift) and linear-phase; its group delay (`output_delay`) is removed so that
//! output sample 0 aligns with input sample 0 and the length is exactly `round(n · out / in)`.

use super::AudioError;
use rubato::Resampler;

pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to {
        return Ok(x.to_vec());
    }
    let g = gcd(from as usize, to as usize);
    let min_in = from as usize / g;
    let chunk_in = min_in * 1764usize.div_ceil(min_in).max(1);
    let mut rs = rubato::FftFixedInOut::<f32>::new(from as usize, to as usize, chunk_in, 1)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let n_out = ((x.len() as u64 * to as u64 + from as u64 / 2) / from as u64) as usize;
    let delay = rs.output_delay();
    let cin = rs.input_frames_next();
    let mut out = Vec::with_capacity(n_out + delay + rs.output_frames_next());
    let mut pos = 0;
    let mut chunk = vec![0f32; cin];
    while out.len() < n_out + delay {
        chunk.iter_mut().for_each(|c| *c = 0.0);
        // Past the end of the input the chunks are zeros that flush the filter's delay line.
        let take = x.len().saturating_sub(pos).min(cin);
        if take > 0 {
            chunk[..take].copy_from_slice(&x[pos..pos + take]);
        }
        pos += cin;
        let y = rs
            .process(&[&chunk], None)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        out.extend_from_slice(&y[0]);
    }
    Ok(out[delay..delay + n_out].to_vec())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phase is computed in f64: an f32 phase of ~1e5 rad carries ~1e-2 rad of rounding noise,
    /// which spreads a tone's energy over the band and depends on the libm's sinf variant.
    fn tone(f: f64, i: usize, sr: f64) -> f32 {
        (2.0 * std::f64::consts::PI * f * i as f64 / sr).sin() as f32
    }

    #[test]
    fn sine_keeps_frequency_amplitude_and_alignment() {
        let n = 44_100;
        let x: Vec<f32> = (0..n).map(|i| tone(1000.0, i, 44_100.0)).collect();
        let y = resample(&x, 44_100, 32_000).unwrap();
        assert_eq!(y.len(), 32_000);
        // Compare with the ideal 32 kHz sine away from the edges: alignment and gain within 1e-3.
        let err = (2000..30_000)
            .map(|i| (y[i] - tone(1000.0, i, 32_000.0)).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "max error {err}");
        // 20 kHz is above the new Nyquist: it must be removed, not aliased to 12 kHz.
        let hi: Vec<f32> = (0..n).map(|i| tone(20_000.0, i, 44_100.0)).collect();
        let yh = resample(&hi, 44_100, 32_000).unwrap();
        let rms = (yh[2000..30_000].iter().map(|v| v * v).sum::<f32>() / 28_000.0).sqrt();
        assert!(rms < 1e-3, "aliased rms {rms}");
    }

    /// When the filter delay needs more flush chunks than the input filled, the loop reads past
    /// the input's end (it used to slice out of range and panic, e.g. 48 → 32 kHz of 3 s).
    #[test]
    fn flushing_past_the_end_of_the_input_pads_with_silence() {
        for (n, from, to) in [
            (144_000, 48_000, 32_000),
            (100, 48_000, 32_000),
            (7, 32_000, 48_000),
        ] {
            let x: Vec<f32> = (0..n).map(|i| tone(440.0, i, f64::from(from))).collect();
            let y = resample(&x, from, to).unwrap();
            assert_eq!(
                y.len(),
                (n * to as usize + from as usize / 2) / from as usize
            );
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
}
