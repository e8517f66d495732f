//! The 92 General MIDI programs SynTheory keeps (atonal, "polyphonic" and highly articulate sounds
//! removed), with their GM names and families.

/// GM families, one per 8 programs.
pub const FAMILIES: [&str; 16] = [
    "Piano Timbres",
    "Chromatic Percussion",
    "Organ Timbres",
    "Guitar Timbres",
    "Bass Timbres",
    "String Timbres",
    "Ensemble Timbres",
    "Brass Timbres",
    "Reed Timbres",
    "Pipe Timbres",
    "Synth Lead",
    "Synth Pad",
    "Synth Effects",
    "Ethnic Timbres",
    "Percussive Timbres",
    "Sound Effects",
];

/// General MIDI 1 program names (program number = index).
pub const GM_NAMES: [&str; 128] = [
    "Acoustic Grand Piano",
    "Bright Acoustic Piano",
    "Electric Grand Piano",
    "Honky-tonk Piano",
    "Electric Piano 1",
    "Electric Piano 2",
    "Harpsichord",
    "Clavinet",
    "Celesta",
    "Glockenspiel",
    "Music Box",
    "Vibraphone",
    "Marimba",
    "Xylophone",
    "Tubular Bells",
    "Dulcimer",
    "Drawbar Organ",
    "Percussive Organ",
    "Rock Organ",
    "Church Organ",
    "Reed Organ",
    "Accordion",
    "Harmonica",
    "Tango Accordion",
    "Acoustic Guitar (nylon)",
    "Acoustic Guitar (steel)",
    "Electric Guitar (jazz)",
    "Electric Guitar (clean)",
    "Electric Guitar (muted)",
    "Overdriven Guitar",
    "Distortion Guitar",
    "Guitar Harmonics",
    "Acoustic Bass",
    "Electric Bass (finger)",
    "Electric Bass (pick)",
    "Fretless Bass",
    "Slap Bass 1",
    "Slap Bass 2",
    "Synth Bass 1",
    "Synth Bass 2",
    "Violin",
    "Viola",
    "Cello",
    "Contrabass",
    "Tremolo Strings",
    "Pizzicato Strings",
    "Orchestral Harp",
    "Timpani",
    "String Ensemble 1",
    "String Ensemble 2",
    "Synth Strings 1",
    "Synth Strings 2",
    "Choir Aahs",
    "Voice Oohs",
    "Synth Voice",
    "Orchestra Hit",
    "Trumpet",
    "Trombone",
    "Tuba",
    "Muted Trumpet",
    "French Horn",
    "Brass Section",
    "Synth Brass 1",
    "Synth Brass 2",
    "Soprano Sax",
    "Alto Sax",
    "Tenor Sax",
    "Baritone Sax",
    "Oboe",
    "English Horn",
    "Bassoon",
    "Clarinet",
    "Piccolo",
    "Flute",
    "Recorder",
    "Pan Flute",
    "Blown Bottle",
    "Shakuhachi",
    "Whistle",
    "Ocarina",
    "Lead 1 (square)",
    "Lead 2 (sawtooth)",
    "Lead 3 (calliope)",
    "Lead 4 (chiff)",
    "Lead 5 (charang)",
    "Lead 6 (voice)",
    "Lead 7 (fifths)",
    "Lead 8 (bass + lead)",
    "Pad 1 (new age)",
    "Pad 2 (warm)",
    "Pad 3 (polysynth)",
    "Pad 4 (choir)",
    "Pad 5 (bowed)",
    "Pad 6 (metallic)",
    "Pad 7 (halo)",
    "Pad 8 (sweep)",
    "FX 1 (rain)",
    "FX 2 (soundtrack)",
    "FX 3 (crystal)",
    "FX 4 (atmosphere)",
    "FX 5 (brightness)",
    "FX 6 (goblins)",
    "FX 7 (echoes)",
    "FX 8 (sci-fi)",
    "Sitar",
    "Banjo",
    "Shamisen",
    "Koto",
    "Kalimba",
    "Bagpipe",
    "Fiddle",
    "Shanai",
    "Tinkle Bell",
    "Agogo",
    "Steel Drums",
    "Woodblock",
    "Taiko Drum",
    "Melodic Tom",
    "Synth Drum",
    "Reverse Cymbal",
    "Guitar Fret Noise",
    "Breath Noise",
    "Seashore",
    "Bird Tweet",
    "Telephone Ring",
    "Helicopter",
    "Applause",
    "Gunshot",
];

const POLYPHONIC: [u8; 7] = [8, 9, 14, 21, 23, 47, 86];
const ARTICULATE: [u8; 5] = [22, 31, 55, 77, 78];

/// The tonal programs in GM order: 0–7, 10–13, 15–20, 24–30, 32–46, 48–54, 56–76, 79–85, 87–95,
/// 104–111 (92 programs). Families 12 (Synth Effects) and 15 (Sound Effects) are atonal; 14
/// (Percussive) is kept by SynTheory's csv category names only up to 111.
pub fn tonal_programs() -> Vec<u8> {
    (0u8..128)
        .filter(|p| {
            let fam = p / 8;
            // SynTheory's instruments.csv files 112–127 under "Sound Effects" (its 16-row
            // category), so they are dropped together with the Synth Effects 96–103.
            fam != 12 && *p < 112 && !POLYPHONIC.contains(p) && !ARTICULATE.contains(p)
        })
        .collect()
}

pub fn family(program: u8) -> &'static str {
    if program >= 112 {
        FAMILIES[15]
    } else {
        FAMILIES[program as usize / 8]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ninety_two_programs() {
        let p = super::tonal_programs();
        assert_eq!(p.len(), 92);
        let mut expect: Vec<u8> = Vec::new();
        for (a, b) in [
            (0, 7),
            (10, 13),
            (15, 20),
            (24, 30),
            (32, 46),
            (48, 54),
            (56, 76),
            (79, 85),
            (87, 95),
            (104, 111),
        ] {
            expect.extend(a..=b);
        }
        assert_eq!(p, expect);
    }
}
