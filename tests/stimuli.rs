//! Listening-test stimulus sets (docs/design.md §7): build from synthesised tones, loudness and blinding
//! checks on the written files, balanced orders, analysis of synthetic results, bad input, the
//! `generations` source on a hand-made store, the CLI, and the stats against scipy fixtures.

mod common;

use rfmx::stimuli::analyze::{self, Analysis};
use rfmx::stimuli::build::{self, Built};
use rfmx::stimuli::spec::ListeningSpec;
use rfmx::stimuli::stats;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CONDS: [&str; 3] = ["cond_alpha", "cond_bravo", "cond_charlie"];
const TARGETS: [&str; 2] = ["notes:C", "notes:G"];

fn write_wav_f32(path: &Path, x: &[f32], ch: u16, sr: u32) {
    rfmx::audio::wav::write_f32(path, x, ch, sr).unwrap();
}

fn write_wav_i16(path: &Path, x: &[f32], sr: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sr,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for v in x {
        w.write_sample((v * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

fn tone(hz: f32, amp: f32, secs: f32, sr: u32) -> Vec<f32> {
    (0..(secs * sr as f32) as usize)
        .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / sr as f32).sin())
        .collect()
}

/// Writes very different sources (levels from -45 to -6 dBFS, mono/stereo, 16-bit/float, 44.1 and
/// 32 kHz, a peaky click train that needs the limiter, a short clip) and a spec using them.
fn fixture(dir: &Path, subjects: usize) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut files: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for (ci, _) in CONDS.iter().enumerate() {
        for (ti, _) in TARGETS.iter().enumerate() {
            for r in 0..2 {
                let name = format!("src_{ci}_{ti}_{r}.wav");
                let p = src.join(&name);
                let hz = 261.6 * (1.0 + ti as f32 * 0.5) * (1.0 + r as f32 * 0.01);
                let amp = [0.005, 0.2, 0.5][ci];
                match (ci, r) {
                    (0, 0) => write_wav_i16(&p, &tone(hz, amp, 2.0, 44_100), 44_100),
                    (1, 0) => {
                        let l = tone(hz, amp, 2.0, 32_000);
                        let st: Vec<f32> = l.iter().flat_map(|v| [*v, 0.5 * v]).collect();
                        write_wav_f32(&p, &st, 2, 32_000);
                    }
                    (2, 1) => {
                        // clicks: crest factor far above the 22 dB headroom at -23 LUFS / -1 dBTP
                        let mut x = vec![0.0f32; 64_000];
                        for k in (0..x.len()).step_by(8_000) {
                            x[k] = 0.9;
                            x[k + 1] = -0.7;
                        }
                        let bg = tone(hz, 0.002, 2.0, 32_000);
                        x.iter_mut().zip(bg).for_each(|(a, b)| *a += b);
                        write_wav_f32(&p, &x, 1, 32_000);
                    }
                    (0, 1) => write_wav_f32(&p, &tone(hz, amp, 1.2, 32_000), 1, 32_000),
                    _ => write_wav_f32(&p, &tone(hz, amp, 2.0, 32_000), 1, 32_000),
                }
                files.entry((ci, ti)).or_default().push(name);
            }
        }
    }
    let mut s = format!(
        "[test]\nname = \"lt\"\nseed = 11\nsubjects = {subjects}\nclips_per_cell = 2\n\
         clip_seconds = 1.5\noffset_seconds = 0.1\nsample_rate = 32000\ntarget_lufs = -23.0\n\
         true_peak_dbtp = -1.0\nfade_ms = 20.0\n\n"
    );
    for t in TARGETS {
        s += &format!(
            "[[targets]]\nid = \"{t}\"\nlabel = \"the note {}\"\n\n",
            &t[6..]
        );
    }
    s += "[[questions]]\nid = \"match\"\ntext = \"How well does this clip match: {label}?\"\n\n";
    for (ci, c) in CONDS.iter().enumerate() {
        s += &format!(
            "[[conditions]]\nid = \"{c}\"\ndescription = \"secret {c}\"\nsource = \"files\"\n"
        );
        let entries: Vec<String> = TARGETS
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                let list: Vec<String> = files[&(ci, ti)]
                    .iter()
                    .map(|f| format!("\"src/{f}\""))
                    .collect();
                format!("\"{t}\" = [{}]", list.join(", "))
            })
            .collect();
        s += &format!("files = {{ {} }}\n\n", entries.join(", "));
    }
    let p = dir.join("lt.toml");
    std::fs::write(&p, s).unwrap();
    p
}

fn build_fixture(dir: &Path, subjects: usize) -> Built {
    let spec = ListeningSpec::load(&fixture(dir, subjects)).unwrap();
    build::build(&spec, &dir.join("reports")).unwrap()
}

