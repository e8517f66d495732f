//! Decoding of user audio files (WAV, FLAC, MP3, OGG/Vorbis) with symphonia, a pure-Rust
//! decoder, so that folder datasets (docs/design.md §5) need no system codec library.
//!
//! `probe` reads only the container header (cheap enough for `rfmx check` and planning);
//! `decode` returns every channel as f32 planes. MP3 is decoded gapless (encoder delay and padding
//! named in the LAME/Xing header are trimmed), so a decoded MP3 lines up with its source.

use std::fs::File;
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Why a file cannot be used as audio; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the file is empty (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a readable audio file ({reason}); supported: WAV, FLAC, MP3, OGG/Vorbis", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: the header declares a sample rate of 0 Hz", path.display())]
    ZeroRate { path: PathBuf },
    #[error("{}: the header declares 0 channels", path.display())]
    NoChannels { path: PathBuf },
    #[error("{}: decoding failed at {at:.2} s: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        at: f64,
        reason: String,
    },
    #[error("{}: contains no audio samples", path.display())]
    NoSamples { path: PathBuf },
}

/// What a file's header says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioInfo {
    pub sample_rate: u32,
    pub channels: usize,
}

/// Decoded audio: one plane per channel, all of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Decoded {
    /// The mean of the channels (what librosa's and torchaudio's `mono=True` do).
    pub fn mono(&self) -> Vec<f32> {
        let n = self.channels.first().map_or(0, Vec::len);
        let k = self.channels.len().max(1) as f32;
        (0..n)
            .map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / k)
            .collect()
    }
}

struct Opened {
    reader: Box<dyn FormatReader>,
    track: u32,
    info: AudioInfo,
    params: symphonia::core::codecs::CodecParameters,
}

/// Runs a symphonia call, turning a panic inside the decoder (it asserts on some malformed
/// headers, e.g. a WAV declaring 0 Hz) into an error naming the file: user input never aborts.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    crate::fsx::catch_panic(f).unwrap_or_else(|reason| {
        Err(DecodeError::Unreadable {
            path: path.to_path_buf(),
            reason,
        })
    })
}

/// The sample rate a RIFF/WAVE `fmt ` chunk declares, read before symphonia sees the file (which
/// panics on 0).
fn wav_declared_rate(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut head)
        .ok()?;
    if head.get(..4)? != b"RIFF" || head.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let len = u32::from_le_bytes(head[at + 4..at + 8].try_into().ok()?) as usize;
        if id == b"fmt " {
            return Some(u32::from_le_bytes(
                head.get(at + 12..at + 16)?.try_into().ok()?,
            ));
        }
        at = at.checked_add(8 + len + (len & 1))?;
    }
    None
}

fn open(path: &Path) -> Result<Opened, DecodeError> {
    guarded(path, || open_unguarded(path))
}

fn open_unguarded(path: &Path) -> Result<Opened, DecodeError> {
    let file = File::open(path).map_err(|source| DecodeError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| DecodeError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len == 0 {
        return Err(DecodeError::Empty {
            path: path.to_path_buf(),
        });
    }
    if wav_declared_rate(path) == Some(0) {
        return Err(DecodeError::ZeroRate {
            path: path.to_path_buf(),
        });
    }
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let unreadable = |reason: String| DecodeError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &opts, &MetadataOptions::default())
        .map_err(|e| unreadable(e.to_string()))?;
    let reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| unreadable("no audio track".into()))?;
    let params = track.codec_params.clone();
    let sample_rate = params
        .sample_rate
        .ok_or_else(|| unreadable("no sample rate in the header".into()))?;
    if sample_rate == 0 {
        return Err(DecodeError::ZeroRate {
            path: path.to_path_buf(),
        });
    }
    let channels = params.channels.map_or(0, |c| c.count());
    if channels == 0 {
        return Err(DecodeError::NoChannels {
            path: path.to_path_buf(),
        });
    }
    Ok(Opened {
        track: track.id,
        reader,
        info: AudioInfo {
            sample_rate,
            channels,
        },
        params,
    })
}

/// Reads the header only: format, sample rate and channel count.
pub fn probe(path: &Path) -> Result<AudioInfo, DecodeError> {
    guarded(path, || probe_unguarded(path))
}

fn probe_unguarded(path: &Path) -> Result<AudioInfo, DecodeError> {
    let o = open(path)?;
    // The codec must be one this build decodes, not just a container it can parse.
    symphonia::default::get_codecs()
        .make(&o.params, &DecoderOptions::default())
        .map_err(|e| DecodeError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(o.info)
}

/// Decodes the whole file. A packet that fails to decode fails the file (a truncated or
/// corrupt file is an error naming where, not a silently shortened clip).
pub fn decode(path: &Path) -> Result<Decoded, DecodeError> {
    guarded(path, || decode_unguarded(path))
}

fn decode_unguarded(path: &Path) -> Result<Decoded, DecodeError> {
    let mut o = open(path)?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&o.params, &DecoderOptions::default())
        .map_err(|e| DecodeError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let k = o.info.channels;
    let mut interleaved: Vec<f32> = Vec::new();
    let corrupt = |at: usize, reason: String| DecodeError::Corrupt {
        path: path.to_path_buf(),
        at: at as f64 / (k as f64 * o.info.sample_rate as f64),
        reason,
    };
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match o.reader.next_packet() {
            Ok(p) => p,
            // The end of the stream is reported as an unexpected EOF.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(corrupt(interleaved.len(), e.to_string())),
        };
        if packet.track_id() != o.track {
            continue;
        }
        let audio = decoder
            .decode(&packet)
            .map_err(|e| corrupt(interleaved.len(), e.to_string()))?;
        if audio.spec().channels.count() != k {
            return Err(corrupt(
                interleaved.len(),
                "the channel count changes mid-stream".into(),
            ));
        }
        let need = audio.capacity() as u64;
        if buf.as_ref().is_none_or(|b| (b.capacity() as u64) < need) {
            buf = Some(SampleBuffer::new(need, *audio.spec()));
        }
        let b = buf.as_mut().expect("allocated above");
        b.copy_interleaved_ref(audio);
        interleaved.extend_from_slice(b.samples());
    }
    if interleaved.is_empty() {
        return Err(DecodeError::NoSamples {
            path: path.to_path_buf(),
        });
    }
    if let Some(bad) = interleaved.iter().position(|v| !v.is_finite()) {
        return Err(corrupt(bad, "non-finite sample".into()));
    }
    let frames = interleaved.len() / k;
    let channels = (0..k)
        .map(|c| (0..frames).map(|i| interleaved[i * k + c]).collect())
        .collect();
    Ok(Decoded {
        sample_rate: o.info.sample_rate,
        channels,
    })
}

/// Extensions a folder dataset picks up as audio (lower case).
pub const AUDIO_EXTENSIONS: [&str; 6] = ["wav", "wave", "flac", "mp3", "ogg", "oga"];

/// Whether `path` names an audio file by its extension (case-insensitive).
pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
