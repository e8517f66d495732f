//! Enumeration of SynTheory's seven concepts and rfmx's `keys`: every clip's MIDI, class and label fields, in the
//! original's row order. Nothing is rendered here.

use super::instruments::{GM_NAMES, family, tonal_programs};
use super::midi::{CLICKS, Song, Timed};
use super::theory::{self, Inversion, NOTE_NAMES};
use rand::{Rng, SeedableRng};

pub const SAMPLE_RATE: u32 = 44_100;
pub const CLIP_SECS: f64 = 4.0;
const MELODIC_CHANNEL: u8 = 2;

/// The seven SynTheory concepts plus `keys` (24 classes, 12 tonics × major/minor, the concept of
/// MusicBench's key labels; not in SynTheory), also the spec's `data.concepts` / target names, and
/// the concepts a spec declares for its own folder datasets (`[data.define.<name>]`).
///
/// A user concept is `User(&'static UserConcept)`: its definition interned once per distinct
/// (name, classes) for the life of the process, so that `Concept` stays `Copy` and every stage
/// that matches on a concept, prints it or asks its classes treats it like a built-in one
/// (docs/design.md §5, user concepts). It serialises as its name; a name is resolved against the
/// definitions in scope ([`with_scope`]: the spec being loaded, the node being run), so the same
/// name declared with another class list by another spec never leaks into this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Concept {
    Notes,
    Intervals,
    Scales,
    Chords,
    Progressions,
    Tempos,
    TimeSignatures,
    Keys,
    User(&'static UserConcept),
}

/// A concept the user defines in the spec: a name and its classes in a stable order.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct UserConcept {
    pub name: String,
    pub classes: Vec<String>,
}

/// Every distinct user definition seen by this process, interned (leaked once each: a handful per
/// process, never freed, so `Concept` can hold a `&'static`).
static INTERNED: std::sync::Mutex<Vec<&'static UserConcept>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    /// The user concepts in scope on this thread (innermost [`with_scope`] last).
    static SCOPE: std::cell::RefCell<Vec<&'static UserConcept>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The interned copy of `def` (the same reference for equal definitions).
pub fn intern(def: &UserConcept) -> &'static UserConcept {
    let mut all = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = all.iter().find(|d| **d == def) {
        return d;
    }
    let d: &'static UserConcept = Box::leak(Box::new(def.clone()));
    all.push(d);
    d
}

/// Runs `f` with `defs` (interned) in scope on this thread: [`Concept::parse`] and deserialising
/// a concept name find them first.
pub fn with_scope<R>(defs: &[UserConcept], f: impl FnOnce() -> R) -> R {
    let interned: Vec<&'static UserConcept> = defs.iter().map(intern).collect();
    let n = interned.len();
    SCOPE.with(|s| s.borrow_mut().extend(interned));
    struct Pop(usize);
    impl Drop for Pop {
        fn drop(&mut self) {
            SCOPE.with(|s| {
                let mut s = s.borrow_mut();
                let keep = s.len() - self.0;
                s.truncate(keep);
            });
        }
    }
    let _pop = Pop(n);
    f()
}

