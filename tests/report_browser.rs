//! A real headless browser (the system chromium, driven by tests/browser/check.mjs through
//! puppeteer-core) loads the fixture report from disk: no console errors, no network requests,
//! every image and audio clip loads, no <script> element, no horizontal overflow at 1280/390 px.
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

#[test]
fn report_loads_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        let opt_out = std::env::var("RFMX_SKIP_BROWSER").is_ok_and(|v| v == "1");
        if opt_out && std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED (RFMX_SKIP_BROWSER=1): chromium is not installed");
            return;
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
    let started = Instant::now();
    let out = Command::new("node")
        .arg(browser.join("check.mjs"))
        .arg(out_dir.join("index.html"))
        .arg(&chromium)
        // The fixture's prompt: shown as text, not run.
        .env("EXPECT_TEXT", rfmx::report::fixture::PROMPT)
        .output()
        .expect("node is needed to drive chromium (tests/browser/check.mjs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "browser check took {:.1}s: {stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let views = v["views"].as_array().unwrap();
    assert_eq!(views.len(), 2);
    for view in views {
        assert_eq!(view["images"], 4, "{view}");
        assert_eq!(view["audio"], 12, "{view}");
        assert_eq!(view["scripts"], 0, "{view}");
    }
}
