//! Music theory exactly as SynTheory's `dataset/music` computes it, quirks included.

pub const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// Scale modes by SynTheory name, as semitone offsets from the tonic.
pub fn mode_offsets(mode: &str) -> Option<[i32; 7]> {
    Some(match mode {
        "ionian" | "major" => [0, 2, 4, 5, 7, 9, 11],
        "dorian" => [0, 2, 3, 5, 7, 9, 10],
        "phrygian" => [0, 1, 3, 5, 7, 8, 10],
        "lydian" => [0, 2, 4, 6, 7, 9, 11],
        "mixolydian" => [0, 2, 4, 5, 7, 9, 10],
        "aeolian" | "minor" => [0, 2, 3, 5, 7, 8, 10],
        "locrian" => [0, 1, 3, 5, 6, 8, 10],
        "harmonicMinor" => [0, 2, 3, 5, 7, 8, 11],
        _ => return None,
    })
}

pub const SCALE_MODES: [&str; 7] = [
    "ionian",
    "dorian",
    "phrygian",
    "lydian",
    "mixolydian",
    "aeolian",
    "locrian",
];

/// Pitch classes of the scale on `root_pc`.
pub fn scale(root_pc: i32, mode: &str) -> [i32; 7] {
    let off = mode_offsets(mode).expect("known mode");
    off.map(|o| (root_pc + o).rem_euclid(12))
}

