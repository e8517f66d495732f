//! Folder datasets (docs/design.md §5): decoding each format against its WAV original, the
//! fixture folder built into the data store's layout, the keys of its dataset nodes, and every
//! bad-input case of the labels CSV and the files, each with its message.

mod common;

use std::path::{Path, PathBuf};

use rfmx::audio::decode::{decode, probe};
use rfmx::audio::resample::resample;
use rfmx::data::Concept;
use rfmx::data::folder::{FolderConfig, build, read_labels};
use rfmx::stages::contract::Output;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn at_32k(path: &Path) -> Vec<f32> {
    let d = decode(path).unwrap();
    assert_eq!((d.sample_rate, d.channels.len()), (44_100, 2), "{path:?}");
    resample(&d.mono(), d.sample_rate, 32_000).unwrap()
}

/// (best lag of `b` against `a` within ±`max_lag`, SNR in dB of `b` against `a` at that lag).
fn aligned_snr(a: &[f32], b: &[f32], max_lag: isize) -> (isize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for lag in -max_lag..=max_lag {
        let (mut sig, mut err) = (0f64, 0f64);
        for (i, &x) in a.iter().enumerate() {
            let j = i as isize + lag;
            let y = if j >= 0 && (j as usize) < b.len() {
                b[j as usize]
            } else {
                0.0
            };
            sig += (x as f64).powi(2);
            err += (x as f64 - y as f64).powi(2);
        }
        let snr = 10.0 * (sig / err.max(1e-30)).log10();
        if snr > best.1 {
            best = (lag, snr);
        }
    }
    best
}

#[test]
fn each_format_decodes_to_its_wav_original_after_resampling() {
    let dir = fixtures().join("audio_formats");
    let wav = at_32k(&dir.join("chord.wav"));
    assert_eq!(wav.len(), 32_000);
    // FLAC is lossless: the same 16-bit samples, so the same 32 kHz signal to float rounding.
    let flac = at_32k(&dir.join("chord.flac"));
    assert_eq!(flac.len(), wav.len());
    let max = wav
        .iter()
        .zip(&flac)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-6, "FLAC differs from the WAV by {max}");
    // MP3 (gapless: the LAME delay and padding are trimmed) and Vorbis are lossy: aligned at lag
    // 0 and at least 30 dB SNR against the original (measured 37.6 dB and 37.8 dB). MP3 keeps the
    // exact length; symphonia 0.5 does not trim Vorbis's last block to its granule position, so
    // the OGG may run up to one 2048-frame block (1486 samples at 32 kHz) long (measured 369).
    for (name, extra) in [("chord.mp3", 0), ("chord.ogg", 1486)] {
        let x = at_32k(&dir.join(name));
        assert!(
            x.len() >= wav.len() && x.len() <= wav.len() + extra,
            "{name}: {} samples vs {}",
            x.len(),
            wav.len()
        );
        let (lag, snr) = aligned_snr(&wav, &x, 64);
        assert_eq!(
            lag, 0,
            "{name} is shifted by {lag} samples (snr {snr:.1} dB)"
        );
        assert!(snr >= 30.0, "{name}: SNR {snr:.1} dB < 30");
    }
}

#[test]
fn any_rate_and_channel_count_is_mixed_to_mono() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("three.wav");
    let spec = hound::WavSpec {
        channels: 3,
        sample_rate: 22_050,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    for i in 0..2205 {
        for c in 0..3 {
            w.write_sample(0.1 * (c + 1) as f32 * ((i % 7) as f32 - 3.0) / 3.0)
                .unwrap();
        }
    }
    w.finalize().unwrap();
    assert_eq!(probe(&p).unwrap().channels, 3);
    let d = decode(&p).unwrap();
    assert_eq!(d.sample_rate, 22_050);
    let mono = d.mono();
    assert_eq!(mono.len(), 2205);
    assert!((mono[0] + 0.2).abs() < 1e-6, "mean of 0.1, 0.2, 0.3 × -1");
    assert_eq!(resample(&mono, 22_050, 32_000).unwrap().len(), 3200);
}

