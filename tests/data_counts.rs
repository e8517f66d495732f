//! Full-set enumeration (no rendering): totals and per-class counts match SynTheory.

use rfmx::data::{Concept, enumerate};
use std::collections::BTreeMap;

fn counts(c: Concept) -> (usize, BTreeMap<String, usize>) {
    let e = enumerate(c, 0);
    let mut m = BTreeMap::new();
    for clip in &e.clips {
        *m.entry(clip.class.clone()).or_insert(0) += 1;
    }
    (e.clips.len(), m)
}

#[test]
fn totals_and_classes_match_syntheory() {
    let table = [
        (Concept::Notes, 9_936, 12),
        (Concept::Intervals, 39_744, 12),
        (Concept::Scales, 15_456, 7),
        (Concept::Chords, 13_248, 4),
        (Concept::Progressions, 20_976, 19),
        (Concept::Tempos, 4_025, 161),
        (Concept::TimeSignatures, 1_200, 8),
        // not SynTheory's: 24 keys x (cadence, scale) x 92 programs
        (Concept::Keys, 4_416, 24),
    ];
    for (c, total, n_classes) in table {
        let (n, per) = counts(c);
        assert_eq!(n, total, "{c}");
        assert_eq!(per.len(), n_classes, "{c}");
        let mut names: Vec<String> = c.classes();
        names.sort();
        assert_eq!(per.keys().cloned().collect::<Vec<_>>(), names, "{c}");
        for (class, k) in &per {
            assert_eq!(*k, total / n_classes, "{c} class {class}");
        }
    }
}

#[test]
fn every_melodic_clip_is_four_seconds_at_120_bpm_and_crops_fit() {
    for c in Concept::ALL {
        let e = enumerate(c, 7);
        for (i, clip) in e.clips.iter().enumerate() {
            assert_eq!(e.clip_samples(i), 176_400, "{c} {i}");
            let src = &e.sources[clip.source];
            if let Some(s) = clip.crop_start {
                assert!(s + 176_400 <= src.samples, "{c} crop {i}");
                // the rendered MIDI covers the trim target, as the original's trim required
                assert!(
                    src.song.length_secs() * 44_100.0 >= src.samples as f64,
                    "{c} {i}"
                );
            } else {
                assert_eq!(src.song.length_secs(), 4.0);
            }
        }
    }
}

#[test]
fn construction_quirks() {
    let e = enumerate(Concept::Chords, 0);
    let f = |i: usize, k: &str| {
        e.clips[i]
            .fields
            .iter()
            .find(|(n, _)| *n == k)
            .unwrap()
            .1
            .clone()
    };
    // rows: root C, kind major, inversion 5, 92 instruments; then 6, 64; then minor...
    assert_eq!(f(0, "midi_notes"), "60 64 67");
    assert_eq!(f(92, "midi_notes"), "64 67 72");
    assert_eq!(f(2 * 92, "midi_notes"), "67 72 76");
    // augmented on C: III of A harmonic minor, A placed at 48+9 -> C at 60
    assert_eq!(f(2 * 3 * 92, "midi_notes"), "60 64 68");
    assert_eq!(f(2 * 3 * 92, "pitch_classes"), "0 4 8");
    // F# major: tonic placement 48+6
    let fs = 6 * 4 * 3 * 92;
    assert_eq!(e.clips[fs].class, "major");
    assert_eq!(f(fs, "midi_notes"), "54 58 61");

    let p = enumerate(Concept::Progressions, 0);
    let g = |i: usize| {
        p.clips[i]
            .fields
            .iter()
            .find(|(n, _)| *n == "midi_notes")
            .unwrap()
            .1
            .clone()
    };
    // C ionian I-IV-V-I: IV = F A C with C not wrapped (60), V = G B D with D at 62.
    assert_eq!(g(0), "60 64 67|65 69 60|67 71 62|60 64 67");
    assert_eq!(p.clips[0].class, "ionian-(1, 4, 5, 1)");

    let n = enumerate(Concept::Notes, 0);
    assert_eq!(n.clips[0].program, 0);
    assert_eq!(n.clips[91].program, 111);
    let reg = |i: usize| {
        n.clips[i * 92]
            .fields
            .iter()
            .find(|(k, _)| *k == "register")
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(
        (reg(35), reg(36), reg(107)),
        ("0".into(), "1".into(), "2".into())
    );

    let s = enumerate(Concept::Scales, 0);
    let smidi = |i: usize| {
        let ev = &s.sources[s.clips[i].source].song.events;
        ev.iter()
            .filter_map(|e| match e.msg {
                rfmx::data::midi::Msg::NoteOn { key, vel } if vel > 0 => Some(key),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(smidi(0), vec![60, 62, 64, 65, 67, 69, 71, 72]);
    assert_eq!(smidi(92), vec![72, 71, 69, 67, 65, 64, 62, 60]);
}

#[test]
fn crops_are_seeded() {
    let a = enumerate(Concept::Tempos, 1);
    let b = enumerate(Concept::Tempos, 1);
    let c = enumerate(Concept::Tempos, 2);
    let starts =
        |e: &rfmx::data::Enumeration| e.clips.iter().map(|c| c.crop_start).collect::<Vec<_>>();
    assert_eq!(starts(&a), starts(&b));
    assert_ne!(starts(&a), starts(&c));
}