/// The user concepts a node's params declare (`concept_defs`, planned for user concepts only, so
/// that `rfmx node run` in another process resolves their names; docs/contracts.md).
pub fn defs_in_params(params: &serde_json::Value) -> Vec<UserConcept> {
    params
        .get(DEFS_PARAM)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The params key holding a node's user concept definitions.
pub const DEFS_PARAM: &str = "concept_defs";

/// `concept_defs` for a node's params: the user definitions among `concepts` (None when all are
/// built-in, so that the keys of specs without user concepts stay what they were).
pub fn defs_param(concepts: impl IntoIterator<Item = Concept>) -> Option<serde_json::Value> {
    let mut defs: Vec<&UserConcept> = Vec::new();
    for c in concepts {
        if let Concept::User(d) = c
            && !defs.contains(&d)
        {
            defs.push(d);
        }
    }
    (!defs.is_empty()).then(|| serde_json::to_value(defs).expect("definitions serialise"))
}

impl Concept {
    /// The built-in concepts.
    pub const ALL: [Concept; 8] = [
        Concept::Notes,
        Concept::Intervals,
        Concept::Scales,
        Concept::Chords,
        Concept::Progressions,
        Concept::Tempos,
        Concept::TimeSignatures,
        Concept::Keys,
    ];

    /// Names in [`Concept::ALL`]'s order.
    pub const NAMES: [&'static str; 8] = [
        "notes",
        "intervals",
        "scales",
        "chords",
        "progressions",
        "tempos",
        "time_signatures",
        "keys",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Concept::User(d) => &d.name,
            c => Self::NAMES[Self::ALL.iter().position(|b| *b == c).expect("built-in")],
        }
    }

    /// A built-in concept by name (also SynTheory's `chord_progressions`).
    pub fn builtin(s: &str) -> Option<Concept> {
        let s = if s == "chord_progressions" {
            "progressions"
        } else {
            s
        };
        Concept::ALL.into_iter().find(|c| c.name() == s)
    }

    /// A built-in concept, else the user concept of that name in scope ([`with_scope`]).
    pub fn parse(s: &str) -> Option<Concept> {
        Concept::builtin(s).or_else(|| {
            SCOPE.with(|scope| {
                scope
                    .borrow()
                    .iter()
                    .rev()
                    .find(|d| d.name == s)
                    .map(|d| Concept::User(d))
            })
        })
    }

    /// The names [`Concept::parse`] accepts here: the built-ins, then the user concepts in scope.
    pub fn names_in_scope() -> Vec<&'static str> {
        let mut names = Concept::NAMES.to_vec();
        SCOPE.with(|scope| {
            for d in scope.borrow().iter() {
                if !names.contains(&d.name.as_str()) {
                    names.push(&d.name);
                }
            }
        });
        names
    }

    /// True for a concept the spec defines (no generator renders it: folder datasets only).
    pub fn is_user(self) -> bool {
        matches!(self, Concept::User(_))
    }

    /// Class names in a stable order (tempos: every BPM is a class; a user concept: its list).
    pub fn classes(self) -> Vec<String> {
        match self {
            Concept::Notes => NOTE_NAMES.iter().map(|s| s.to_string()).collect(),
            Concept::Intervals => (1..=12).map(|i| i.to_string()).collect(),
            Concept::Scales => theory::SCALE_MODES.iter().map(|s| s.to_string()).collect(),
            Concept::Chords => theory::CHORD_TYPES.iter().map(|s| s.to_string()).collect(),
            Concept::Progressions => theory::PROGRESSIONS
                .iter()
                .map(|(m, d)| theory::progression_label(m, d))
                .collect(),
            Concept::Tempos => (50..=210).map(|b: u32| b.to_string()).collect(),
            Concept::TimeSignatures => TIME_SIGNATURES
                .iter()
                .map(|(n, d)| format!("{n}/{d}"))
                .collect(),
            Concept::Keys => (0..12)
                .flat_map(|pc| theory::KEY_MODES.map(|m| theory::key_label(pc, m)))
                .collect(),
            Concept::User(d) => d.classes.clone(),
        }
    }
}

impl serde::Serialize for Concept {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Concept {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Concept::parse(&s).ok_or_else(|| {
            let names = Concept::names_in_scope();
            // serde wants a 'static list; the built-ins are one, a list with user names is
            // leaked once per error (a spec error ends the command).
            let expected: &'static [&'static str] = if names.len() == Concept::NAMES.len() {
                &Concept::NAMES
            } else {
                Box::leak(names.into_boxed_slice())
            };
            <D::Error as serde::de::Error>::unknown_variant(&s, expected)
        })
    }
}

impl std::fmt::Display for Concept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub const TIME_SIGNATURES: [(u8, u8); 8] = [
    (2, 2),
    (2, 4),
    (3, 4),
    (3, 8),
    (4, 4),
    (6, 8),
    (9, 8),
    (12, 8),
];

/// Something rustysynth (or the built-in synth) plays once; clips are this audio or crops of it.
#[derive(Clone, Debug)]
pub struct Source {
    pub song: Song,
    /// Rendered length in samples at 44.1 kHz: the MIDI length, or the trim target for clicks.
    pub samples: usize,
}

