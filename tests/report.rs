//! The HTML report: structure snapshot and escaping on the committed fixture result set
//! (fixtures/report/, made by fixtures/report/make_fixture.py), and the `report` node / `rfmx report`
//! end to end on the toy spec.

use std::path::{Path, PathBuf};
use std::process::Output;

use rfmx::report::{Provenance, fixture, render};

mod common;
use common::Work;

fn provenance() -> Provenance {
    Provenance {
        rfmx_version: "0.0.0-test".into(),
        git_commit: "fixture".into(),
        run_log: Some("run log fixture.jsonl".into()),
        beside: false,
    }
}

/// Renders the fixture result set (written into `results` by the node kinds' own writers).
fn render_fixture(results: &Path, out: &Path, png: bool) -> String {
    let mut input = fixture::build(results, provenance()).unwrap();
    input.png = png;
    let r = render(&input, out).unwrap();
    assert_eq!((r.missing, r.failed), (1, 1));
    std::fs::read_to_string(out.join("index.html")).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn fixture_report_structure() {
    let (results, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let html = render_fixture(results.path(), dir.path(), false);
    insta::assert_snapshot!("fixture_index_html", html);
    for page in ["settings", "probes", "audio-notes_C"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.html"))).unwrap();
        insta::assert_snapshot!(format!("fixture_{page}_html"), text);
    }
    insta::assert_snapshot!("fixture_files", files(dir.path()).join("\n"));
    // Every referenced asset and page exists.
    for page in html_pages(dir.path()) {
        let html = std::fs::read_to_string(&page).unwrap();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let rel = part.split(['"', '#']).next().unwrap();
                assert!(
                    dir.path().join(rel).is_file(),
                    "{rel} is referenced by {} but missing",
                    page.display()
                );
            }
        }
    }
    // Audio is the node's, as Ogg Vorbis (decoded by the project's own decoder).
    assert!(!dir.path().join("assets/audio/k-gen-base.wav").exists());
    let oggs = walk(&dir.path().join("assets/audio"));
    assert_eq!(oggs.len(), 7);
    for ogg in &oggs {
        let key = ogg.file_stem().unwrap().to_str().unwrap();
        assert_eq!(ogg.extension().unwrap(), "ogg");
        let (base, _, _) =
            rfmx::audio::wav::read(&results.path().join(format!("nodes/{key}/audio.wav"))).unwrap();
        let decoded = rfmx::audio::decode::decode(ogg).unwrap();
        assert_eq!(
            (decoded.sample_rate, decoded.channels.len()),
            (32_000, 1),
            "{key}"
        );
        let copy = decoded.mono();
        // symphonia can hand back the padding of the last Vorbis block of a stream this short
        // (0.1 s, one Ogg page); the notes_sweep-length clips below come back exactly.
        assert!(
            (base.len()..base.len() + 2048).contains(&copy.len()),
            "{key}: {} samples decoded, {} written",
            copy.len(),
            base.len()
        );
        let (lag, snr) = aligned_snr_db(&base, &copy, 256);
        eprintln!("{key}: Ogg Vorbis vs its WAV: lag {lag}, SNR {snr:.1} dB");
        assert_eq!(lag, 0, "{key}: no encoder delay left in");
        assert!(snr >= VORBIS_MIN_SNR_DB, "{key}: SNR {snr:.1} dB");
    }
}

/// Tonal report clips decode to their source within this SNR: measured 38.3–41.1 dB on the
/// fixture's 0.1 s tones at quality 0.4 (docs/design.md §7).
const VORBIS_MIN_SNR_DB: f64 = 35.0;

/// The same for the noise-like sweep clips: a perceptual codec replaces noise by noise of a like
/// spectrum, so the waveform SNR is low though it sounds alike. Measured 9.8–9.9 dB (a 2 s clip
/// of the embedded model: 10.5 dB).
const VORBIS_MIN_SNR_DB_NOISY: f64 = 8.0;