fn measure_file(p: &Path) -> (f64, f64) {
    let (x, ch, sr) = rfmx::audio::wav::read(p).unwrap();
    assert_eq!(ch, 1);
    let mut m = ebur128::EbuR128::new(1, sr, ebur128::Mode::I | ebur128::Mode::TRUE_PEAK).unwrap();
    m.add_frames_f32(&x).unwrap();
    (
        m.loudness_global().unwrap(),
        20.0 * m.true_peak(0).unwrap().log10(),
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// Every stimulus file of a set differs from every other (by content hash).
fn assert_distinct_audio(b: &Built) {
    let wavs = files_under(&b.dir.join("stimuli").join("audio"));
    assert_eq!(
        common::distinct_contents(&wavs),
        wavs.len(),
        "repeated audio among {wavs:?}"
    );
    assert_eq!(wavs.len(), b.key.clips.len());
}

#[test]
fn every_written_clip_is_at_target_loudness_under_the_true_peak_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    assert_distinct_audio(&b);
    let audio = b.dir.join("stimuli").join("audio");
    let wavs = files_under(&audio);
    assert_eq!(wavs.len(), 12);
    let mut limited = 0;
    let (mut worst_lu, mut worst_tp) = (0f64, f64::MIN);
    for w in &wavs {
        let (l, tp) = measure_file(w);
        worst_lu = worst_lu.max((l + 23.0).abs());
        worst_tp = worst_tp.max(tp);
        assert!((l + 23.0).abs() <= 0.5, "{}: {l} LUFS", w.display());
        assert!(tp <= -1.0 + 1e-6, "{}: {tp} dBTP", w.display());
        let x = rfmx::audio::wav::read(w).unwrap().0;
        assert!(x[0].abs() < 1e-3 && x[x.len() - 1].abs() < 1e-3, "no fade");
    }
    eprintln!("worst |L - target| = {worst_lu:.4} LU, highest true peak {worst_tp:.3} dBTP");
    for c in &b.key.clips {
        limited += c.limited as usize;
    }
    assert!(limited >= 2, "the click trains must go through the limiter");
    // The source of -45 dBFS and the short one were both brought up to the target.
    assert!(b.key.clips.iter().any(|c| c.gain_db > 15.0));
    assert!(
        b.warnings.iter().any(|w| w.contains("zero-padded")),
        "{:?}",
        b.warnings
    );
}

#[test]
fn nothing_in_the_stimuli_folder_reveals_the_condition() {
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    let stim = b.dir.join("stimuli");
    let files = files_under(&stim);
    let mut sizes = BTreeSet::new();
    let mut headers = BTreeSet::new();
    let mut wav_names = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&stim)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for secret in CONDS
            .iter()
            .map(|s| s.to_string())
            .chain(["secret".into(), "src_".into()])
        {
            assert!(
                !rel.to_lowercase().contains(&secret),
                "name {rel} reveals {secret}"
            );
            assert!(!text.contains(&secret), "{rel} contains {secret}");
        }
        if let Some(name) = rel.strip_prefix("audio/") {
            let stem = name.strip_suffix(".wav").expect("only wav files in audio/");
            assert!(
                stem.len() == 6
                    && stem
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{name}"
            );
            sizes.insert(bytes.len());
            headers.insert(bytes[..44].to_vec());
            wav_names.push((
                std::fs::metadata(f).unwrap().modified().unwrap(),
                stem.to_string(),
            ));
        } else {
            assert!(
                ["index.html", "app.js", "style.css", "trials.js"].contains(&rel.as_str()),
                "unexpected {rel}"
            );
        }
    }
    assert_eq!(sizes.len(), 1, "byte lengths differ: {sizes:?}");
    assert_eq!(headers.len(), 1, "headers (metadata) differ");
    // Files were written in id order: modification times never go backwards along the ids.
    wav_names.sort_by(|a, b| a.1.cmp(&b.1));
    assert!(wav_names.windows(2).all(|w| w[0].0 <= w[1].0));
    // The key lives outside, maps every id, and the ids do not follow conditions when sorted.
    assert!(!b.key_path.starts_with(&stim));
    let key = analyze::load_key(&b.key_path).unwrap();
    assert_eq!(key.clips.len(), 12);
    let mut by_id = key.clips.clone();
    by_id.sort_by(|a, b| a.item.id.cmp(&b.item.id));
    let seq: Vec<&str> = by_id.iter().map(|c| c.item.condition.as_str()).collect();
    let runs = seq.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(runs > 2, "sorted ids group conditions: {seq:?}");
}

