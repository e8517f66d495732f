//! Rendering MIDI to 44.1 kHz stereo: rustysynth through a General MIDI SoundFont (exactly as
//! SynTheory's midi2audio), or the built-in synthesizer when no SoundFont is available.

use super::DataError;
use super::concepts::{SAMPLE_RATE, Source};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Debian's `timgm6mb-soundfont` (the SoundFont SynTheory ships).
pub const DEFAULT_SOUNDFONT: &str = "/usr/share/sounds/sf2/TimGM6mb.sf2";

/// Which renderer ran, recorded in every manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RendererInfo {
    Soundfont {
        path: String,
        blake3: String,
    },
    Builtin {
        version: u32,
    },
    /// A folder of the user's audio (`data::folder`): how many files, and their fingerprint.
    Folder {
        files: usize,
        fingerprint: String,
    },
}

#[derive(Clone)]
pub enum Renderer {
    SoundFont {
        font: Arc<rustysynth::SoundFont>,
        path: PathBuf,
        blake3: String,
    },
    Builtin,
}

impl Renderer {
    /// Loads a SoundFont; errors name the spec key `data.soundfont`.
    pub fn soundfont(path: &Path) -> Result<Renderer, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::SoundFont {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let font =
            rustysynth::SoundFont::new(&mut &bytes[..]).map_err(|e| DataError::SoundFont {
                path: path.to_path_buf(),
                reason: format!("not a valid SoundFont: {e:?}"),
            })?;
        Ok(Renderer::SoundFont {
            font: Arc::new(font),
            path: path.to_path_buf(),
            blake3: blake3::hash(&bytes).to_hex().to_string(),
        })
    }

    /// An explicit path must load; with none, the default SoundFont if installed, else built-in.
    pub fn resolve(path: Option<&Path>) -> Result<Renderer, DataError> {
        match path {
            Some(p) => Renderer::soundfont(p),
            None if Path::new(DEFAULT_SOUNDFONT).is_file() => {
                Renderer::soundfont(Path::new(DEFAULT_SOUNDFONT))
            }
            None => Ok(Renderer::Builtin),
        }
    }

    pub fn info(&self) -> RendererInfo {
        match self {
            Renderer::SoundFont { path, blake3, .. } => RendererInfo::Soundfont {
                path: path.display().to_string(),
                blake3: blake3.clone(),
            },
            Renderer::Builtin => RendererInfo::Builtin { version: 1 },
        }
    }

    /// Renders a source to (left, right) at 44.1 kHz, `source.samples` long.
    pub fn render(&self, source: &Source) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        match self {
            Renderer::Builtin => Ok(super::synth::render(
                &source.song,
                SAMPLE_RATE,
                source.samples,
            )),
            Renderer::SoundFont { font, .. } => {
                let settings = rustysynth::SynthesizerSettings::new(SAMPLE_RATE as i32);
                let synth = rustysynth::Synthesizer::new(font, &settings)
                    .map_err(|e| DataError::Render(format!("{e:?}")))?;
                let midi = rustysynth::MidiFile::new(&mut &source.song.to_smf()[..])
                    .map_err(|e| DataError::Render(format!("{e:?}")))?;
                let mut seq = rustysynth::MidiFileSequencer::new(synth);
                seq.play(&Arc::new(midi), false);
                let mut left = vec![0f32; source.samples];
                let mut right = vec![0f32; source.samples];
                seq.render(&mut left, &mut right);
                Ok((left, right))
            }
        }
    }
}