fn fixture_labels() -> rfmx::data::folder::FolderLabels {
    let music = fixtures().join("music");
    read_labels(
        &music,
        &music.join("labels.csv"),
        &[Concept::Keys, Concept::Notes, Concept::Tempos],
    )
    .unwrap()
}

#[test]
fn the_fixture_folder_builds_clips_of_the_declared_length() {
    let labels = fixture_labels();
    assert_eq!(labels.rows.len(), 8);
    assert_eq!(labels.classes_of(Concept::Keys).len(), 8);
    assert!(
        labels
            .classes_of(Concept::Keys)
            .contains(&"A# major".to_string())
    );
    let out = tempfile::tempdir().unwrap();
    let rows = labels.rows_of(Concept::Keys);
    let cfg = FolderConfig {
        concept: "keys".into(),
        clip_seconds: 4.0,
        hop_seconds: None,
        rows: rows.clone(),
        fingerprint: "test".into(),
    };
    let ds = build(&cfg, &labels.folder, &out.path().join("keys"), &|_, _| {}).unwrap();
    assert_eq!(ds.len(), 8);
    for (i, c) in ds.clips.iter().enumerate() {
        assert_eq!(c.len_32k, 128_000);
        assert_eq!(c.fields["file"], rows[i].0);
        assert_eq!(c.class, rows[i].1);
    }
    // The 3 s OGG is padded with zeros to 4 s; the others are cut.
    let ogg = ds
        .clips
        .iter()
        .position(|c| c.fields["file"] == "d_major_110.ogg")
        .unwrap();
    let a = ds.audio_32k(ogg).unwrap();
    assert!(a[100_000..].iter().all(|&v| v == 0.0));
    assert!(a[..90_000].iter().any(|&v| v.abs() > 0.01));
    let reopened = rfmx::data::Dataset::open(&out.path().join("keys")).unwrap();
    assert_eq!(reopened.clips, ds.clips);
    assert!(matches!(
        reopened.manifest.renderer,
        rfmx::data::RendererInfo::Folder { files: 8, .. }
    ));
    // Windows: 2 s every 1 s over the 5 s file give 4 clips, the 3 s file 2.
    let cfg = FolderConfig {
        clip_seconds: 2.0,
        hop_seconds: Some(1.0),
        ..cfg
    };
    let ds = build(&cfg, &labels.folder, &out.path().join("w"), &|_, _| {}).unwrap();
    let count = |f: &str| ds.clips.iter().filter(|c| c.fields["file"] == f).count();
    assert_eq!(count("a_minor_100.wav"), 4);
    assert_eq!(count("d_major_110.ogg"), 2);
}

