//! WAV files: 32-bit float writes (as SynTheory's midi2audio), any PCM/float read; atomic writes.

use super::AudioError;
use std::path::Path;

/// Writes interleaved `channels`-channel f32 samples atomically.
pub fn write_f32(
    path: &Path,
    samples: &[f32],
    channels: u16,
    sample_rate: u32,
) -> Result<(), AudioError> {
    let spec = hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut buf = std::io::Cursor::new(Vec::with_capacity(samples.len() * 4 + 64));
    {
        let mut w = hound::WavWriter::new(&mut buf, spec).map_err(|source| AudioError::Wav {
            path: path.into(),
            source,
        })?;
        for &s in samples {
            w.write_sample(s).map_err(|source| AudioError::Wav {
                path: path.into(),
                source,
            })?;
        }
        w.finalize().map_err(|source| AudioError::Wav {
            path: path.into(),
            source,
        })?;
    }
    crate::fsx::write_atomic(path, buf.get_ref()).map_err(|source| AudioError::Io {
        path: path.into(),
        source,
    })
}

/// Reads a WAV as interleaved f32 in [-1, 1] (integer formats scaled), with (channels, rate).
pub fn read(path: &Path) -> Result<(Vec<f32>, u16, u32), AudioError> {
    let err = |source| AudioError::Wav {
        path: path.into(),
        source,
    };
    let r = hound::WavReader::open(path).map_err(err)?;
    samples_of(r, path)
}

/// [`read`] over bytes already in memory; `path` only names them in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, u16, u32), AudioError> {
    let r =
        hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|source| AudioError::Wav {
            path: path.into(),
            source,
        })?;
    samples_of(r, path)
}

fn samples_of<R: std::io::Read>(
    r: hound::WavReader<R>,
    path: &Path,
) -> Result<(Vec<f32>, u16, u32), AudioError> {
    let err = |source| AudioError::Wav {
        path: path.into(),
        source,
    };
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r
            .into_samples::<f32>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?,
        // A lying header must not reach the shift below (a panic for 0 or over 64 bits).
        hound::SampleFormat::Int if !(1..=32).contains(&spec.bits_per_sample) => {
            return Err(err(hound::Error::FormatError(
                "integer bits per sample outside 1..=32",
            )));
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?
        }
    };
    Ok((samples, spec.channels, spec.sample_rate))
}
