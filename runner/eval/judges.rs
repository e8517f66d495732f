//! Model-independent DSP judges of generated audio (docs/design.md §6), built on `crate::audio`.
//!
//! - pitch hit: the strongest chroma pitch class is the target note's pitch class.
//! - chord hit: the three strongest chroma pitch classes form a triad of the target quality
//!   (major {0,4,7}, minor {0,3,7}, aug {0,4,8}, dim {0,3,6}) on any root.
//! - tempo error: |onset tempo − target BPM| in BPM (None when fewer than 3 onsets are found).

use crate::audio::{chroma, onset};

const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// Pitch class of a note name (`C` .. `B`, sharps).
pub fn pitch_class(note: &str) -> Option<usize> {
    NOTE_NAMES.iter().position(|n| *n == note)
}

/// Intervals above the root of a triad quality (the data's class names `major`, `minor`, `aug`,
/// `dim`, and the short forms `maj`, `min`, `augmented`, `diminished`).
pub fn triad(quality: &str) -> Option<[usize; 3]> {
    Some(match quality {
        "major" | "maj" => [0, 4, 7],
        "minor" | "min" => [0, 3, 7],
        "aug" | "augmented" => [0, 4, 8],
        "dim" | "diminished" => [0, 3, 6],
        _ => return None,
    })
}

/// The strongest pitch class, or None for silence.
pub fn dominant_pitch_class(x: &[f32], sr: u32) -> Option<usize> {
    let c = chroma::chroma(x, sr);
    if c.iter().all(|&v| v <= 0.0) {
        return None;
    }
    Some(chroma::top_pitch_classes(&c, 1)[0])
}

/// Whether the strongest pitch class is `pc`.
pub fn pitch_hit(x: &[f32], sr: u32, pc: usize) -> bool {
    dominant_pitch_class(x, sr) == Some(pc)
}

/// Whether a set of three pitch classes is a triad of `quality` on some root.
pub fn is_triad(pcs: &[usize], quality: [usize; 3]) -> bool {
    let mut got: Vec<usize> = pcs.iter().map(|p| p % 12).collect();
    got.sort();
    (0..12).any(|root| {
        let mut want: Vec<usize> = quality.iter().map(|i| (root + i) % 12).collect();
        want.sort();
        want == got
    })
}

/// Whether the three strongest chroma pitch classes form a triad of `quality`.
pub fn chord_hit(x: &[f32], sr: u32, quality: [usize; 3]) -> bool {
    let c = chroma::chroma(x, sr);
    if c.iter().all(|&v| v <= 0.0) {
        return false;
    }
    is_triad(&chroma::top_pitch_classes(&c, 3), quality)
}

/// |estimated tempo − target| in BPM, None when no tempo can be estimated.
pub fn tempo_error(x: &[f32], sr: u32, target_bpm: f64) -> Option<f64> {
    onset::tempo_bpm(&onset::onset_times(x, sr)).map(|t| (t - target_bpm).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freqs: &[f32], sr: u32, secs: f32) -> Vec<f32> {
        (0..(sr as f32 * secs) as usize)
            .map(|i| {
                let t = i as f32 / sr as f32;
                freqs
                    .iter()
                    .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum::<f32>()
                    * 0.2
            })
            .collect()
    }

    fn hz(midi: f32) -> f32 {
        440.0 * 2f32.powf((midi - 69.0) / 12.0)
    }

    #[test]
    fn judges_recognise_synthetic_notes_chords_and_clicks() {
        let sr = 32_000;
        let e4 = tone(&[hz(64.0)], sr, 1.0);
        assert!(pitch_hit(&e4, sr, pitch_class("E").unwrap()));
        assert!(!pitch_hit(&e4, sr, pitch_class("F").unwrap()));
        let d_min = tone(&[hz(62.0), hz(65.0), hz(69.0)], sr, 1.0);
        assert!(chord_hit(&d_min, sr, triad("min").unwrap()));
        assert!(!chord_hit(&d_min, sr, triad("major").unwrap()));
        assert_eq!(triad("minor"), triad("min"));
        assert!(is_triad(&[11, 2, 5], triad("dim").unwrap()));
        assert!(!pitch_hit(&vec![0.0; 20_000], sr, 0));
        // Clicks at 100 BPM.
        let mut clicks = vec![0f32; sr as usize * 6];
        for b in 0..10 {
            let s = (b as f64 * 0.6 * sr as f64) as usize;
            for i in 0..200 {
                clicks[s + i] = (1.0 - i as f32 / 200.0) * if i % 2 == 0 { 0.8 } else { -0.8 };
            }
        }
        let err = tempo_error(&clicks, sr, 100.0).unwrap();
        assert!(err < 1.0, "{err}");
        assert!(tempo_error(&vec![0.0; 32_000], sr, 120.0).is_none());
    }
}