#[test]
fn orders_are_permutations_balanced_over_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    let key = &b.key;
    let cond: BTreeMap<&str, &str> = key
        .clips
        .iter()
        .map(|c| (c.item.id.as_str(), c.item.condition.as_str()))
        .collect();
    let all: BTreeSet<&str> = cond.keys().copied().collect();
    // position (block b, slot p) -> condition counts over subjects
    let mut counts: BTreeMap<(usize, usize), BTreeMap<&str, usize>> = BTreeMap::new();
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut distinct_orders = BTreeSet::new();
    for (s, order) in &key.orders {
        assert_eq!(
            order.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            all,
            "{s}"
        );
        assert_eq!(order.len(), all.len());
        distinct_orders.insert(order.clone());
        for (i, id) in order.iter().enumerate() {
            *counts
                .entry((i / 3, i % 3))
                .or_default()
                .entry(cond[id.as_str()])
                .or_default() += 1;
        }
        for blk in order.chunks(3) {
            let ids: BTreeSet<(&str, usize)> = blk
                .iter()
                .map(|id| {
                    let c = key.clips.iter().find(|c| &c.item.id == id).unwrap();
                    (c.item.target.as_str(), c.item.replicate)
                })
                .collect();
            assert_eq!(ids.len(), 1, "a block mixes targets/replicates");
            for w in blk.windows(2) {
                *pairs
                    .entry((cond[w[0].as_str()], cond[w[1].as_str()]))
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(distinct_orders.len(), 6);
    for ((b, p), c) in &counts {
        assert_eq!(c.len(), 3, "block {b} slot {p}: {c:?}");
        assert!(c.values().all(|&n| n == 2), "block {b} slot {p}: {c:?}");
    }
    assert_eq!(pairs.len(), 6);
    let first = *pairs.values().next().unwrap();
    assert!(pairs.values().all(|&n| n == first), "carry-over: {pairs:?}");
    // Reproducible from the seed.
    let dir2 = tempfile::tempdir().unwrap();
    let b2 = build_fixture(dir2.path(), 6);
    assert_eq!(b2.key.orders, key.orders);
    assert_eq!(b2.key.set_id, key.set_id);
}

/// Results as the page exports them: rating = condition level + subject offset + stimulus effect.
fn synthetic_results(b: &Built, subjects: &[&str]) -> BTreeMap<String, String> {
    let level: BTreeMap<&str, f64> = [
        ("cond_alpha", 30.0),
        ("cond_bravo", 50.0),
        ("cond_charlie", 70.0),
    ]
    .into_iter()
    .collect();
    let mut out = BTreeMap::new();
    for (si, s) in subjects.iter().enumerate() {
        let mut csv = String::from(
            "set_id,subject,trial,stimulus,question,rating,plays,listened_s,submitted_at\n",
        );
        for (t, id) in b.key.orders[*s].iter().enumerate() {
            let c = b.key.clips.iter().find(|c| &c.item.id == id).unwrap();
            let stim_effect =
                3.0 * c.item.replicate as f64 + if c.item.target == "notes:C" { 0.0 } else { 2.0 };
            // a subject × condition interaction keeps the paired differences distinct (no ties)
            let ci = CONDS.iter().position(|x| *x == c.item.condition).unwrap() as f64;
            let m =
                level[c.item.condition.as_str()] + si as f64 + stim_effect + 0.7 * si as f64 * ci;
            let q = 80.0 - 0.5 * level[c.item.condition.as_str()] + (si % 2) as f64;
            csv += &format!(
                "{},{s},{},{id},match,{m},1,1.5,2025-01-01T00:00:00Z\n",
                b.key.set_id,
                t + 1
            );
            csv += &format!(
                "{},{s},{},{id},quality,{q},1,1.5,2025-01-01T00:00:00Z\n",
                b.key.set_id,
                t + 1
            );
        }
        out.insert(s.to_string(), csv);
    }
    out
}

fn write_results(b: &Built, results: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let dir = b.dir.join("results");
    results
        .iter()
        .map(|(s, csv)| {
            let p = dir.join(format!("{s}.csv"));
            std::fs::write(&p, csv).unwrap();
            p
        })
        .collect()
}

fn mean_of(a: &Analysis, q: &str, c: &str) -> f64 {
    let qs = a.questions.iter().find(|x| x.question == q).unwrap();
    qs.conditions
        .iter()
        .find(|x| x.condition == c)
        .unwrap()
        .ci
        .mean
}

#[test]
fn analyze_recovers_means_tests_and_agreement_of_synthetic_results() {
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    let subjects = ["S01", "S02", "S03", "S04", "S05", "S06"];
    let files = write_results(&b, &synthetic_results(&b, &subjects));
    let a = analyze::analyze(&files, None, None).unwrap();
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(a.subjects.len(), 6);
    assert_eq!(a.ratings, 6 * 12 * 2);
    // match: level + mean subject offset 2.5 + mean stimulus effect (1.5 + 1.0) + interaction
    for (ci, (c, lvl)) in [
        ("cond_alpha", 30.0),
        ("cond_bravo", 50.0),
        ("cond_charlie", 70.0),
    ]
    .into_iter()
    .enumerate()
    {
        let expect = lvl + 2.5 + 2.5 + 0.7 * 2.5 * ci as f64;
        assert!((mean_of(&a, "match", c) - expect).abs() < 1e-9, "{c}");
        assert!((mean_of(&a, "quality", c) - (80.0 - 0.5 * lvl + 0.5)).abs() < 1e-9);
    }
    let m = a.questions.iter().find(|q| q.question == "match").unwrap();
    let alpha = &m.conditions[0].ci;
    // subject means 30 + s + 2.5, s = 0..5: sd = 1.8708, t(5) = 2.5706
    let half = 2.570_581_835_636_314 * (3.5f64 / 6.0).sqrt();
    assert!((alpha.ci_high - alpha.ci_low - 2.0 * half).abs() < 1e-6);
    for p in &m.pairs {
        let t = p.test.unwrap();
        // every subject prefers the higher level: the exact two-sided p is 2 / 2^6
        assert_eq!(t.method, stats::WilcoxonMethod::Exact);
        assert!((t.p - 2.0 / 64.0).abs() < 1e-12, "{p:?}");
        assert!(p.mean_difference < 0.0);
        assert!((p.p_holm.unwrap() - 3.0 * 2.0 / 64.0).abs() < 1e-9 || p.p_holm.unwrap() >= t.p);
    }
    let icc = m.agreement.unwrap();
    assert_eq!((icc.targets, icc.raters), (12, 6));
    assert!(icc.icc2_1 > 0.9 && icc.icc2_k > icc.icc2_1, "{icc:?}");
    let html = std::fs::read_to_string(a.out_dir.join("index.html")).unwrap();
    assert!(
        html.contains("Wilcoxon signed-rank") && html.contains("ICC(2,1)") && html.contains("<svg")
    );
    assert!(html.contains("cond_charlie"));
    let svg = std::fs::read_to_string(a.out_dir.join("means.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // background + 3 bars × 2 questions
    assert_eq!(svg.matches("<rect").count(), 7, "{svg}");
    for label in CONDS.iter().chain(&["match", "quality"]) {
        assert!(
            svg.contains(&format!(">{label}<")) || svg.contains(&format!(">\n{label}\n<")),
            "{label}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["questions"][0]["pairs"].as_array().unwrap().len(), 3);
}

fn analyze_err(b: &Built, results: &BTreeMap<String, String>) -> String {
    let files = write_results(b, results);
    analyze::analyze(&files, None, None)
        .unwrap_err()
        .to_string()
}

#[test]
fn analyze_rejects_foreign_duplicate_and_broken_results_and_warns_on_missing() {
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    let subjects = ["S01", "S02", "S03"];
    let good = synthetic_results(&b, &subjects);

    // A results file from another stimulus set (other seed => other set id and ids).
    let mut foreign = good.clone();
    let s2 = foreign["S02"].replace(&b.key.set_id, "0123456789abcdef");
    foreign.insert("S02".into(), s2);
    let e = analyze_err(&b, &foreign);
    assert!(
        e.contains("another stimulus set") && e.contains("S02.csv"),
        "{e}"
    );

    let mut wrong_ids = good.clone();
    let first_id = &b.key.orders["S01"][0];
    let s1 = wrong_ids["S01"].replace(first_id.as_str(), "zzzzzz");
    wrong_ids.insert("S01".into(), s1);
    let e = analyze_err(&b, &wrong_ids);
    assert!(e.contains("zzzzzz") && e.contains("not in the key"), "{e}");

    // The same subject in two files.
    let dir2 = tempfile::tempdir().unwrap();
    let b2 = build_fixture(dir2.path(), 6);
    let good2 = synthetic_results(&b2, &subjects);
    let mut dup = good2.clone();
    dup.insert("S01_again".into(), good2["S01"].clone());
    let e = analyze_err(&b2, &dup);
    assert!(e.contains("duplicate subject S01"), "{e}");

    // A rating given twice in one file.
    let dir3 = tempfile::tempdir().unwrap();
    let b3 = build_fixture(dir3.path(), 6);
    let mut twice = synthetic_results(&b3, &subjects);
    let s1 = twice["S01"].clone();
    let line = s1.lines().nth(1).unwrap().to_string();
    twice.insert("S01".into(), format!("{s1}{line}\n"));
    let e = analyze_err(&b3, &twice);
    assert!(e.contains("twice"), "{e}");

    // Empty or out-of-range ratings.
    let mut empty = synthetic_results(&b3, &subjects);
    let s3 = empty["S03"]
        .replacen(",match,", ",match,,", 1)
        .replacen(",1,1.5,", ",1.5,", 1);
    empty.insert("S03".into(), s3);
    let e = analyze_err(&b3, &empty);
    assert!(e.contains("not a number"), "{e}");

    // Missing ratings: a warning naming the subject and the count, analysis goes on.
    let dir4 = tempfile::tempdir().unwrap();
    let b4 = build_fixture(dir4.path(), 6);
    let mut missing = synthetic_results(&b4, &subjects);
    let s2: String = missing["S02"]
        .lines()
        .enumerate()
        .filter(|(i, _)| *i == 0 || *i > 4)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    missing.insert("S02".into(), s2);
    let files = write_results(&b4, &missing);
    let a = analyze::analyze(&files, None, None).unwrap();
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("subject S02") && w.contains("4 of 24 ratings missing")),
        "{:?}",
        a.warnings
    );
    let m = a.questions.iter().find(|q| q.question == "match").unwrap();
    assert_eq!(m.agreement.unwrap().raters, 2, "S02 is left out of the ICC");
    assert_eq!(a.ratings, 3 * 24 - 4);
}

#[test]
fn spec_and_source_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = fixture(dir.path(), 6);
    let text = std::fs::read_to_string(&p).unwrap();
    let bad = |t: String| {
        let q = dir.path().join("bad.toml");
        std::fs::write(&q, t).unwrap();
        match ListeningSpec::load(&q) {
            Ok(s) => build::build(&s, &dir.path().join("out"))
                .unwrap_err()
                .to_string(),
            Err(e) => e.to_string(),
        }
    };
    let e = bad(text.replace("fade_ms", "fade_msec"));
    assert!(e.contains("fade_msec"), "{e}");
    // A listening-test name becomes a folder: no device names that vanish on Windows.
    for name in ["CON", "nul", "Com1"] {
        let e = bad(text.replace("name = \"lt\"", &format!("name = \"{name}\"")));
        assert!(
            e.contains(name) && e.contains("reserved device name"),
            "{e}"
        );
    }
    let e = bad(text.replace("\"notes:G\" = [\"src/src_2", "\"notes:X\" = [\"src/src_2"));
    assert!(
        e.contains("notes:X") && e.contains("not a declared target"),
        "{e}"
    );
    let e = bad(text.replace("clips_per_cell = 2", "clips_per_cell = 3"));
    assert!(
        e.contains("2 clip(s) given") && e.contains("clips_per_cell = 3"),
        "{e}"
    );
    let e = bad(text.replace("src_1_1_1.wav", "nope.wav"));
    assert!(
        e.contains("nope.wav") && e.contains("does not exist"),
        "{e}"
    );
    // a silent source
    write_wav_f32(
        &dir.path().join("src").join("src_0_0_1.wav"),
        &vec![0.0; 64_000],
        1,
        32_000,
    );
    let e = bad(text.clone());
    assert!(e.contains("silent"), "{e}");
}

#[test]
fn generations_source_reads_generation_nodes_by_meta() {
    use rfmx::dag::PlannedNode;
    use rfmx::dag::store::{Index, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store {
        root: dir.path().join("store_root"),
    };
    let mut index = Index::default();
    let mut n = 0;
    for target in ["notes:C", "notes:G"] {
        for eta in [0.0, 0.45] {
            for seed in 0..3 {
                let id = format!("generation[{target}|constant|g1|eta{eta}|0|s{seed}]");
                let key = format!("{n:064x}");
                n += 1;
                let out = store.out_dir(&key);
                std::fs::create_dir_all(&out).unwrap();
                let hz = if target == "notes:C" { 261.6 } else { 392.0 };
                write_wav_f32(
                    &out.join("audio.wav"),
                    &tone(
                        hz + 50.0 * eta as f32 + seed as f32,
                        0.1 + 0.1 * seed as f32,
                        2.0,
                        32_000,
                    ),
                    1,
                    32_000,
                );
                let meta = serde_json::json!({"target": target, "schedule": "constant", "gate": 1.0,
                    "eta": eta, "prompt": "solo piano", "seed": seed, "seconds": 2.0});
                std::fs::write(out.join("meta.json"), meta.to_string()).unwrap();
                let node: PlannedNode = serde_json::from_value(serde_json::json!({
                    "id": id, "key": key, "kind": "generation", "version": 1,
                    "params": {}, "inputs": []}))
                .unwrap();
                index.nodes.insert(id, node);
            }
        }
    }
    std::fs::create_dir_all(store.index_path("sweep").parent().unwrap()).unwrap();
    std::fs::write(
        store.index_path("sweep"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let root = store.root.display().to_string();
    let spec = format!(
        "[test]\nname = \"gen\"\nseed = 1\nsubjects = 2\nclips_per_cell = 2\nclip_seconds = 1.0\n\n\
         [[targets]]\nid = \"notes:C\"\n[[targets]]\nid = \"notes:G\"\n\n\
         [[conditions]]\nid = \"base\"\nsource = \"generations\"\nexperiment = \"sweep\"\nstore = \"{root}\"\n\
         match = {{ eta = 0.0, target = \"{{target}}\" }}\n\n\
         [[conditions]]\nid = \"steered\"\nsource = \"generations\"\nexperiment = \"sweep\"\nstore = \"{root}\"\n\
         match = {{ eta = 0.45, target = \"{{target}}\", schedule = \"constant\" }}\n"
    );
    let p = dir.path().join("gen.toml");
    std::fs::write(&p, &spec).unwrap();
    let b = build::build(
        &ListeningSpec::load(&p).unwrap(),
        &dir.path().join("reports"),
    )
    .unwrap();
    assert_eq!(b.key.clips.len(), 8);
    assert_distinct_audio(&b);
    for c in &b.key.clips {
        let eta = if c.item.condition == "base" {
            "eta0|"
        } else {
            "eta0.45|"
        };
        assert!(
            c.origin.contains(eta) && c.origin.contains(&c.item.target),
            "{c:?}"
        );
        assert!(
            !c.origin.contains("|s2]"),
            "takes the first clips_per_cell in order"
        );
    }
    // A point the sweep never ran.
    let build_error = |body: String| {
        std::fs::write(&p, body).unwrap();
        build::build(
            &ListeningSpec::load(&p).unwrap(),
            &dir.path().join("reports"),
        )
        .unwrap_err()
        .to_string()
    };
    let e = build_error(spec.replace("eta = 0.45", "eta = 0.6"));
    assert!(
        e.contains("steered") && e.contains("0 finished generation node") && e.contains("0.6"),
        "{e}"
    );
    let e = build_error(spec.replace("\"sweep\"", "\"other\""));
    assert!(e.contains("no index for experiment `other`"), "{e}");
}

#[test]
fn cli_builds_and_analyzes_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path(), 6);
    let reports = dir.path().join("reports");
    let rfmx = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rfmx"))
            .args(args)
            .output()
            .unwrap()
    };
    // Runs, asserts success and returns stdout.
    let ok = |args: &[String]| {
        let out = rfmx(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let stdout = ok(&[
        "stimuli".into(),
        spec.display().to_string(),
        "--reports".into(),
        reports.display().to_string(),
    ]);
    assert!(
        stdout.contains("12 clips") && stdout.contains("private key"),
        "{stdout}"
    );
    let key = analyze::load_key(&reports.join("lt/private/key.json")).unwrap();
    let built = Built {
        dir: reports.join("lt"),
        key_path: reports.join("lt/private/key.json"),
        key,
        warnings: vec![],
    };
    let files = write_results(
        &built,
        &synthetic_results(&built, &["S01", "S02", "S03", "S04"]),
    );
    let mut args = vec!["stimuli".to_string(), "analyze".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let stdout = ok(&args);
    assert!(
        stdout.contains("cond_alpha vs cond_bravo") && stdout.contains("ICC(2,1)"),
        "{stdout}"
    );
    assert!(reports.join("lt/analysis/index.html").is_file());
    // bad input exits 2 with the reason
    std::fs::write(&files[0], "set_id,subject\nx,y\n").unwrap();
    let out = rfmx(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `stimulus` column"));
}

#[test]
fn stats_match_scipy_fixtures() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stimuli/stats.json"),
    )
    .unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (name, case) in f["wilcoxon"].as_object().unwrap() {
        let d: Vec<f64> = case["d"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let w = stats::wilcoxon(&d).unwrap();
        let method = if w.method == stats::WilcoxonMethod::Exact {
            "exact"
        } else {
            "normal"
        };
        assert_eq!(method, case["method"].as_str().unwrap(), "{name}");
        assert_eq!(w.n as u64, case["n"].as_u64().unwrap(), "{name}");
        assert!(
            (w.w_plus - case["w_plus"].as_f64().unwrap()).abs() < 1e-9,
            "{name}"
        );
        let p = case["p"].as_f64().unwrap();
        assert!(
            (w.p - p).abs() <= 1e-9 * p.max(1e-3),
            "{name}: {} vs {p}",
            w.p
        );
        let ci = stats::mean_ci(&d);
        let r = &f["mean_ci"][name];
        for (got, key) in [
            (ci.mean, "mean"),
            (ci.ci_low, "ci_low"),
            (ci.ci_high, "ci_high"),
        ] {
            assert!(
                (got - r[key].as_f64().unwrap()).abs() < 1e-9,
                "{name} {key}"
            );
        }
    }
}

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

#[test]
fn rating_page_in_headless_chromium_exports_results_that_analyze_reads() {
    let chromium = find_program(
        "RFMX_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .expect("this test needs Chromium (apt-get install chromium, or set RFMX_CHROMIUM)");
    let node = find_program("RFMX_NODE", &["node", "nodejs"])
        .expect("this test needs Node.js to speak the DevTools protocol (apt-get install nodejs)");
    let dir = tempfile::tempdir().unwrap();
    let b = build_fixture(dir.path(), 6);
    let page = b.dir.join("stimuli").join("index.html");
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut child = std::process::Command::new(node)
        .arg(tests.join("stimuli_browser.js"))
        .arg(&chromium)
        .arg(format!("file://{}", page.display()))
        .arg(tests.join("stimuli_harness.js"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the browser run did not finish in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let log: Vec<&str> = r["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(log.contains(&"duration 1.5"), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("skip refused")), "{log:?}");
    // The page presented S02's order.
    let shown: Vec<&str> = r["stimuli"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        shown,
        b.key.orders["S02"]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let json: serde_json::Value = serde_json::from_str(r["json"].as_str().unwrap()).unwrap();
    assert_eq!(json["answers"].as_array().unwrap().len(), 12);
    assert_eq!(json["set_id"], b.key.set_id.as_str());
    // The JSON export says the same as the CSV one.
    let json_path = b.dir.join("results").join("S02.json");
    std::fs::write(&json_path, r["json"].as_str().unwrap()).unwrap();
    let from_json = analyze::analyze(std::slice::from_ref(&json_path), None, None).unwrap();
    std::fs::remove_file(&json_path).unwrap();
    let csv_path = b.dir.join("results").join("S02.csv");
    std::fs::write(&csv_path, r["csv"].as_str().unwrap()).unwrap();
    let a = analyze::analyze(&[csv_path], None, None).unwrap();
    assert_eq!(
        serde_json::to_value(&from_json.questions).unwrap(),
        serde_json::to_value(&a.questions).unwrap()
    );
    assert_eq!(a.subjects, vec!["S02".to_string()]);
    assert_eq!(a.ratings, 24);
    // one subject: nothing missing; a pair may tie exactly (then it says so, no test)
    assert!(
        a.warnings
            .iter()
            .all(|w| w.contains("no subject with a non-zero difference")),
        "{:?}",
        a.warnings
    );
    // The harness rated trial i (0-based) with (7 i + 13 j) mod 101 on question j.
    let rated: Vec<f64> = (0..12).map(|i| ((i * 7) % 101) as f64).collect();
    let want_mean = rated.iter().sum::<f64>() / 12.0;
    let m = a.questions.iter().find(|q| q.question == "match").unwrap();
    let got: f64 = m.conditions.iter().map(|c| c.ci.mean).sum::<f64>() / 3.0;
    assert!((got - want_mean).abs() < 1e-9, "{got} vs {want_mean}");
}

#[test]
fn a_source_feeding_two_stimuli_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let p = fixture(dir.path(), 6);
    let text = std::fs::read_to_string(&p).unwrap();
    // cond_alpha plays notes:C's first clip for notes:G too, and cond_charlie a byte-identical copy
    // of it under another name.
    let src = dir.path().join("src");
    std::fs::copy(src.join("src_0_0_0.wav"), src.join("copy.wav")).unwrap();
    let repeated = text
        .replace(
            "\"notes:G\" = [\"src/src_0_1_0.wav\"",
            "\"notes:G\" = [\"src/src_0_0_0.wav\"",
        )
        .replace("src/src_2_1_1.wav", "src/copy.wav");
    assert_ne!(repeated, text);
    std::fs::write(&p, &repeated).unwrap();
    let reports = dir.path().join("reports");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rfmx"))
        .args([
            "stimuli".as_ref(),
            p.as_os_str(),
            "--reports".as_ref(),
            reports.as_os_str(),
        ])
        .output()
        .unwrap();
    // miette wraps the message in a box: compare with the frame and line breaks taken out
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // (and without spaces: the frame may break a line inside a path)
    let flat: String = stderr.split_whitespace().collect();
    for part in [
        "copy.wav`,`",
        "src_0_0_0.wav`(equalafterloudnessnormalisation)wouldfeed3stimuli",
        "condition`cond_alpha`target`notes:C`(clip1)",
        "condition`cond_alpha`target`notes:G`(clip1)",
        "condition`cond_charlie`target`notes:G`(clip2)",
        "allow_repeats=true",
    ] {
        assert!(flat.contains(part), "missing {part:?} in {stderr}");
    }
    assert!(!reports.join("lt/stimuli").exists(), "nothing written");

    std::fs::write(
        &p,
        repeated.replace("fade_ms = 20.0\n", "fade_ms = 20.0\nallow_repeats = true\n"),
    )
    .unwrap();
    let b = build::build(&ListeningSpec::load(&p).unwrap(), &reports).unwrap();
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("would feed 3 stimuli") && w.contains("allowed")),
        "{:?}",
        b.warnings
    );
    assert_eq!(b.key.repeats.len(), 1, "{:?}", b.key.repeats);
    let r = &b.key.repeats[0];
    assert_eq!(r.ids.len(), 3);
    assert_eq!(r.origins.len(), 3);
    let cells: BTreeSet<(String, String)> = b
        .key
        .clips
        .iter()
        .filter(|c| r.ids.contains(&c.item.id))
        .map(|c| (c.item.condition.clone(), c.item.target.clone()))
        .collect();
    assert_eq!(cells.len(), 3, "{cells:?}");
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&b.key_path).unwrap()).unwrap();
    assert_eq!(key["repeats"][0]["ids"].as_array().unwrap().len(), 3);
}

#[test]
fn per_target_match_tables_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |m: &str| {
        format!(
            "[test]\nname = \"t\"\nseed = 1\nsubjects = 2\nclip_seconds = 1.0\n\n\
             [[targets]]\nid = \"notes:C\"\n[[targets]]\nid = \"notes:G\"\n\n\
             [[conditions]]\nid = \"a\"\nsource = \"generations\"\nexperiment = \"x\"\nmatch = {{ {m} }}\n\n\
             [[conditions]]\nid = \"b\"\nsource = \"generations\"\nexperiment = \"x\"\n"
        )
    };
    let load = |m: &str| {
        let p = dir.path().join("t.toml");
        std::fs::write(&p, spec(m)).unwrap();
        ListeningSpec::load(&p)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    load("seed = { \"notes:C\" = [0, 1], \"notes:G\" = 2 }").unwrap();
    let e = load("seed = { \"notes:C\" = 0 }").unwrap_err();
    assert!(
        e.contains("match.seed has no value for target `notes:G`"),
        "{e}"
    );
    let e = load("seed = { \"notes:C\" = 0, \"notes:G\" = 1, \"notes:X\" = 2 }").unwrap_err();
    assert!(
        e.contains("`notes:X`, which is not a declared target"),
        "{e}"
    );
}

/// The shipped listening test on a store shaped like listening_gen's (same metas, synthetic
/// audio): all 18 stimuli come from 18 different generations.
#[test]
fn the_shipped_listening_test_gets_a_distinct_clip_for_every_stimulus() {
    use rfmx::dag::PlannedNode;
    use rfmx::dag::store::{Index, Store};
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gen_spec: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("specs/listening_gen.toml")).unwrap())
            .unwrap();
    let steer = gen_spec["steer"].as_table().unwrap();
    let strings = |k: &str| -> Vec<String> {
        steer[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (targets, prompts) = (strings("targets"), strings("prompts"));
    let samples = steer["samples"].as_integer().unwrap();
    let store = Store {
        root: dir.path().join("store"),
    };
    let mut index = Index::default();
    let mut n = 0u32;
    let mut add = |target: Option<&str>, eta: f64, prompt: &str, seed: i64| {
        let id = format!("generation[{target:?}|{eta}|{prompt}|s{seed}]");
        let key = format!("{n:064x}");
        let out = store.out_dir(&key);
        std::fs::create_dir_all(&out).unwrap();
        write_wav_f32(
            &out.join("audio.wav"),
            &tone(200.0 + n as f32 * 7.0, 0.2, 5.0, 32_000),
            1,
            32_000,
        );
        n += 1;
        let meta = serde_json::json!({"target": target.unwrap_or(""), "schedule":
            if target.is_some() { "constant" } else { "" }, "gate": 1.0, "eta": eta,
            "prompt": prompt, "seed": seed});
        std::fs::write(out.join("meta.json"), meta.to_string()).unwrap();
        let node: PlannedNode = serde_json::from_value(serde_json::json!({
            "id": id, "key": key, "kind": "generation", "version": 1, "params": {}, "inputs": []}))
        .unwrap();
        index.nodes.insert(id, node);
    };
    for prompt in &prompts {
        for seed in 0..samples {
            add(None, 0.0, prompt, seed);
            for t in &targets {
                add(Some(t), 0.45, prompt, seed);
            }
        }
    }
    std::fs::create_dir_all(store.index_path("listening_gen").parent().unwrap()).unwrap();
    std::fs::write(
        store.index_path("listening_gen"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let mut spec = ListeningSpec::load(&root.join("specs/listening_test.toml")).unwrap();
    assert!(!spec.test.allow_repeats);
    for c in &mut spec.conditions {
        c.store = Some(store.root.clone());
    }
    let b = build::build(&spec, &dir.path().join("reports")).unwrap();
    assert_eq!(b.key.clips.len(), 18);
    assert!(b.key.repeats.is_empty());
    let origins: BTreeSet<&str> = b.key.clips.iter().map(|c| c.origin.as_str()).collect();
    assert_eq!(origins.len(), 18, "{origins:?}");
    assert_distinct_audio(&b);
}

/// A listening-test name that cannot be the folder reports/<name>/ (`.`, `..`, a leading dot, a
/// Windows device name) and a condition id that is not an id are miette errors at the value:
/// file, line and column, caret and hint, exit 2, nothing written — through `check` and `stimuli`.
#[test]
fn bad_listening_test_names_point_at_the_value_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path(), 2);
    let text = std::fs::read_to_string(&spec).unwrap();
    let reports = dir.path().join("reports");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rfmx"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let folder_hint = "it names the folder reports/<name>/";
    let cases = [
        ("name = \"lt\"", "name = \".\"", "lt.toml:2:8", folder_hint),
        ("name = \"lt\"", "name = \"..\"", "lt.toml:2:8", folder_hint),
        (
            "name = \"lt\"",
            "name = \".hidden\"",
            "lt.toml:2:8",
            folder_hint,
        ),
        ("name = \"lt\"", "name = \"\"", "lt.toml:2:8", folder_hint),
        (
            "name = \"lt\"",
            "name = \"CON\"",
            "lt.toml:2:8",
            "reserved device name",
        ),
        (
            "name = \"lt\"",
            "name = \"lpt1\"",
            "lt.toml:2:8",
            folder_hint,
        ),
        (
            &format!("id = \"{}\"", CONDS[1]),
            "id = \"..\"",
            "",
            "ids are columns and keys of the results files",
        ),
    ];
    for (from, to, at, want) in cases {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        std::fs::write(&spec, &bad).unwrap();
        // Where the condition id sits: its line, column 6.
        let at = if at.is_empty() {
            let line = bad[..bad.find(to).unwrap()].matches('\n').count() + 1;
            format!("lt.toml:{line}:6")
        } else {
            at.to_string()
        };
        for args in [
            vec!["check", spec.to_str().unwrap()],
            vec![
                "stimuli",
                spec.to_str().unwrap(),
                "--reports",
                reports.to_str().unwrap(),
            ],
        ] {
            let (code, err) = run(&args);
            assert_eq!(code, Some(2), "{to} via {}: {err}", args[0]);
            assert!(err.contains(&at), "{to} via {}: no {at} in\n{err}", args[0]);
            assert!(
                err.contains(want),
                "{to} via {}: no {want:?} in\n{err}",
                args[0]
            );
            assert!(!err.contains("panicked"), "{err}");
        }
        assert!(!reports.exists(), "{to}: something was written");
    }
}