#[test]
fn a_file_that_breaks_while_building_leaves_no_dataset() {
    let work = tempfile::tempdir().unwrap();
    let music = copy_fixture(work.path());
    let labels = read_labels(&music, &music.join("labels.csv"), &[Concept::Keys]).unwrap();
    std::fs::write(music.join("c_minor_120.wav"), b"RIFF garbage").unwrap();
    let cfg = FolderConfig {
        concept: "keys".into(),
        clip_seconds: 4.0,
        hop_seconds: None,
        rows: labels.rows_of(Concept::Keys),
        fingerprint: "x".into(),
    };
    let out = work.path().join("out");
    let e = build(&cfg, &music, &out, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("c_minor_120.wav"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A writable copy of fixtures/music.
fn copy_fixture(to: &Path) -> PathBuf {
    let from = fixtures().join("music");
    let dst = to.join("music");
    for e in walkdir::WalkDir::new(&from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&from).unwrap();
        if e.file_type().is_dir() {
            std::fs::create_dir_all(dst.join(rel)).unwrap();
        } else {
            std::fs::copy(e.path(), dst.join(rel)).unwrap();
        }
    }
    dst
}

fn problems_of(edit: impl FnOnce(&Path)) -> String {
    let work = tempfile::tempdir().unwrap();
    let music = copy_fixture(work.path());
    edit(&music);
    read_labels(&music, &music.join("labels.csv"), &[Concept::Keys])
        .unwrap_err()
        .to_string()
}

fn edit_csv(music: &Path, f: impl FnOnce(String) -> String) {
    let p = music.join("labels.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, f(text)).unwrap();
}

/// A 16-bit PCM WAV header declaring `rate` Hz, with a few samples.
fn wav_with_rate(rate: u32) -> Vec<u8> {
    let data = [0u8, 1, 0, 2, 0, 3, 0, 4];
    let mut b = Vec::new();
    b.extend(b"RIFF");
    b.extend((36 + data.len() as u32).to_le_bytes());
    b.extend(b"WAVEfmt ");
    b.extend(16u32.to_le_bytes());
    b.extend(1u16.to_le_bytes()); // PCM
    b.extend(1u16.to_le_bytes()); // mono
    b.extend(rate.to_le_bytes());
    b.extend((rate * 2).to_le_bytes());
    b.extend(2u16.to_le_bytes());
    b.extend(16u16.to_le_bytes());
    b.extend(b"data");
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(data);
    b
}

#[test]
fn every_bad_input_is_an_error_naming_the_file_and_row() {
    type Edit = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "unreadable",
            Box::new(|m| std::fs::write(m.join("c_major_120.wav"), b"not audio at all").unwrap()),
            vec![
                "labels.csv:2",
                "c_major_120.wav",
                "not a readable audio file",
            ],
        ),
        (
            "zero-length",
            Box::new(|m| std::fs::write(m.join("c_minor_120.wav"), b"").unwrap()),
            vec!["labels.csv:3", "c_minor_120.wav", "empty (0 bytes)"],
        ),
        (
            "sample rate 0",
            Box::new(|m| std::fs::write(m.join("f_minor_80.wav"), wav_with_rate(0)).unwrap()),
            vec!["f_minor_80.wav", "sample rate"],
        ),
        (
            "missing on disk",
            Box::new(|m| std::fs::remove_file(m.join("f_minor_80.wav")).unwrap()),
            vec!["labels.csv:8", "f_minor_80.wav", "does not exist"],
        ),
        (
            "not in the CSV",
            Box::new(|m| {
                std::fs::copy(m.join("c_major_120.wav"), m.join("sub/extra.wav"))
                    .map(|_| ())
                    .unwrap()
            }),
            vec!["sub/extra.wav", "is not listed in"],
        ),
        (
            "label outside the class list",
            Box::new(|m| {
                edit_csv(m, |t| {
                    t.replace("c_major_120.wav,C major", "c_major_120.wav,C majr")
                })
            }),
            vec![
                "labels.csv:2",
                "`C majr` is not a class of concept keys",
                "did you mean `C major`?",
            ],
        ),
        (
            "duplicate row",
            Box::new(|m| edit_csv(m, |t| format!("{t}c_major_120.wav,C major,C,120\n"))),
            vec!["labels.csv:10", "first on line 2", "duplicate row"],
        ),
        (
            "wrong header",
            Box::new(|m| edit_csv(m, |t| t.replacen("file,", "path,", 1))),
            vec!["labels.csv:1", "must start with `file`"],
        ),
        (
            "unknown column",
            Box::new(|m| edit_csv(m, |t| t.replacen("tempos", "tempo", 1))),
            vec![
                "labels.csv:1",
                "`tempo` is not a concept",
                "did you mean `tempos`?",
            ],
        ),
        (
            "missing concept column",
            Box::new(|m| {
                edit_csv(m, |t| {
                    t.lines()
                        .map(|l| {
                            l.split(',')
                                .filter(|_| true)
                                .enumerate()
                                .filter(|(i, _)| *i != 1)
                                .map(|(_, f)| f)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }),
            vec!["data.concepts names `keys`", "no `keys` column"],
        ),
        (
            "short row",
            Box::new(|m| {
                edit_csv(m, |t| {
                    t.replace("c_minor_120.wav,C minor,C,120", "c_minor_120.wav,C minor")
                })
            }),
            vec!["labels.csv:3", "2 field(s), the header has 4"],
        ),
        (
            "escaping path",
            Box::new(|m| edit_csv(m, |t| format!("{t}../secret.wav,C major,C,120\n"))),
            vec!["labels.csv:10", "without `..`"],
        ),
        (
            "empty CSV",
            Box::new(|m| std::fs::write(m.join("labels.csv"), "\n").unwrap()),
            vec!["labels.csv: empty; expected a header"],
        ),
        (
            "no CSV",
            Box::new(|m| std::fs::remove_file(m.join("labels.csv")).unwrap()),
            vec!["labels.csv", "No such file"],
        ),
        (
            "tempo not a number",
            Box::new(|m| edit_csv(m, |t| t.replace("C major,C,120", "C major,C,fast"))),
            vec!["labels.csv:2", "tempo `fast` is not a number"],
        ),
    ];
    for (what, edit, wants) in cases {
        // Tempo errors show only when tempos is a requested column's concept; check all three.
        let msg = if what == "tempo not a number" {
            let work = tempfile::tempdir().unwrap();
            let music = copy_fixture(work.path());
            edit(&music);
            read_labels(&music, &music.join("labels.csv"), &[Concept::Tempos])
                .unwrap_err()
                .to_string()
        } else {
            problems_of(edit)
        };
        for w in wants {
            assert!(msg.contains(w), "{what}: `{w}` not in:\n{msg}");
        }
    }
}

fn folder_spec(music: &Path, concepts: &str) -> String {
    format!(
        "[experiment]\nname = \"folder\"\n[model]\nname = \"tiny\"\ndevice = \"cpu\"\n\
         [data]\nconcepts = [{concepts}]\nsource = {{ kind = \"folder\", path = \"{}\" }}\n\
         [extract]\nlayers = [0, 1]\n[probe]\niterations = 2\ntrials = 2\n\
         [steer]\nenabled = false\ntargets = [\"keys:C major\"]\n",
        music.display()
    )
}

fn plan_of(spec: &str) -> rfmx::dag::Plan {
    let spec = rfmx::spec::load_str("folder.toml", "folder", spec, &[], &[]).unwrap();
    rfmx::dag::build_plan(
        &spec,
        &rfmx::registry::default_registry(),
        &rfmx::dag::NoResults,
    )
    .unwrap()
}

#[test]
fn dataset_keys_follow_the_files_and_their_own_concepts_labels() {
    let work = tempfile::tempdir().unwrap();
    let music = copy_fixture(work.path());
    let spec = folder_spec(&music, "\"keys\", \"notes\"");
    let key = |p: &rfmx::dag::Plan, id: &str| p.nodes[p.find(id).unwrap()].key.clone();
    let p0 = plan_of(&spec);
    // The folder's location is not in the key: the same files elsewhere plan the same node.
    let moved = copy_fixture(&work.path().join("elsewhere"));
    let p_moved = plan_of(&folder_spec(&moved, "\"keys\", \"notes\""));
    assert_eq!(key(&p0, "dataset[keys]"), key(&p_moved, "dataset[keys]"));
    // Relabelling one notes cell changes the notes dataset only.
    edit_csv(&music, |t| t.replace("C major,C,120", "C major,G,120"));
    let p1 = plan_of(&spec);
    assert_eq!(key(&p0, "dataset[keys]"), key(&p1, "dataset[keys]"));
    assert_ne!(key(&p0, "dataset[notes]"), key(&p1, "dataset[notes]"));
    // A file changed after planning fails its nodes' external check with the reason.
    let ds = &p1.nodes[p1.find("dataset[keys]").unwrap()];
    ds.externals[0].check().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(music.join("c_minor_120.wav"), music.join("c_major_120.wav")).unwrap();
    let e = ds.externals[0].check().unwrap_err();
    assert!(
        e.contains("audio folder") && e.contains("changed since"),
        "{e}"
    );
    let p2 = plan_of(&spec);
    assert_ne!(key(&p1, "dataset[keys]"), key(&p2, "dataset[keys]"));
}

#[test]
fn check_validates_the_csv_against_the_folder_with_exit_2() {
    let w = common::Work::new();
    let music = copy_fixture(w.path());
    // A relative folder path is relative to the spec file, not to the working directory.
    std::fs::create_dir(w.path().join("specs")).unwrap();
    let spec = w.spec(
        "specs/folder.toml",
        &folder_spec(Path::new("../music"), "\"keys\""),
    );
    let ok = w.rfmx(&["check", spec.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    edit_csv(&music, |t| t.replace("A# major", "A# majr"));
    let bad = w.rfmx(&["check", spec.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("labels.csv:9") && err.contains("did you mean `A# major`?"),
        "{err}"
    );
    // A bad source key is a spec error with the key's location.
    let spec = w.spec(
        "bad.toml",
        &folder_spec(&music, "\"keys\"").replace("kind = \"folder\"", "kind = \"foldr\""),
    );
    let bad = w.rfmx(&["check", spec.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("folder"), "{err}");
}

/// Runs `body` as `<name>.toml` and returns its stdout; fails the test when the run fails.
fn run_spec(w: &common::Work, name: &str, body: &str) -> String {
    let spec = w.spec(&format!("{name}.toml"), body);
    let out = w.rfmx(&["run", spec.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `metrics.json` of a finished evaluation node, with its `probe_accuracy` checked to be a
/// fraction (the judge scored the generations).
fn scored_metrics(
    w: &common::Work,
    eval: &rfmx::dag::PlannedNode,
) -> rfmx::stages::evaluation::Metrics {
    let dir = w.home().join("store").join(&eval.key).join("out");
    let m = rfmx::stages::evaluation::Metrics::read(&dir).unwrap();
    let acc = m.metrics["probe_accuracy"].finite().map(|(v, _)| v);
    assert!(
        acc.is_some_and(|a| (0.0..=1.0).contains(&a)),
        "{:?}",
        m.metrics["probe_accuracy"]
    );
    m
}

/// A spec `name` probing SynTheory `keys` on the tiny model (2 programs, 4 clips a class, layers 0
/// and 1), `rest` appended inside its `[probe]` section.
fn syntheory_keys_spec(name: &str, rest: &str) -> String {
    format!(
        "[experiment]\nname = \"{name}\"\n[model]\nname = \"tiny\"\ndevice = \"cpu\"\n\
         [data]\nconcepts = [\"keys\"]\ninstruments = [0, 24]\nper_class = 4\n\
         [extract]\nlayers = [0, 1]\n[probe]\niterations = 2\ntrials = 2\n{rest}"
    )
}

#[test]
fn transfer_scores_probes_fitted_on_syntheory_on_the_folder() {
    let w = common::Work::new();
    let music = copy_fixture(w.path());
    let body = syntheory_keys_spec(
        "xfer",
        &format!(
            "evaluate_on = [{{ kind = \"folder\", path = \"{}\" }}]\n\
             [steer]\nenabled = false\ntargets = [\"keys:C major\"]\n",
            music.display()
        ),
    );
    let stdout = run_spec(&w, "xfer", &body);
    assert!(stdout.contains("keys : SynTheory -> folder"), "{stdout}");
    let plan = plan_of(&body);
    let node = &plan.nodes[plan.find("transfer[keys,mean,rfm,evaluate_on[0]]").unwrap()];
    let dir = w.home().join("store").join(&node.key).join("out");
    let t = rfmx::stages::transfer::TransferScores::read(&dir).unwrap();
    assert_eq!((t.concept.as_str(), t.n, t.unseen), ("keys", 8, 0));
    assert_eq!(t.test_classes.len(), 8);
    assert_eq!(t.layers.iter().map(|l| l.layer).collect::<Vec<_>>(), [0, 1]);
    for l in &t.layers {
        let (a, lo, hi) = (l.accuracy.unwrap(), l.ci_low.unwrap(), l.ci_high.unwrap());
        assert!((0.0..=1.0).contains(&a) && lo <= a && a <= hi, "{l:?}");
        assert_eq!(l.n, 8);
        // accuracy is a count of hits over 8 clips
        assert!(((a * 8.0) - (a * 8.0).round()).abs() < 1e-9, "{a}");
    }
    let html = std::fs::read_to_string(w.path().join("reports/xfer/probes.html")).unwrap();
    assert!(
        html.contains("Transfer: probes fitted on one dataset"),
        "no transfer block"
    );
}

#[test]
fn steering_on_a_folder_uses_directions_and_judges_fitted_on_it() {
    let work = tempfile::tempdir().unwrap();
    let music = copy_fixture(work.path());
    let spec = folder_spec(&music, "\"keys\"")
        .replace(
            "enabled = false\n",
            "eta = [0.3]\nsamples = 1\nseconds = 1\n",
        )
        .replace(
            "[steer]\n",
            "[evaluate]\nmetrics = [\"probe_accuracy\"]\n[steer]\n",
        );
    let plan = plan_of(&spec);
    let dirs: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| n.kind == "directions")
        .map(|n| n.label.class.clone().unwrap())
        .collect();
    // One directions node per class the CSV names, none for the 16 keys it lacks.
    assert_eq!(dirs.len(), 8, "{dirs:?}");
    assert!(dirs.contains(&"C major".to_string()));
    let eval = plan.nodes.iter().find(|n| n.kind == "evaluation").unwrap();
    let inputs: Vec<&str> = plan
        .inputs_of(plan.find(&eval.id).unwrap())
        .iter()
        .map(|&i| plan.nodes[i].id.as_str())
        .collect();
    // The judge is the probe fitted on the folder's own clips.
    assert!(
        inputs.iter().any(|i| i.starts_with("probe[keys,")),
        "{inputs:?}"
    );
    let probe = plan.find("probe[keys,L0,rfm]").unwrap();
    let act = plan.inputs_of(probe)[0];
    let ds = plan.inputs_of(act)[0];
    assert!(plan.nodes[ds].params.get("folder").is_some());
}

#[test]
fn specs_without_folders_resolve_as_before() {
    // The resolved spec is part of the report's key: the new keys appear only when used.
    let plain = "[model]\nname = \"tiny\"\n[data]\nconcepts = [\"notes\"]\n";
    let r = rfmx::spec::load_str("p.toml", "p", plain, &[], &[])
        .unwrap()
        .resolved_toml();
    // (`source` as a key: `[executor.slurm.resources]` contains the word.)
    assert!(
        !r.contains("evaluate_on")
            && !r.contains("[data.source]")
            && !r.lines().any(|l| l.starts_with("source")),
        "{r}"
    );
    let with = format!("{plain}[probe]\nevaluate_on = [{{ kind = \"folder\", path = \"m\" }}]\n");
    let r = rfmx::spec::load_str("p.toml", "p", &with, &[], &[])
        .unwrap()
        .resolved_toml();
    assert!(r.contains("evaluate_on"), "{r}");
}

/// The fixture's `mood` concept as a spec declares it (`[data.define.mood]`).
fn mood(classes: &[&str]) -> Concept {
    Concept::User(rfmx::data::concepts::intern(&rfmx::data::UserConcept {
        name: "mood".into(),
        classes: classes.iter().map(|c| c.to_string()).collect(),
    }))
}

#[test]
fn a_user_concepts_labels_are_checked_against_its_own_classes() {
    let work = tempfile::tempdir().unwrap();
    let music = copy_fixture(work.path());
    let csv = music.join("labels_mood.csv");
    let calm_tense = mood(&["calm", "tense"]);
    let labels = read_labels(&music, &csv, &[calm_tense]).unwrap();
    assert_eq!(labels.columns, [calm_tense]);
    assert_eq!(labels.classes_of(calm_tense), ["calm", "tense"]);
    assert_eq!(labels.rows_of(calm_tense).len(), 8);
    // The declared order, not the CSV's: `tense` first when the spec lists it first.
    let tense_calm = mood(&["tense", "calm", "bright"]);
    let l = read_labels(&music, &csv, &[tense_calm]).unwrap();
    assert_eq!(l.classes_of(tense_calm), ["tense", "calm"]);

    let text = std::fs::read_to_string(&csv).unwrap();
    let problems = |text: &str, concepts: &[Concept]| {
        std::fs::write(&csv, text).unwrap();
        read_labels(&music, &csv, concepts).unwrap_err().to_string()
    };
    // A label outside the declared classes, with the nearest one.
    let e = problems(
        &text.replace("f_minor_80.wav,calm", "f_minor_80.wav,clam"),
        &[calm_tense],
    );
    assert!(
        e.contains("labels_mood.csv:8")
            && e.contains("not a class of concept mood (calm, tense)")
            && e.contains("did you mean `calm`?"),
        "{e}"
    );
    // A column the spec does not declare: the hint says how to declare it.
    let e = problems(&text, &[Concept::Keys]);
    assert!(
        e.contains("header column `mood` is not a concept")
            && e.contains("[data.define.mood] classes = [...]"),
        "{e}"
    );
    // Fewer than two labelled classes: nothing to separate.
    let e = problems(&text.replace(",tense", ",calm"), &[calm_tense]);
    assert!(
        e.contains("concept `mood` has 1 labelled class(es); a probe needs at least two"),
        "{e}"
    );
}

/// A spec that declares `mood`, fits its probes on `labels_mood.csv` and steers `mood:calm`.
fn mood_spec(music: &Path, classes: &str) -> String {
    format!(
        "[experiment]\nname = \"mood\"\n[model]\nname = \"tiny\"\ndevice = \"cpu\"\n\
         [data]\nconcepts = [\"mood\"]\n\
         source = {{ kind = \"folder\", path = \"{0}\", labels = \"labels_mood.csv\", clip_seconds = 1.0 }}\n\
         [data.define.mood]\nclasses = [{classes}]\n\
         [extract]\nlayers = [0, 1]\n[probe]\niterations = 2\ntrials = 2\n\
         evaluate_on = [{{ kind = \"folder\", path = \"{0}\", labels = \"labels_mood.csv\", hop_seconds = 1.0 }}]\n\
         [steer]\ntargets = [\"mood:calm\"]\neta = [0.3]\nsamples = 1\nseconds = 0.5\n\
         prompts = [\"a song\"]\n\
         [evaluate]\nmetrics = [\"probe_accuracy\"]\n",
        music.display()
    )
}

#[test]
fn a_user_concept_is_probed_and_steered_end_to_end() {
    let w = common::Work::new();
    let music = copy_fixture(w.path());
    let body = mood_spec(&music, "\"calm\", \"tense\"");
    let plan = plan_of(&body);
    let key = |p: &rfmx::dag::Plan, id: &str| p.nodes[p.find(id).unwrap()].key.clone();
    for id in ["directions[mood:calm]", "directions[mood:tense]"] {
        assert!(plan.find(id).is_some(), "{id} not planned");
    }
    // The definition is in the keys of what depends on it: a third class re-plans them all.
    let wider = plan_of(&mood_spec(&music, "\"calm\", \"tense\", \"bright\""));
    for id in [
        "dataset[mood]",
        "activations[mood,mean]",
        "probe[mood,L0,rfm]",
        "directions[mood:calm]",
    ] {
        assert_ne!(key(&plan, id), key(&wider, id), "{id}");
        let params = &plan.nodes[plan.find(id).unwrap()].params;
        assert_eq!(
            params["concept_defs"],
            serde_json::json!([{ "name": "mood", "classes": ["calm", "tense"] }]),
            "{id}"
        );
    }

    let stdout = run_spec(&w, "mood", &body);
    // Transfer scores the mood probes on the windowed folder like any concept's.
    let transfer = stdout.lines().find(|l| l.contains("mood : folder"));
    assert!(
        transfer.is_some_and(|l| l.contains(" -> folder ") && l.contains("(9 clips")),
        "{stdout}"
    );
    let eval = plan
        .nodes
        .iter()
        .find(|n| n.kind == "evaluation" && n.label.eta == Some(0.3))
        .unwrap();
    // The judge (the mood probe fitted on the folder) scored the steered generation.
    let m = scored_metrics(&w, eval);
    assert_eq!(m.point.target, "mood:calm");
    let dir = w.home().join("store").join(&eval.key).join("out");
    // The report node read every output, the mood dataset's manifest included, and so does
    // `rfmx report` re-rendering it from the store.
    let index = || std::fs::read_to_string(w.path().join("reports/mood/index.html")).unwrap();
    assert!(!index().contains("unreadable output"), "{}", index());
    let spec = w.path().join("mood.toml");
    let out = w.rfmx(&["report", spec.to_str().unwrap()]);
    assert!(
        out.status.success() && !index().contains("unreadable output"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        index()
    );
    let probes = std::fs::read_to_string(w.path().join("reports/mood/probes.html")).unwrap();
    assert!(
        probes.contains("mood"),
        "the probe report lacks the concept"
    );
    // A process that never loaded the spec (a Slurm job's `rfmx node run`) resolves `mood` from
    // the nodes' own params.
    for id in [
        "activations[mood,mean]",
        "directions[mood:calm]",
        eval.id.as_str(),
    ] {
        let key = key(&plan, id);
        std::fs::remove_dir_all(w.home().join("store").join(&key)).unwrap();
        let out = w.rfmx(&["node", "run", &key]);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(rfmx::stages::evaluation::Metrics::read(&dir).unwrap(), m);
    // A label outside the declared classes stops `check` with exit 2 and the nearest class.
    let csv = music.join("labels_mood.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace("e_minor_90.mp3,calm", "e_minor_90.mp3,clam"),
    )
    .unwrap();
    let bad = w.rfmx(&["check", spec.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("labels_mood.csv:6") && err.contains("did you mean `calm`?"),
        "{err}"
    );
}

#[test]
fn the_steering_judge_can_be_fitted_on_a_folder() {
    let w = common::Work::new();
    let music = copy_fixture(w.path());
    // Directions from SynTheory keys; the evaluation's judge from the user's folder (one file a
    // key: 1 s windows every 0.5 s give each class the clips a probe split needs).
    let body = syntheory_keys_spec(
        "judge",
        &format!(
            "[steer]\ntargets = [\"keys:C major\"]\neta = [0.3]\nsamples = 1\nseconds = 0.5\n\
             prompts = [\"a song\"]\n\
             [evaluate]\nmetrics = [\"probe_accuracy\"]\n\
             judge_on = {{ kind = \"folder\", path = \"{}\", clip_seconds = 1.0, hop_seconds = 0.5 }}\n",
            music.display()
        ),
    );
    let plan = plan_of(&body);
    let node = |id: &str| plan.find(id).unwrap_or_else(|| panic!("{id} not planned"));
    let eval = plan
        .nodes
        .iter()
        .position(|n| n.kind == "evaluation" && n.label.eta == Some(0.3))
        .unwrap();
    let judges: Vec<usize> = plan
        .inputs_of(eval)
        .into_iter()
        .filter(|&i| plan.nodes[i].kind == "probe")
        .collect();
    assert_eq!(judges.len(), 2);
    for &j in &judges {
        assert!(
            plan.nodes[j].id.ends_with(",judge_on]"),
            "{}",
            plan.nodes[j].id
        );
        let ds = plan.inputs_of(plan.inputs_of(j)[0])[0];
        assert!(
            plan.nodes[ds].params.get("folder").is_some(),
            "{}",
            plan.nodes[ds].id
        );
    }
    // The directions are still fitted on SynTheory.
    let dirs = node("directions[keys:C major]");
    let ds = plan.inputs_of(plan.inputs_of(plan.inputs_of(dirs)[0])[0])[0];
    assert!(plan.nodes[ds].params.get("folder").is_none());
    // Without judge_on the judge is the SynTheory probe, as before.
    let plain = plan_of(&body.replace("judge_on", "# judge_on"));
    assert!(plain.find("probe[keys,L0,rfm,judge_on]").is_none());

    run_spec(&w, "judge", &body);
    scored_metrics(&w, &plan.nodes[eval]);
    // The folder judge's classes are the CSV's 8 keys, not SynTheory's 24.
    let judge = rfmx::stages::probe::ProbeScores::read(
        &w.home()
            .join("store")
            .join(&plan.nodes[judges[0]].key)
            .join("out"),
    )
    .unwrap();
    assert_eq!(judge.multiclass.classes.len(), 8);
}
