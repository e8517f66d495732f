//! Ogg Vorbis encoding of the report's clips (docs/design.md §7) with `vorbis_rs` (the bundled
//! aoTuV libvorbis + libogg, built with `cc`: no pure-Rust Vorbis or Opus encoder exists).
//!
//! Deterministic: the Ogg stream serial, which the Ogg format wants random, is derived from the
//! samples instead, and libvorbis itself draws no random numbers, so the same clip always gives
//! the same bytes and a re-rendered report is byte-identical.

use std::num::{NonZeroU8, NonZeroU32};

use vorbis_rs::{VorbisBitrateManagementStrategy, VorbisEncoderBuilder};

/// Fixed VBR quality of report clips (libvorbis scale −0.2…1). 0.4 gives ~84–87 kbit/s on 32 kHz
/// mono clips of the embedded model, a tenth of 16-bit WAV, which keeps a sweep's report within
/// ~20 MB; 0.6 would not (~150 kbit/s), 0.2 saves little (~74 kbit/s) for audibly worse sound
/// (measurements: docs/design.md §7).
pub const REPORT_QUALITY: f32 = 0.4;

/// Frames handed to the encoder at a time (libvorbis suggests ~1024; output does not depend on it).
const BLOCK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VorbisError {
    #[error("cannot encode Ogg Vorbis: {0}")]
    Encode(#[from] vorbis_rs::VorbisError),
    #[error("cannot encode Ogg Vorbis: {0}")]
    Shape(String),
}

/// Encodes interleaved `channels`-channel samples (clamped to [−1, 1]; non-finite ones as 0) as
/// one Ogg Vorbis stream at `quality`.
pub fn encode(
    samples: &[f32],
    channels: u16,
    sample_rate: u32,
    quality: f32,
) -> Result<Vec<u8>, VorbisError> {
    let k = u8::try_from(channels)
        .ok()
        .and_then(NonZeroU8::new)
        .ok_or_else(|| VorbisError::Shape(format!("{channels} channels")))?;
    let rate = NonZeroU32::new(sample_rate)
        .ok_or_else(|| VorbisError::Shape("a sample rate of 0 Hz".into()))?;
    let k_us = usize::from(k.get());
    let frames = samples.len() / k_us;
    let planes: Vec<Vec<f32>> = (0..k_us)
        .map(|c| {
            (0..frames)
                .map(|i| {
                    let v = samples[i * k_us + c];
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let mut builder = VorbisEncoderBuilder::new_with_serial(rate, k, Vec::new(), serial(samples));
    builder.bitrate_management_strategy(VorbisBitrateManagementStrategy::QualityVbr {
        target_quality: quality,
    });
    let mut encoder = builder.build()?;
    let mut at = 0;
    while at < frames {
        let end = (at + BLOCK).min(frames);
        let block: Vec<&[f32]> = planes.iter().map(|p| &p[at..end]).collect();
        encoder.encode_audio_block(&block)?;
        at = end;
    }
    Ok(encoder.finish()?)
}

/// The Ogg stream serial: the first 4 bytes of the samples' BLAKE3 hash (any fixed value would
/// do for one file; a content hash keeps distinct clips' streams distinct, as Ogg intends).
fn serial(samples: &[f32]) -> i32 {
    let mut h = blake3::Hasher::new();
    for v in samples {
        h.update(&v.to_le_bytes());
    }
    let b = h.finalize();
    let b = b.as_bytes();
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (std::f32::consts::TAU * hz * i as f32 / 32_000.0).sin())
            .collect()
    }

    #[test]
    fn same_samples_same_bytes_other_samples_other_serial() {
        let a = encode(&tone(32_000, 440.0), 1, 32_000, REPORT_QUALITY).unwrap();
        let b = encode(&tone(32_000, 440.0), 1, 32_000, REPORT_QUALITY).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..4], b"OggS");
        let c = encode(&tone(32_000, 441.0), 1, 32_000, REPORT_QUALITY).unwrap();
        // bytes 14..18 of the first page: the stream serial
        assert_ne!(a[14..18], c[14..18]);
    }

    #[test]
    fn stereo_and_bad_shapes() {
        let st: Vec<f32> = tone(16_000, 220.0).iter().flat_map(|&v| [v, -v]).collect();
        assert!(encode(&st, 2, 32_000, REPORT_QUALITY).is_ok());
        assert!(matches!(
            encode(&st, 0, 32_000, REPORT_QUALITY),
            Err(VorbisError::Shape(_))
        ));
        assert!(matches!(
            encode(&st, 1, 0, REPORT_QUALITY),
            Err(VorbisError::Shape(_))
        ));
        // No samples: a valid stream of headers only, not an error.
        assert!(encode(&[], 1, 32_000, REPORT_QUALITY).is_ok());
    }
}