/// The lag (in samples, `-max_lag..=max_lag`) at which `got` best matches `want` by
/// cross-correlation, and the SNR (dB) of `got` against `want` there.
fn aligned_snr_db(want: &[f32], got: &[f32], max_lag: i64) -> (i64, f64) {
    let pairs = |lag: i64| {
        want.iter().enumerate().filter_map(move |(i, &a)| {
            let j = usize::try_from(i as i64 + lag).ok()?;
            got.get(j).map(|&b| (f64::from(a), f64::from(b)))
        })
    };
    let lag = (-max_lag..=max_lag)
        .max_by(|&x, &y| {
            let corr = |l| pairs(l).map(|(a, b)| a * b).sum::<f64>();
            corr(x).total_cmp(&corr(y))
        })
        .unwrap();
    let (signal, noise) = pairs(lag).fold((0.0, 0.0), |(s, n), (a, b)| {
        (s + a * a, n + (a - b) * (a - b))
    });
    (lag, 10.0 * (signal / noise).log10())
}

#[test]
fn audio_wav_writes_16_bit_pcm_players_say_so() {
    let (results, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut input = fixture::build(results.path(), provenance()).unwrap();
    input.audio = rfmx::spec::ReportAudio::Wav;
    render(&input, dir.path()).unwrap();
    // Within one quantisation step of the node's f32 clip.
    let (base, _, _) =
        rfmx::audio::wav::read(&results.path().join("nodes/k-gen-base/audio.wav")).unwrap();
    let (copy, channels, rate) =
        rfmx::audio::wav::read(&dir.path().join("assets/audio/k-gen-base.wav")).unwrap();
    assert_eq!((copy.len(), channels, rate), (base.len(), 1, 32_000));
    assert!(
        base.iter()
            .zip(&copy)
            .all(|(a, b)| (a - b).abs() <= 1.0 / 32767.0)
    );
    let audio = std::fs::read_to_string(dir.path().join("audio-notes_C.html")).unwrap();
    assert_eq!(audio.matches("<source ").count(), 7);
    assert_eq!(audio.matches("type=\"audio/wav\"").count(), 7);
    assert!(
        walk(&dir.path().join("assets/audio"))
            .iter()
            .all(|p| p.extension().unwrap() == "wav")
    );
}

#[test]
fn two_renders_give_the_same_bytes() {
    let results = tempfile::tempdir().unwrap();
    let input = fixture::build(results.path(), provenance()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    render(&input, a.path()).unwrap();
    render(&input, b.path()).unwrap();
    let (fa, fb) = (files(a.path()), files(b.path()));
    assert_eq!(fa, fb);
    assert!(
        fa.iter().filter(|f| f.ends_with(".ogg")).count() == 7,
        "{fa:?}"
    );
    for f in &fa {
        assert!(
            std::fs::read(a.path().join(f)).unwrap() == std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs between two renders"
        );
    }
}

#[test]
fn everything_is_escaped() {
    let (results, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    render_fixture(results.path(), dir.path(), false);
    let html: String = html_pages(dir.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // The fixture's prompt holds `<script>alert("x")</script> & "strings"`; its experiment is
    // `fixture<&>`, and an error message holds `<probe[...]>`.
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "unescaped script tag"
    );
    assert!(
        html.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;strings&quot;"
        )
    );
    assert!(html.contains("rfmx report: fixture&lt;&amp;&gt;"));
    assert!(html.contains("&lt;probe[notes,L2,rfm]&gt; not found"));
    assert!(!html.contains("fixture<&>"));
    // The plots escape their text too (series labels, titles).
    for svg in walk(&dir.path().join("assets/plots")) {
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(!s.contains("<script"), "{}", svg.display());
    }
}

#[test]
fn fixture_report_content() {
    let (results, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let index = render_fixture(results.path(), dir.path(), true);
    let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let html = page("settings.html");
    // Settings: the η = 0 baseline + 8 settings (one missing, one failed, marked), 95% CI below
    // each value, an unavailable metric.
    assert_eq!(html.matches("<tr class=\"done\">").count(), 7);
    assert_eq!(html.matches("<tr class=\"missing\">").count(), 2);
    assert!(html.contains(">0.335<span class=\"ci\">[0.255, 0.405] n=8</span>"));
    // An unavailable metric's reason is listed once under the tables, its cells point to it.
    assert_eq!(
        html.matches("unavailable: CLAP weights not found (&lt;none&gt; in HF cache)")
            .count(),
        1
    );
    assert!(html.contains("[1] unavailable: CLAP weights not found"));
    assert!(html.contains("class=\"unavailable\">n/a [1]</td>"));
    // One sweep point, 9 settings: the words say which is which.
    assert!(html.contains("9 setting(s) in 1 sweep point(s)"));
    // Audio: one page for the target, each clip once, the shared baseline once (not per row).
    let audio = page("audio-notes_C.html");
    assert_eq!(audio.matches("<audio ").count(), 7);
    assert_eq!(
        audio
            .matches(
                "<source src=\"assets/audio/k-gen-base.ogg\" type=\"audio/ogg; codecs=vorbis\">"
            )
            .count(),
        1
    );
    assert_eq!(
        audio.matches("type=\"audio/ogg; codecs=vorbis\"").count(),
        7
    );
    assert_eq!(index.matches("<audio ").count(), 0);
    assert!(index.contains("href=\"audio-notes_C.html\""));
    // Random weights stated plainly on every page; renderer, fingerprint on the provenance page.
    assert!(index.contains("RANDOM WEIGHTS") && audio.contains("RANDOM WEIGHTS"));
    let prov = page("provenance.html");
    assert!(prov.contains("SoundFont /usr/share/sounds/sf2/TimGM6mb.sf2"));
    assert!(prov.contains("b3:fixture-tiny-0000"));
    // Table 1, confusion matrix, selection on the probes page.
    let probes = page("probes.html");
    assert!(probes.contains(
        "<td data-label=\"concept\">notes</td><td data-label=\"probe\">rfm</td><td data-label=\"best layer\" class=\"num\">2</td><td data-label=\"judge test accuracy\" class=\"num\">0.870</td>"
    ));
    // Layer 0's direction is degenerate in the fixture: not selected, marked with its reason.
    assert!(probes.contains(
        "<td data-label=\"target\">notes:C</td><td data-label=\"selected layers\">2, 3; degenerate, weight 0: 0 (zero or non-finite direction (the probe found no signal))</td>"
    ));
    assert!(probes.contains("judge probe at layer 2"));
    // Plots: η small multiples for the two numeric metrics, probe layers, the per-target
    // selection, traces; PNG copies on request.
    for name in [
        "eta_probe_accuracy",
        "eta_fd",
        "probe_notes",
        "selection_notes",
        "traces",
    ] {
        let svg =
            std::fs::read_to_string(dir.path().join(format!("assets/plots/{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(
            svg.contains("(unitless") || svg.contains("(index)"),
            "{name}: axis units"
        );
        let png = std::fs::read(dir.path().join(format!("assets/plots/{name}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    assert!(!dir.path().join("assets/plots/eta_clap.svg").exists());
    let eta =
        std::fs::read_to_string(dir.path().join("assets/plots/eta_probe_accuracy.svg")).unwrap();
    assert!(eta.contains("notes:C"), "one panel per target");
    assert!(eta.contains("constant · layers top_k(k=2)"));
    assert!(eta.contains("linear_down · layers top_k(k=2)"));
    // Legends describe what is drawn: every line of the trace plot carries its markers.
    assert!(probes.contains("blue circles with line: constant"));
    let traces = std::fs::read_to_string(dir.path().join("assets/plots/traces.svg")).unwrap();
    assert!(traces.matches("<circle").count() >= 3);
}

// ---- end to end on the toy spec ----

impl Work {
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

const TOY: &str = "[experiment]\nname = \"toyrep\"\n[toy]\nvalues = [1, 2, 3]\nfail_on = [3]\n";

#[test]
fn rfmx_report_marks_missing_results_before_and_after_a_partial_run() {
    let w = Work::new();
    std::fs::write(w.path().join("t.toml"), TOY).unwrap();
    // Nothing has run: every result is marked missing, still exit 0.
    let out = ok(&w.rfmx(&["report", "t.toml"]));
    assert!(
        out.contains("4 result node(s): 4 missing, 0 failed"),
        "{out}"
    );
    let html = w.read("reports/toyrep/index.html");
    assert_eq!(
        html.matches("<td data-label=\"state\">missing</td><td data-label=\"error\" class=\"error\"></td></tr>")
            .count(),
        4,
        "{html}"
    );
    // x=3 fails and toy_sum is skipped: the report shows what exists and marks the rest.
    let o = w.rfmx(&["run", "t.toml", "--jobs", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let out = ok(&w.rfmx(&["report", "t.toml", "--png"]));
    assert!(
        out.contains("4 result node(s): 1 missing, 1 failed"),
        "{out}"
    );
    let html = w.read("reports/toyrep/index.html");
    assert!(html.contains("toy_square[x=3] was asked to fail"), "{html}");
    assert!(
        html.contains("{&quot;x&quot;:2,&quot;y&quot;:4.0}"),
        "{html}"
    );
    assert!(html.contains("No model weights were involved."));
    // Provenance is one click away, on its own page.
    let html = w.read("reports/toyrep/provenance.html");
    assert!(
        html.contains("2 cache hit(s)") || html.contains("0 cache hit(s), 2 computed"),
        "{html}"
    );
    assert!(html.contains("[experiment]\nname = &quot;toyrep&quot;"));
    // The resolved spec written by `run` is kept beside the report.
    assert!(w.path().join("reports/toyrep/spec.resolved.toml").is_file());
}

/// The `report` node through the engine (a registry whose report stage also covers toy plans):
/// rendered once into the store, published after every run, cached on a rerun.
#[test]
fn report_node_renders_once_and_is_published_after_every_run() {
    use rfmx::dag::store::{EntryState, Index, Store};
    use rfmx::dag::{Registry, Stage, build_plan, status::statuses};
    use rfmx::report::{ReportNode, ReportStage};

    let tmp = tempfile::tempdir().unwrap();
    let store = Store {
        root: tmp.path().join(".rfmx"),
    };
    let stage = ReportStage {
        reports_root: tmp.path().join("reports"),
        include_toy: true,
    };
    let registry = Registry::default()
        .stage(rfmx::stages::toy::ToyStage)
        .kind(rfmx::stages::toy::ToySquare)
        .kind(rfmx::stages::toy::ToySum)
        .stage(stage.clone())
        .kind(ReportNode);
    let spec = rfmx::spec::load_str(
        "t.toml",
        "t",
        "[experiment]\nname = \"toyrep\"\n[toy]\nvalues = [1, 2]\n",
        &[],
        &[],
    )
    .unwrap();
    let plan = build_plan(&spec, &registry, &rfmx::dag::NoResults).unwrap();
    let ids: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        ["toy_square[x=1]", "toy_square[x=2]", "toy_sum", "report"]
    );
    let report = plan.nodes.iter().position(|n| n.kind == "report").unwrap();
    let mut inputs = plan.inputs_of(report);
    inputs.sort();
    assert_eq!(inputs, [0, 1, 2]);
    let run = |n: u32| {
        let st = statuses(&plan, &store, &Index::default());
        let log = store
            .runs_dir()
            .join(format!("2026010{n}T000000-1-toyrep.jsonl"));
        let sink = rfmx::events::JsonlSink::create(&log).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let consumer = rfmx::events::spawn_consumers(rx, vec![Box::new(sink)]);
        let summary = rfmx::exec::run_plan(&plan, &st, &store, &registry, 2, &tx);
        drop(tx);
        consumer.join().unwrap();
        (
            summary.computed,
            summary.cached,
            stage.summary(&plan, &store).unwrap(),
        )
    };
    let (computed, cached, line) = run(1);
    assert_eq!((computed, cached), (4, 0));
    let index = tmp.path().join("reports/toyrep/index.html");
    assert_eq!(line, format!("report: {}", index.display()));
    let first = std::fs::read_to_string(&index).unwrap();
    assert!(first.contains("<td data-label=\"node\"><code>toy_sum</code></td><td data-label=\"output\"><code>{&quot;sum&quot;:5.0,&quot;parts&quot;:2}</code></td>"), "{first}");
    // The cached pages hold no per-run provenance; provenance.json beside them does.
    let page = std::fs::read_to_string(tmp.path().join("reports/toyrep/provenance.html")).unwrap();
    assert!(page.contains("in provenance.json beside it"), "{page}");
    assert!(!page.contains(rfmx::GIT_COMMIT), "{page}");
    assert!(!first.contains(rfmx::GIT_COMMIT), "{first}");
    let prov = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path.join("provenance.json")).unwrap()).unwrap()
    };
    let dir = tmp.path().join("reports/toyrep");
    let p = prov(&dir);
    assert_eq!(
        (p["cache_hits"].as_u64(), p["computed"].as_u64()),
        (Some(0), Some(3)),
        "{p}"
    );
    assert_eq!(p["git_commit"], rfmx::GIT_COMMIT);
    assert!(
        p["run_log"].as_str().unwrap().contains("20260101T000000"),
        "{p}"
    );
    // The node output is what was published.
    let key = &plan.nodes[report].key;
    assert!(matches!(store.verify(key), EntryState::Valid(_)));
    assert_eq!(
        std::fs::read_to_string(store.out_dir(key).join("index.html")).unwrap(),
        first
    );
    // Rerun: all cached, the report node too; it is published again (re-copied, not re-rendered).
    std::fs::remove_dir_all(tmp.path().join("reports/toyrep")).unwrap();
    let (computed, cached, _) = run(2);
    assert_eq!((computed, cached), (0, 4));
    assert_eq!(std::fs::read_to_string(&index).unwrap(), first);
    let p = prov(&dir);
    assert_eq!(
        (p["cache_hits"].as_u64(), p["computed"].as_u64()),
        (Some(3), Some(0)),
        "{p}"
    );
    assert!(
        p["run_log"].as_str().unwrap().contains("20260102T000000"),
        "{p}"
    );
    assert!(
        tmp.path()
            .join("reports/toyrep/assets/report.css")
            .is_file()
    );
}

#[test]
fn report_command_errors() {
    let w = Work::new();
    std::fs::write(w.path().join("e.toml"), "[experiment]\nname = \"e\"\n").unwrap();
    let o = w.rfmx(&["report", "e.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no result nodes to report on"));
    let o = w.rfmx(&["report", "missing.toml"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---- a report of notes_sweep's size ----

/// Top-level pages of a rendered report.
fn html_pages(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_notes_sweep_sized_report_has_small_pages_and_each_clip_once() {
    let (results, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // notes_sweep's clip length (steer.seconds = 2): the size measured is the real one.
    let input = fixture::build_sweep(results.path(), provenance(), 2.0).unwrap();
    let started = std::time::Instant::now();
    render(&input, dir.path()).unwrap();
    let took = started.elapsed().as_secs_f64();
    let pages = html_pages(dir.path());
    let mut players = 0;
    for p in &pages {
        let html = std::fs::read_to_string(p).unwrap();
        let n = html.matches("<audio ").count();
        assert!(
            n <= rfmx::report::render::MAX_PLAYERS,
            "{}: {n} players",
            p.display()
        );
        // every player shows its duration before it is played
        assert_eq!(html.matches("preload=\"metadata\"").count(), n);
        players += n;
        for part in html.split("src=\"").skip(1) {
            let rel = part.split('"').next().unwrap();
            assert!(dir.path().join(rel).is_file(), "{rel} in {}", p.display());
        }
    }
    let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert_eq!(index.matches("<audio ").count(), 0);
    // 12 targets, one audio page each (48 steered clips + their 4 baselines), in the spec's order.
    let audio_pages: Vec<usize> = fixture::SWEEP_TARGETS
        .iter()
        .map(|c| {
            let href = format!("href=\"audio-notes_{}.html\"", c.replace('#', "_"));
            index.find(&href).unwrap_or_else(|| panic!("{href}"))
        })
        .collect();
    assert!(
        audio_pages.windows(2).all(|w| w[0] < w[1]),
        "{audio_pages:?}"
    );
    assert_eq!(players, 12 * (48 + 4));
    // Each distinct clip is one file: 576 steered + 4 baselines, no two with the same bytes.
    let clips = walk(&dir.path().join("assets/audio"));
    assert_eq!(clips.len(), 580);
    assert_eq!(common::distinct_contents(&clips), 580);
    assert!(clips.iter().all(|p| p.extension().unwrap() == "ogg"));
    // The overview: the main metric first, then the cost metrics, one panel per target.
    let figs: Vec<usize> = ["eta_probe_accuracy", "eta_pitch_hit", "eta_fd", "eta_mmd"]
        .iter()
        .map(|f| index.find(&format!("assets/plots/{f}.svg")).unwrap())
        .collect();
    assert!(figs.windows(2).all(|w| w[0] < w[1]), "{figs:?}");
    let settings = std::fs::read_to_string(dir.path().join("settings.html")).unwrap();
    let order: Vec<usize> = fixture::SWEEP_TARGETS
        .iter()
        .map(|c| settings.find(&format!(">notes:{c}</h3>")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "rows in spec order");
    assert!(settings.contains("156 setting(s)") && settings.contains("1 sweep point(s)"));
    // The 2-second clips decode to exactly their length, aligned.
    for seed in 0..4 {
        let key = format!("k-gen-base-{seed}");
        let (base, _, _) =
            rfmx::audio::wav::read(&results.path().join(format!("nodes/{key}/audio.wav"))).unwrap();
        let ogg = dir.path().join(format!("assets/audio/{key}.ogg"));
        let copy = rfmx::audio::decode::decode(&ogg).unwrap().mono();
        assert_eq!(copy.len(), base.len(), "{key}");
        let (lag, snr) = aligned_snr_db(&base, &copy, 256);
        eprintln!("{key}: Ogg Vorbis vs its WAV: lag {lag}, SNR {snr:.1} dB");
        assert_eq!(lag, 0, "{key}");
        assert!(snr >= VORBIS_MIN_SNR_DB_NOISY, "{key}: SNR {snr:.1} dB");
    }
    // Encode time of one clip (the baselines', from the store).
    let started = std::time::Instant::now();
    for seed in 0..4 {
        let wav = results
            .path()
            .join(format!("nodes/k-gen-base-{seed}/audio.wav"));
        let (x, channels, rate) = rfmx::audio::wav::read(&wav).unwrap();
        rfmx::audio::vorbis::encode(&x, channels, rate, rfmx::audio::vorbis::REPORT_QUALITY)
            .unwrap();
    }
    let per_clip = started.elapsed().as_secs_f64() / 4.0;
    // Sizes: pages + plots stay small; with the clips (Ogg Vorbis; 74 MB as 16-bit WAV) the
    // folder is within the ~20 MB target.
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    let audio: u64 = clips.iter().map(size).sum();
    let all: u64 = walk(dir.path()).iter().map(size).sum();
    let html: u64 = pages.iter().map(size).sum();
    eprintln!(
        "notes_sweep-sized report: {} pages, {players} players, html {:.2} MB, plots+css {:.2} MB, \
         audio {:.1} MB ({:.1} kbit/s), total {:.1} MB, rendered in {took:.1}s, \
         {:.1} ms to encode a 2 s clip",
        pages.len(),
        html as f64 / 1e6,
        (all - audio - html) as f64 / 1e6,
        audio as f64 / 1e6,
        audio as f64 * 8.0 / (580.0 * 2.0) / 1e3,
        all as f64 / 1e6,
        per_clip * 1e3
    );
    assert!(
        all - audio < 3_000_000,
        "pages and plots: {} bytes",
        all - audio
    );
    assert!(all < 20_000_000, "the report folder: {all} bytes");
}