/// One labelled clip.
#[derive(Clone, Debug)]
pub struct Clip {
    pub concept: Concept,
    pub class: String,
    pub program: u8,
    pub instrument: String,
    /// The concept's own label fields (SynTheory's csv column names).
    pub fields: Vec<(&'static str, String)>,
    pub source: usize,
    /// Start sample of a 4 s crop of the source, or None for the whole source.
    pub crop_start: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Enumeration {
    pub sources: Vec<Source>,
    pub clips: Vec<Clip>,
}

impl Enumeration {
    /// Number of samples clip `i` has at 44.1 kHz.
    pub fn clip_samples(&self, i: usize) -> usize {
        let c = &self.clips[i];
        match c.crop_start {
            Some(_) => (CLIP_SECS * SAMPLE_RATE as f64) as usize,
            None => self.sources[c.source].samples,
        }
    }
}

fn melodic_source(program: u8, groups: &[Timed]) -> Source {
    let mut song = Song::new(120, (4, 4), program, MELODIC_CHANNEL);
    song.write_groups(groups, MELODIC_CHANNEL);
    let samples = (SAMPLE_RATE as f64 * song.length_secs()) as usize;
    Source { song, samples }
}

fn repeat(notes: &[i32], plays: u32, beats: u32) -> Vec<Timed> {
    (0..plays)
        .map(|i| (i * beats, (i + 1) * beats, notes.to_vec()))
        .collect()
}

/// Builds every clip of `concept` in SynTheory's order. `seed` only places the random crops of
/// tempos and time signatures (the original used Python's unseeded `random`).
pub fn enumerate(concept: Concept, seed: u64) -> Enumeration {
    let mut e = Enumeration::default();
    let programs = tonal_programs();
    let add = |e: &mut Enumeration,
               class: String,
               program: u8,
               fields: Vec<(&'static str, String)>,
               groups: Vec<Timed>| {
        e.sources.push(melodic_source(program, &groups));
        e.clips.push(Clip {
            concept,
            class,
            program,
            instrument: GM_NAMES[program as usize].to_string(),
            fields: [fields, vec![("midi_category", family(program).to_string())]].concat(),
            source: e.sources.len() - 1,
            crop_start: None,
        });
    };
    match concept {
        Concept::Notes => {
            for note in 0..108i32 {
                let name = NOTE_NAMES[(note % 12) as usize];
                let register = [3, 6, 9].iter().filter(|&&r| r <= note / 12).count();
                for &p in &programs {
                    let fields = vec![
                        ("root_note_name", name.to_string()),
                        ("root_note_pitch_class", (note % 12).to_string()),
                        ("octave", (note / 12).to_string()),
                        ("register", register.to_string()),
                        ("midi_note_val", note.to_string()),
                    ];
                    add(&mut e, name.to_string(), p, fields, repeat(&[note], 4, 2));
                }
            }
        }
        Concept::Intervals => {
            for base in 60..72i32 {
                let name = NOTE_NAMES[(base % 12) as usize];
                for size in 1..=12i32 {
                    for style in ["UP", "DOWN", "UNISON"] {
                        let (lo, hi) = (base, base + size);
                        let groups: Vec<Timed> = match style {
                            "UP" => (0..4)
                                .flat_map(|i| {
                                    [
                                        (2 * i, 2 * i + 1, vec![lo]),
                                        (2 * i + 1, 2 * i + 2, vec![hi]),
                                    ]
                                })
                                .collect(),
                            "DOWN" => (0..4)
                                .flat_map(|i| {
                                    [
                                        (2 * i, 2 * i + 1, vec![hi]),
                                        (2 * i + 1, 2 * i + 2, vec![lo]),
                                    ]
                                })
                                .collect(),
                            _ => repeat(&[lo, hi], 8, 1),
                        };
                        for &p in &programs {
                            let fields = vec![
                                ("root_note_name", name.to_string()),
                                ("root_note_pitch_class", (base % 12).to_string()),
                                ("interval", size.to_string()),
                                ("play_style_name", style.to_string()),
                                ("midi_note_val", base.to_string()),
                            ];
                            add(&mut e, size.to_string(), p, fields, groups.clone());
                        }
                    }
                }
            }
        }
        Concept::Scales => {
            for (pc, name) in NOTE_NAMES.iter().enumerate() {
                for mode in theory::SCALE_MODES {
                    let tonic = theory::tonic_midi(pc as i32);
                    let mut notes: Vec<i32> = theory::mode_offsets(mode)
                        .unwrap()
                        .iter()
                        .map(|o| tonic + o)
                        .collect();
                    notes.push(tonic + 12);
                    for style in ["UP", "DOWN"] {
                        let mut ns = notes.clone();
                        if style == "DOWN" {
                            ns.reverse();
                        }
                        let groups: Vec<Timed> = ns
                            .iter()
                            .enumerate()
                            .map(|(i, &n)| (i as u32, i as u32 + 1, vec![n]))
                            .collect();
                        for &p in &programs {
                            let fields = vec![
                                ("root_note_name", name.to_string()),
                                ("mode", mode.to_string()),
                                ("play_style_name", style.to_string()),
                            ];
                            add(&mut e, mode.to_string(), p, fields, groups.clone());
                        }
                    }
                }
            }
        }
        Concept::Chords => {
            for (pc, name) in NOTE_NAMES.iter().enumerate() {
                for kind in theory::CHORD_TYPES {
                    for inv in Inversion::ALL {
                        let (pcs, midi) = theory::chord(pc as i32, kind, inv).unwrap();
                        for &p in &programs {
                            let fields = vec![
                                ("root_note_name", name.to_string()),
                                ("chord_type", kind.to_string()),
                                ("inversion", inv.label().to_string()),
                                ("root_note_pitch_class", pc.to_string()),
                                ("pitch_classes", join(&pcs)),
                                ("midi_notes", join(&midi)),
                            ];
                            add(&mut e, kind.to_string(), p, fields, repeat(&midi, 4, 2));
                        }
                    }
                }
            }
        }
        Concept::Progressions => {
            for (pc, name) in NOTE_NAMES.iter().enumerate() {
                for (mode, degrees) in theory::PROGRESSIONS {
                    let s = theory::scale(pc as i32, mode);
                    let chords: Vec<Vec<i32>> = degrees
                        .iter()
                        .map(|&d| theory::triad(&s, mode, d, Inversion::Root).1)
                        .collect();
                    let groups: Vec<Timed> = chords
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (2 * i as u32, 2 * i as u32 + 2, c.clone()))
                        .collect();
                    let label = theory::progression_label(mode, &degrees);
                    for &p in &programs {
                        let fields = vec![
                            ("key_note_name", name.to_string()),
                            ("key_note_pitch_class", pc.to_string()),
                            ("chord_progression", label.clone()),
                            (
                                "midi_notes",
                                chords.iter().map(|c| join(c)).collect::<Vec<_>>().join("|"),
                            ),
                        ];
                        add(&mut e, label.clone(), p, fields, groups.clone());
                    }
                }
            }
        }
        Concept::Keys => {
            // Per key two 4 s clips that establish it: a cadence (2 beats a chord) and the
            // scale (a beat a note), on every tonal program.
            for (pc, name) in NOTE_NAMES.iter().enumerate() {
                for mode in theory::KEY_MODES {
                    let label = theory::key_label(pc, mode);
                    let cadence: Vec<Timed> = theory::key_cadence(pc as i32, mode)
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| (2 * i as u32, 2 * i as u32 + 2, c))
                        .collect();
                    let scale: Vec<Timed> = theory::key_scale(pc as i32, mode)
                        .into_iter()
                        .enumerate()
                        .map(|(i, n)| (i as u32, i as u32 + 1, vec![n]))
                        .collect();
                    for (style, groups) in [("CADENCE", cadence), ("SCALE", scale)] {
                        for &p in &programs {
                            let fields = vec![
                                ("key_note_name", name.to_string()),
                                ("key_note_pitch_class", pc.to_string()),
                                ("mode", mode.to_string()),
                                ("play_style_name", style.to_string()),
                            ];
                            add(&mut e, label.clone(), p, fields, groups.clone());
                        }
                    }
                }
            }
        }
        Concept::Tempos => {
            for bpm in 50..=210u32 {
                for click in CLICKS {
                    let mut song = Song::new(bpm, (4, 4), click.program, click.channel);
                    song.write_click(&click, bpm / 3, 0);
                    let extra = vec![("bpm", bpm.to_string())];
                    push_crops(
                        &mut e,
                        concept,
                        seed,
                        song,
                        20.0,
                        5,
                        bpm.to_string(),
                        &click,
                        extra,
                    );
                }
            }
        }
        // No generator: a user concept's clips come from a folder (validation rejects it with a
        // generated source, and `render_selected` before enumerating).
        Concept::User(_) => {}
        Concept::TimeSignatures => {
            for (num, den) in TIME_SIGNATURES {
                for reverb in 0..3u8 {
                    for click in CLICKS {
                        let mut song = Song::new(120, (num, den), click.program, click.channel);
                        let total = ((den as f64 / 4.0) * 60.0) as u32;
                        song.write_click(&click, total, reverb);
                        let compound = num % 3 == 0 && den != 4;
                        let extra = vec![
                            ("time_signature_beats", num.to_string()),
                            ("time_signature_subdivision", den.to_string()),
                            ("is_compound", (compound as u8).to_string()),
                            ("reverb_level", reverb.to_string()),
                            ("bpm", "120".to_string()),
                        ];
                        push_crops(
                            &mut e,
                            concept,
                            seed,
                            song,
                            30.0,
                            10,
                            format!("{num}/{den}"),
                            &click,
                            extra,
                        );
                    }
                }
            }
        }
    }
    e
}

#[allow(clippy::too_many_arguments)]
fn push_crops(
    e: &mut Enumeration,
    concept: Concept,
    seed: u64,
    song: Song,
    trim_secs: f64,
    crops: usize,
    class: String,
    click: &super::midi::ClickConfig,
    extra: Vec<(&'static str, String)>,
) {
    let samples = (SAMPLE_RATE as f64 * trim_secs) as usize;
    let src = e.sources.len();
    // Crops are seeded per source so that any subsample sees the same offsets.
    let key = blake3::hash(format!("{seed}/{concept}/{src}").as_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(*key.as_bytes());
    e.sources.push(Source { song, samples });
    for i in 0..crops {
        let offset: f64 = rng.random_range(0.0..(trim_secs - CLIP_SECS));
        let start = (offset * SAMPLE_RATE as f64).round() as usize;
        let mut fields = extra.clone();
        fields.push(("click_config_name", click.name.to_string()));
        fields.push(("offset_index", i.to_string()));
        fields.push((
            "offset_time",
            format!("{:.6}", start as f64 / SAMPLE_RATE as f64),
        ));
        e.clips.push(Clip {
            concept,
            class: class.clone(),
            program: click.program,
            instrument: click.name.to_string(),
            fields,
            source: src,
            crop_start: Some(start),
        });
    }
}

fn join(v: &[i32]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(classes: &[&str]) -> UserConcept {
        UserConcept {
            name: "texture".into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_user_concept_resolves_only_in_its_scope_and_serialises_as_its_name() {
        let (a, b) = (def(&["dry", "wet"]), def(&["dry", "wet", "lush"]));
        assert!(std::ptr::eq(intern(&a), intern(&a.clone())));
        assert!(Concept::parse("texture").is_none());
        let c = with_scope(std::slice::from_ref(&a), || {
            // The innermost scope wins: another spec's class list for the same name.
            let inner = with_scope(std::slice::from_ref(&b), || Concept::parse("texture"));
            assert_eq!(inner.unwrap().classes().len(), 3);
            serde_json::from_str::<Concept>("\"texture\"").unwrap()
        });
        assert_eq!(c, Concept::User(intern(&a)));
        assert_eq!(
            (c.name(), c.classes()),
            ("texture", vec!["dry".into(), "wet".into()])
        );
        assert!(c.is_user() && !Concept::Keys.is_user());
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"texture\"");
        assert_eq!(
            serde_json::to_string(&Concept::TimeSignatures).unwrap(),
            "\"time_signatures\""
        );
        // Out of scope the name is unknown again: never another spec's leftover definition.
        assert!(serde_json::from_str::<Concept>("\"texture\"").is_err());
        assert!(enumerate(c, 0).clips.is_empty());
        let params = serde_json::json!({ DEFS_PARAM: defs_param([c, Concept::Notes, c]) });
        assert_eq!(defs_in_params(&params), vec![a]);
        assert!(defs_param([Concept::Notes]).is_none());
    }
}
