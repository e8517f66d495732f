//! Audio I/O and DSP judges shared by the data and evaluation stages.

pub mod chroma;
pub mod decode;
pub mod onset;
pub mod pitch;
pub mod resample;
pub mod vorbis;
pub mod wav;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("wav {path}: {source}")]
    Wav {
        path: std::path::PathBuf,
        source: hound::Error,
    },
    #[error("resampler: {0}")]
    Resample(String),
    #[error("io {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Mono mixdown as the mean of the channels (what torchaudio/librosa `mono=True` do).
pub fn mix_mono(left: &[f32], right: &[f32]) -> Vec<f32> {
    left.iter().zip(right).map(|(l, r)| 0.5 * (l + r)).collect()
}
