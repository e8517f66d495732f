//! A real headless browser (the system chromium, driven by tests/browser/check.mjs through
//! puppeteer-core) loads the fixture report from disk: no console errors, no network requests,
//! every image loads and every audio clip (Ogg Vorbis) loads its metadata (duration > 0), no
//! <script> element, no horizontal overflow at 1280/390 px (page or table); and a report of
//! notes_sweep's size: every page within its height, player and width limits at both widths.
//!
//! Needs `chromium` (`apt-get install -y chromium`) and node; `.ci/run` installs what is missing.
//! A missing chromium fails this test loudly; outside CI, RFMX_SKIP_BROWSER=1 opts out explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RFMX_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// chromium, with the browser test's npm packages in place (fails loudly when missing).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let Some(chromium) = chromium() else {
        let opt_out = std::env::var("RFMX_SKIP_BROWSER").is_ok_and(|v| v == "1");
        if opt_out && std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED (RFMX_SKIP_BROWSER=1): chromium is not installed");
            return None;
        }
        panic!(
            "chromium is missing: install it with `apt-get install -y chromium` (.ci/run does), or \
             point RFMX_CHROMIUM at a Chrome/Chromium binary"
        );
    };
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser.join("node_modules/puppeteer-core").is_dir() {
        // From the npm cache when it has the locked packages (no network needed), else fail.
        let ok = Command::new("npm")
            .args(["ci", "--offline", "--no-audit", "--no-fund"])
            .current_dir(&browser)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "puppeteer-core is missing: run `npm ci --prefix tests/browser` (.ci/run does)"
        );
    }
    Some((chromium, browser))
}

/// Runs check.mjs on one page; its JSON summary.
fn check(browser: &Path, chromium: &Path, page: &Path, expect: Option<&str>) -> serde_json::Value {
    let started = Instant::now();
    let mut cmd = Command::new("node");
    cmd.arg(browser.join("check.mjs")).arg(page).arg(chromium);
    if let Some(text) = expect {
        cmd.env("EXPECT_TEXT", text);
    }
    let out = cmd
        .output()
        .expect("node is needed to drive chromium (tests/browser/check.mjs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "browser check of {} took {:.1}s: {stdout}",
        page.display(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn a_notes_sweep_sized_report_fits_1280_and_390_px() {
    let Some((chromium, browser)) = browser() else {
        return;
    };
    let (results, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Short clips: the player count and layout are what is checked here (tests/report.rs
    // measures the size at notes_sweep's clip length).
    let input = rfmx::report::fixture::build_sweep(
        results.path(),
        rfmx::report::Provenance::current(None),
        0.2,
    )
    .unwrap();
    rfmx::report::render(&input, out.path()).unwrap();
    // (page, the most pixels it may be tall at 1280 px and at 390 px)
    let limits = [
        ("index.html", 6_000, 6_000),
        ("settings.html", 4_000, 8_000),
        ("probes.html", 5_000, 6_000),
        ("provenance.html", 2_000, 3_000),
        ("audio-notes_C.html", 5_000, 15_000),
        ("audio-notes_C_.html", 5_000, 15_000),
    ];
    for (page, at_1280, at_390) in limits {
        let v = check(&browser, &chromium, &out.path().join(page), None);
        for view in v["views"].as_array().unwrap() {
            let height = view["height"].as_u64().unwrap();
            let limit = if view["width"] == 1280 {
                at_1280
            } else {
                at_390
            };
            assert!(height <= limit, "{page}: {height} px tall: {view}");
            let players = view["audio"].as_u64().unwrap();
            assert!(
                players <= rfmx::report::render::MAX_PLAYERS as u64,
                "{page}: {view}"
            );
            assert_eq!(view["metadata"], players, "{page}: preload=metadata");
            assert_eq!(view["overflow"], 0, "{page}: {view}");
        }
    }
}

#[test]
fn report_loads_in_headless_chromium() {
    let Some((chromium, browser)) = browser() else {
        return;
    };
    // RFMX_REPORT_OUT=DIR keeps the rendered report there (to look at it); else a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let out_dir =
        std::env::var_os("RFMX_REPORT_OUT").map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let results = tempfile::tempdir().unwrap();
    let mut input =
        rfmx::report::fixture::build(results.path(), rfmx::report::Provenance::current(None))
            .unwrap();
    input.png = true;
    rfmx::report::render(&input, &out_dir).unwrap();
    // Every page of the report.
    let pages: Vec<PathBuf> = [
        "index.html",
        "settings.html",
        "probes.html",
        "audio-notes_C.html",
        "provenance.html",
    ]
    .iter()
    .map(|p| out_dir.join(p))
    .collect();
    let (mut images, mut audio) = (0, 0);
    for page in &pages {
        // The fixture's prompt (on its audio page): shown as text, not run.
        let expect = page
            .ends_with("audio-notes_C.html")
            .then_some(rfmx::report::fixture::PROMPT);
        let v = check(&browser, &chromium, page, expect);
        let views = v["views"].as_array().unwrap();
        assert_eq!(views.len(), 2);
        for view in views {
            assert_eq!(view["scripts"], 0, "{view}");
            assert_eq!(view["metadata"], view["audio"], "{view}");
            // Every clip is Ogg Vorbis, typed so, and chromium read its duration (check.mjs
            // fails a page whose player errs or reports no duration).
            assert_eq!(view["ogg"], view["audio"], "{view}");
            assert_eq!(view["playable"], view["audio"], "{view}");
        }
        images += views[0]["images"].as_u64().unwrap();
        audio += views[0]["audio"].as_u64().unwrap();
    }
    // 2 overview grids, probe plot, selection grid, traces; 6 steered clips and 1 baseline.
    assert_eq!((images, audio), (5, 7));
}