/// Middle C is equidistant from all key centres: C..F sit at 60+pc, F#..B at 48+pc.
pub fn tonic_midi(tonic_pc: i32) -> i32 {
    if (0..=5).contains(&tonic_pc) {
        60 + tonic_pc
    } else {
        60 - (12 - tonic_pc)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inversion {
    Root,
    First,
    Second,
}

impl Inversion {
    pub const ALL: [Inversion; 3] = [Inversion::Root, Inversion::First, Inversion::Second];
    /// SynTheory's label ("5", "6", "64").
    pub fn label(self) -> &'static str {
        match self {
            Inversion::Root => "5",
            Inversion::First => "6",
            Inversion::Second => "64",
        }
    }
}

/// A triad on scale degree `degree` (1-based) of `mode` over `scale`, as `get_chord(chord_type=5)`:
/// each tone is `tonic_midi + offsets[deg % 7]`, so tones past the 7th degree are NOT moved up an
/// octave (the progression quirk). Returns (pitch classes, MIDI notes).
pub fn triad(
    scale: &[i32; 7],
    mode: &str,
    degree: usize,
    inversion: Inversion,
) -> (Vec<i32>, Vec<i32>) {
    let off = mode_offsets(mode).expect("known mode");
    let tonic = tonic_midi(scale[0]);
    let mut pcs = Vec::with_capacity(3);
    let mut midi = Vec::with_capacity(3);
    for k in 0..3 {
        let d = (degree - 1 + 2 * k) % 7;
        pcs.push(scale[d]);
        midi.push(tonic + off[d]);
    }
    match inversion {
        Inversion::Root => {}
        Inversion::First => {
            pcs.rotate_left(1);
            midi = vec![midi[1], midi[2], midi[0] + 12];
        }
        Inversion::Second => {
            pcs.rotate_left(2);
            midi = vec![midi[2], midi[0] + 12, midi[1] + 12];
        }
    }
    (pcs, midi)
}

pub const CHORD_TYPES: [&str; 4] = ["major", "minor", "aug", "dim"];

/// The four triad qualities as SynTheory builds them: major on I of ionian, minor on I of aeolian,
/// diminished on I of locrian, augmented on III of the harmonic minor a minor third below the root.
pub fn chord(root_pc: i32, kind: &str, inversion: Inversion) -> Option<(Vec<i32>, Vec<i32>)> {
    let (tonic, mode, degree) = match kind {
        "major" => (root_pc, "ionian", 1),
        "minor" => (root_pc, "aeolian", 1),
        "dim" => (root_pc, "locrian", 1),
        "aug" => ((root_pc - 3).rem_euclid(12), "harmonicMinor", 3),
        _ => return None,
    };
    Some(triad(&scale(tonic, mode), mode, degree, inversion))
}

/// The 19 progression templates (mode, scale degrees) in SynTheory's order.
pub const PROGRESSIONS: [(&str, [usize; 4]); 19] = [
    ("ionian", [1, 4, 5, 1]),
    ("ionian", [1, 4, 6, 5]),
    ("ionian", [1, 5, 6, 4]),
    ("ionian", [1, 6, 4, 5]),
    ("ionian", [2, 5, 1, 6]),
    ("ionian", [4, 1, 5, 6]),
    ("ionian", [4, 5, 3, 6]),
    ("ionian", [5, 4, 1, 5]),
    ("ionian", [5, 6, 4, 1]),
    ("ionian", [6, 4, 1, 5]),
    ("aeolian", [1, 2, 5, 1]),
    ("aeolian", [1, 3, 4, 1]),
    ("aeolian", [1, 4, 5, 1]),
    ("aeolian", [1, 6, 3, 7]),
    ("aeolian", [1, 6, 7, 1]),
    ("aeolian", [1, 6, 7, 3]),
    ("aeolian", [1, 7, 6, 4]),
    ("aeolian", [4, 7, 1, 1]),
    ("aeolian", [7, 6, 7, 1]),
];

/// SynTheory's progression label, e.g. `ionian-(1, 4, 5, 1)`.
pub fn progression_label(mode: &str, degrees: &[usize; 4]) -> String {
    format!(
        "{mode}-({}, {}, {}, {})",
        degrees[0], degrees[1], degrees[2], degrees[3]
    )
}

/// The `keys` concept's modes: major, and minor (harmonic minor, so that V has a leading tone).
pub const KEY_MODES: [&str; 2] = ["major", "minor"];

/// A key's class name, `C major` … `B minor` (MusicBench's spelling).
pub fn key_label(tonic_pc: usize, mode: &str) -> String {
    format!("{} {mode}", NOTE_NAMES[tonic_pc % 12])
}

/// A cadence that establishes the key: I–IV–V–I (major) or i–iv–V–i (minor, V major with the
/// leading tone), close triads above the tonic with the chord root an octave below as bass.
/// MIDI notes per chord.
pub fn key_cadence(tonic_pc: i32, mode: &str) -> Vec<Vec<i32>> {
    let t = tonic_midi(tonic_pc);
    let third = if mode == "minor" { 3 } else { 4 };
    let sixth = if mode == "minor" { 8 } else { 9 };
    vec![
        vec![t - 12, t, t + third, t + 7],
        vec![t - 7, t + 5, t + sixth, t + 12],
        vec![t - 5, t + 7, t + 11, t + 14],
        vec![t - 12, t, t + third, t + 7],
    ]
}

/// The key's scale up one octave from the tonic (minor: harmonic minor), eight MIDI notes.
pub fn key_scale(tonic_pc: i32, mode: &str) -> Vec<i32> {
    let t = tonic_midi(tonic_pc);
    let off = mode_offsets(if mode == "minor" {
        "harmonicMinor"
    } else {
        "major"
    })
    .expect("known mode");
    off.iter().map(|o| t + o).chain([t + 12]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_placement_and_quirks() {
        assert_eq!(tonic_midi(0), 60);
        assert_eq!(tonic_midi(5), 65);
        assert_eq!(tonic_midi(6), 54);
        assert_eq!(tonic_midi(11), 59);
        // C augmented = III of A harmonic minor: A at 57, C 60, E 64, G# 68.
        assert_eq!(
            chord(0, "aug", Inversion::Root).unwrap(),
            (vec![0, 4, 8], vec![60, 64, 68])
        );
        // G major in C: degree 5 tones G B D, with D NOT wrapped above (62 < 67).
        let s = scale(0, "ionian");
        assert_eq!(triad(&s, "ionian", 5, Inversion::Root).1, vec![67, 71, 62]);
        assert_eq!(
            chord(0, "major", Inversion::Second).unwrap().1,
            vec![67, 72, 76]
        );
    }
}
