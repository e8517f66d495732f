//! `rfmx stimuli analyze results/*.csv` (or the page's `.json` exports): unblind with the private key, per-condition means with
//! 95% t intervals over subjects, paired Wilcoxon signed-rank tests between conditions (on each
//! subject's mean per condition; Holm-adjusted per question), inter-rater agreement ICC(2,1) and
//! ICC(2,k), a plot (SVG) and an HTML summary.
//!
//! Bad input is never dropped silently: a file from another stimulus set, unknown stimulus or
//! question ids, out-of-range ratings, a subject in two files or a rating given twice are errors;
//! missing ratings are warnings that say how many and which, and the analysis uses what is there.

use super::build::Key;
use super::stats::{self, Icc, MeanCi, Wilcoxon};
use super::{Result, StimuliError, io_err};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SUMMARY_TEMPLATE: &str = include_str!("../../templates/listening/summary.html");

/// One unblinded rating.
#[derive(Debug, Clone, Serialize)]
pub struct Rating {
    pub subject: String,
    pub stimulus: String,
    pub condition: String,
    pub target: String,
    pub question: String,
    pub rating: f64,
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionStats {
    pub condition: String,
    #[serde(flatten)]
    pub ci: MeanCi,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellStats {
    pub target: String,
    pub condition: String,
    #[serde(flatten)]
    pub ci: MeanCi,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairTest {
    pub a: String,
    pub b: String,
    /// Mean over subjects of (a − b).
    pub mean_difference: f64,
    pub test: Option<Wilcoxon>,
    pub p_holm: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuestionStats {
    pub question: String,
    pub conditions: Vec<ConditionStats>,
    pub cells: Vec<CellStats>,
    pub pairs: Vec<PairTest>,
    pub agreement: Option<Icc>,
    pub agreement_note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub name: String,
    pub set_id: String,
    pub subjects: Vec<String>,
    pub files: Vec<String>,
    pub ratings: usize,
    pub warnings: Vec<String>,
    pub methods: String,
    pub questions: Vec<QuestionStats>,
    pub out_dir: PathBuf,
}

pub const METHODS: &str = "Each subject's ratings are averaged per condition (and per target × condition); \
means are over subjects with two-sided 95% Student-t intervals. Conditions are compared pairwise with \
the two-sided Wilcoxon signed-rank test on the subjects' per-condition means (zero differences dropped; \
exact null distribution when there are no ties or zeros and n ≤ 50, otherwise the normal approximation \
with tie correction and no continuity correction, as scipy.stats.wilcoxon), Holm-adjusted over the \
pairs of each question. Inter-rater agreement is ICC(2,1) and ICC(2,k) (two-way random effects, \
absolute agreement; Shrout & Fleiss 1979) over the stimuli × subjects matrix of the subjects who rated \
every stimulus.";

/// `reports/<name>/results/x.csv` → `reports/<name>/private/key.json`.
pub fn find_key(first_result: &Path) -> Option<PathBuf> {
    let dir = first_result.parent()?;
    let base = if dir.file_name().is_some_and(|n| n == "results") {
        dir.parent()?
    } else {
        dir
    };
    let k = base.join("private").join("key.json");
    k.is_file().then_some(k)
}

pub fn load_key(path: &Path) -> Result<Key> {
    let text = crate::fsx::read_text_limited(path, crate::fsx::TEXT_LIMIT).map_err(io_err(path))?;
    serde_json::from_str(&text)
        .map_err(|e| StimuliError::Results(format!("{}: not a stimulus key: {e}", path.display())))
}

/// Reads and checks the results files against the key.
pub fn read_results(files: &[PathBuf], key: &Key) -> Result<(Vec<Rating>, Vec<String>)> {
    let bad = |msg: String| StimuliError::Results(msg);
    if files.is_empty() {
        return Err(bad("no results files given".into()));
    }
    let clips: BTreeMap<&str, &super::design::Item> = key
        .clips
        .iter()
        .map(|c| (c.item.id.as_str(), &c.item))
        .collect();
    let questions: BTreeSet<&str> = key.questions.iter().map(String::as_str).collect();
    let known_subjects: BTreeSet<&str> = key.subjects.iter().map(String::as_str).collect();
    let mut warnings = Vec::new();
    let mut ratings = Vec::new();
    let mut subject_file: BTreeMap<String, String> = BTreeMap::new();
    for f in files {
        let fname = f.display().to_string();
        let text = crate::fsx::read_text_limited(f, crate::fsx::CSV_LIMIT).map_err(io_err(f))?;
        let recs = if f
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            json_records(&text).map_err(|e| bad(format!("{fname}: {e}")))?
        } else {
            super::csv::parse(&text).map_err(|e| bad(format!("{fname}: {e}")))?
        };
        let Some((header, rows)) = recs.split_first() else {
            return Err(bad(format!("{fname}: empty file")));
        };
        let col = |name: &str| {
            header.iter().position(|h| h.trim() == name).ok_or_else(|| {
                bad(format!(
                    "{fname}: no `{name}` column (header: {})",
                    header.join(",")
                ))
            })
        };
        let (c_set, c_subj, c_stim, c_q, c_r) = (
            col("set_id")?,
            col("subject")?,
            col("stimulus")?,
            col("question")?,
            col("rating")?,
        );
        if rows.is_empty() {
            return Err(bad(format!("{fname}: no ratings")));
        }
        let mut seen = BTreeSet::new();
        let mut file_subjects = BTreeSet::new();
        for (i, r) in rows.iter().enumerate() {
            let line = i + 2;
            let get = |c: usize| r.get(c).map(|s| s.trim()).unwrap_or("");
            let set = get(c_set);
            if set != key.set_id {
                return Err(bad(format!(
                    "{fname}:{line}: set_id `{set}` is not this stimulus set's (`{}`, {}): \
                     results from another stimulus set?",
                    key.set_id, key.name
                )));
            }
            let stim = get(c_stim);
            let Some(item) = clips.get(stim) else {
                return Err(bad(format!(
                    "{fname}:{line}: stimulus `{stim}` is not in the key of `{}`: results from another stimulus set?",
                    key.name
                )));
            };
            let q = get(c_q);
            if !questions.contains(q) {
                return Err(bad(format!(
                    "{fname}:{line}: unknown question `{q}` (questions: {})",
                    key.questions.join(", ")
                )));
            }
            let subject = get(c_subj).to_string();
            if subject.is_empty() {
                return Err(bad(format!("{fname}:{line}: empty subject")));
            }
            let raw = get(c_r);
            let rating: f64 = raw.parse().map_err(|_| {
                bad(format!(
                    "{fname}:{line}: rating `{raw}` is not a number (missing rating?)"
                ))
            })?;
            if !(0.0..=100.0).contains(&rating) {
                return Err(bad(format!(
                    "{fname}:{line}: rating {rating} is outside 0..100"
                )));
            }
            if !seen.insert((subject.clone(), stim.to_string(), q.to_string())) {
                return Err(bad(format!(
                    "{fname}:{line}: subject {subject} rated stimulus {stim} question {q} twice"
                )));
            }
            file_subjects.insert(subject.clone());
            ratings.push(Rating {
                subject,
                stimulus: stim.to_string(),
                condition: item.condition.clone(),
                target: item.target.clone(),
                question: q.to_string(),
                rating,
                file: fname.clone(),
            });
        }
        for s in file_subjects {
            if let Some(other) = subject_file.get(&s) {
                return Err(bad(format!(
                    "duplicate subject {s}: in {other} and in {fname} (one file per subject; rename or remove one)"
                )));
            }
            if !known_subjects.contains(s.as_str()) {
                warnings.push(format!(
                    "subject {s} ({fname}) is not one of the set's subjects {}..{}: presentation order unknown",
                    key.subjects.first().map_or("", |s| s.as_str()),
                    key.subjects.last().map_or("", |s| s.as_str())
                ));
            }
            subject_file.insert(s, fname.clone());
        }
    }
    // Missing ratings: every subject should rate every stimulus on every question.
    let have: BTreeSet<(&str, &str, &str)> = ratings
        .iter()
        .map(|r| (r.subject.as_str(), r.stimulus.as_str(), r.question.as_str()))
        .collect();
    for s in subject_file.keys() {
        let mut missing = Vec::new();
        for c in &key.clips {
            for q in &key.questions {
                if !have.contains(&(s.as_str(), c.item.id.as_str(), q.as_str())) {
                    missing.push(format!("{}/{q}", c.item.id));
                }
            }
        }
        if !missing.is_empty() {
            let total = key.clips.len() * key.questions.len();
            let shown: Vec<&str> = missing.iter().take(6).map(String::as_str).collect();
            warnings.push(format!(
                "subject {s}: {} of {total} ratings missing ({}{}); that subject's other ratings are used, \
                 and it is left out of agreement (ICC) for those questions",
                missing.len(),
                shown.join(", "),
                if missing.len() > shown.len() { ", ..." } else { "" }
            ));
        }
    }
    Ok((ratings, warnings))
}

/// The page's JSON export (`{set_id, subject, answers: [{stimulus, ratings: {q: v}}]}`) as CSV-like
/// records with the columns `read_results` needs.
fn json_records(text: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a results JSON export: {e}"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no `{k}` in the JSON export"))
    };
    let (set, subject) = (field("set_id")?, field("subject")?);
    let answers = v
        .get("answers")
        .and_then(|a| a.as_array())
        .ok_or("no `answers` array in the JSON export")?;
    let mut out = vec![
        ["set_id", "subject", "stimulus", "question", "rating"]
            .map(String::from)
            .to_vec(),
    ];
    for a in answers {
        let stim = a
            .get("stimulus")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        let ratings = a
            .get("ratings")
            .and_then(|r| r.as_object())
            .ok_or_else(|| format!("answer for `{stim}` has no `ratings` object"))?;
        for (q, r) in ratings {
            let r = match r {
                serde_json::Value::Number(n) => n.to_string(),
                other => other.as_str().unwrap_or("").to_string(),
            };
            out.push(vec![
                set.clone(),
                subject.clone(),
                stim.clone(),
                q.clone(),
                r,
            ]);
        }
    }
    Ok(out)
}

/// Per subject → mean rating over the ratings selected by `pick`.
fn subject_means<'a>(ratings: impl Iterator<Item = &'a Rating>) -> BTreeMap<String, f64> {
    let mut acc: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in ratings {
        let e = acc.entry(r.subject.clone()).or_default();
        e.0 += r.rating;
        e.1 += 1;
    }
    acc.into_iter()
        .map(|(s, (t, n))| (s, t / n as f64))
        .collect()
}

pub fn compute(key: &Key, ratings: &[Rating], warnings: &mut Vec<String>) -> Vec<QuestionStats> {
    let conds: Vec<&str> = key.conditions.iter().map(|c| c.id.as_str()).collect();
    let subjects: BTreeSet<&str> = ratings.iter().map(|r| r.subject.as_str()).collect();
    key.questions
        .iter()
        .map(|q| {
            let rq: Vec<&Rating> = ratings.iter().filter(|r| &r.question == q).collect();
            let per_cond: BTreeMap<&str, BTreeMap<String, f64>> = conds
                .iter()
                .map(|&c| (c, subject_means(rq.iter().copied().filter(|r| r.condition == c))))
                .collect();
            let conditions = conds
                .iter()
                .map(|&c| ConditionStats {
                    condition: c.to_string(),
                    ci: stats::mean_ci(&per_cond[c].values().copied().collect::<Vec<_>>()),
                })
                .collect();
            let mut cells = Vec::new();
            for t in &key.targets {
                for &c in &conds {
                    let m = subject_means(
                        rq.iter().copied().filter(|r| r.condition == c && &r.target == t),
                    );
                    cells.push(CellStats {
                        target: t.clone(),
                        condition: c.to_string(),
                        ci: stats::mean_ci(&m.values().copied().collect::<Vec<_>>()),
                    });
                }
            }
            let mut pairs = Vec::new();
            for (i, &a) in conds.iter().enumerate() {
                for &b in &conds[i + 1..] {
                    let d: Vec<f64> = per_cond[a]
                        .iter()
                        .filter_map(|(s, va)| per_cond[b].get(s).map(|vb| va - vb))
                        .collect();
                    let test = stats::wilcoxon(&d);
                    if test.is_none() {
                        warnings.push(format!(
                            "question {q}: {a} vs {b}: no subject with a non-zero difference, no test"
                        ));
                    }
                    pairs.push(PairTest {
                        a: a.to_string(),
                        b: b.to_string(),
                        mean_difference: d.iter().sum::<f64>() / d.len().max(1) as f64,
                        test,
                        p_holm: None,
                    });
                }
            }
            let tested: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].test.is_some()).collect();
            let adj = stats::holm(
                &tested.iter().filter_map(|&i| pairs[i].test.map(|t| t.p)).collect::<Vec<_>>(),
            );
            for (&i, p) in tested.iter().zip(adj) {
                pairs[i].p_holm = Some(p);
            }
            // ICC over stimuli × subjects who rated every stimulus on this question.
            let by: BTreeMap<(&str, &str), f64> = rq
                .iter()
                .map(|r| ((r.stimulus.as_str(), r.subject.as_str()), r.rating))
                .collect();
            let complete: Vec<&str> = subjects
                .iter()
                .copied()
                .filter(|s| key.clips.iter().all(|c| by.contains_key(&(c.item.id.as_str(), *s))))
                .collect();
            let matrix: Vec<Vec<f64>> = key
                .clips
                .iter()
                .map(|c| complete.iter().map(|s| by[&(c.item.id.as_str(), *s)]).collect())
                .collect();
            let agreement = stats::icc2(&matrix);
            let agreement_note = match agreement {
                Some(_) => format!(
                    "{} subjects × {} stimuli (subjects with every rating)",
                    complete.len(),
                    key.clips.len()
                ),
                None => format!(
                    "unavailable: {} subject(s) rated every stimulus, 2 are needed",
                    complete.len()
                ),
            };
            QuestionStats {
                question: q.clone(),
                conditions,
                cells,
                pairs,
                agreement,
                agreement_note,
            }
        })
        .collect()
}

/// The whole command: read, check, compute, write `out` (default `<set>/analysis`).
pub fn analyze(files: &[PathBuf], key_path: Option<&Path>, out: Option<&Path>) -> Result<Analysis> {
    let key_path = match key_path {
        Some(k) => k.to_path_buf(),
        None => files.first().and_then(|f| find_key(f)).ok_or_else(|| {
            StimuliError::Results(
                "cannot find the key (expected ../private/key.json next to the results folder); pass --key"
                    .into(),
            )
        })?,
    };
    let key = load_key(&key_path)?;
    let (ratings, mut warnings) = read_results(files, &key)?;
    let questions = compute(&key, &ratings, &mut warnings);
    let out_dir = match out {
        Some(o) => o.to_path_buf(),
        None => key_path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join("analysis"),
    };
    let subjects: BTreeSet<String> = ratings.iter().map(|r| r.subject.clone()).collect();
    let analysis = Analysis {
        name: key.name.clone(),
        set_id: key.set_id.clone(),
        subjects: subjects.into_iter().collect(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        ratings: ratings.len(),
        warnings,
        methods: METHODS.into(),
        questions,
        out_dir: out_dir.clone(),
    };
    write_outputs(&analysis, &key, &ratings)?;
    Ok(analysis)
}

fn write_outputs(a: &Analysis, key: &Key, ratings: &[Rating]) -> Result<()> {
    let dir = &a.out_dir;
    let w = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        crate::fsx::write_atomic(&p, bytes).map_err(io_err(&p))
    };
    w(
        "summary.json",
        serde_json::to_string_pretty(a)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let mut csv = String::from("subject,stimulus,condition,target,question,rating,file\n");
    for r in ratings {
        csv.push_str(&super::csv::row(&[
            &r.subject,
            &r.stimulus,
            &r.condition,
            &r.target,
            &r.question,
            &r.rating.to_string(),
            &r.file,
        ]));
    }
    w("ratings_unblinded.csv", csv.as_bytes())?;
    let svg = plot_svg(a, key);
    w("means.svg", svg.as_bytes())?;
    let html = render_html(a, key, &svg)?;
    w("index.html", html.as_bytes())?;
    Ok(())
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

fn render_html(a: &Analysis, key: &Key, svg: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("summary.html", SUMMARY_TEMPLATE)
        .map_err(|e| StimuliError::Results(format!("summary template: {e}")))?;
    let questions: Vec<serde_json::Value> = a
        .questions
        .iter()
        .map(|q| {
            serde_json::json!({
                "id": q.question,
                "conditions": q.conditions.iter().map(|c| serde_json::json!({
                    "condition": c.condition, "n": c.ci.n, "mean": fmt(c.ci.mean, 1),
                    "ci": format!("[{}, {}]", fmt(c.ci.ci_low, 1), fmt(c.ci.ci_high, 1)),
                })).collect::<Vec<_>>(),
                "cells": q.cells.iter().map(|c| serde_json::json!({
                    "target": c.target, "condition": c.condition, "n": c.ci.n,
                    "mean": fmt(c.ci.mean, 1),
                    "ci": format!("[{}, {}]", fmt(c.ci.ci_low, 1), fmt(c.ci.ci_high, 1)),
                })).collect::<Vec<_>>(),
                "pairs": q.pairs.iter().map(|p| serde_json::json!({
                    "a": p.a, "b": p.b, "diff": fmt(p.mean_difference, 1),
                    "n": p.test.map_or(0, |t| t.n),
                    "w": p.test.map_or("–".into(), |t| fmt(t.w_plus.min(t.w_minus), 1)),
                    "z": p.test.map_or("–".into(), |t| fmt(t.z, 2)),
                    "p": p.test.map_or("–".into(), |t| format!("{:.4}", t.p)),
                    "method": p.test.map_or("no test".into(), |t| format!("{:?}", t.method).to_lowercase()),
                    "p_holm": p.p_holm.map_or("–".into(), |v| format!("{v:.4}")),
                })).collect::<Vec<_>>(),
                "icc1": q.agreement.map_or("–".into(), |i| fmt(i.icc2_1, 3)),
                "icck": q.agreement.map_or("–".into(), |i| fmt(i.icc2_k, 3)),
                "agreement_note": q.agreement_note,
            })
        })
        .collect();
    let ctx = serde_json::json!({
        "name": a.name, "set_id": a.set_id, "subjects": a.subjects, "files": a.files,
        "ratings": a.ratings, "warnings": a.warnings, "methods": a.methods,
        "conditions": key.conditions, "questions": questions, "svg": svg,
    });
    env.get_template("summary.html")
        .and_then(|t| t.render(ctx))
        .map_err(|e| StimuliError::Results(format!("summary template: {e}")))
}

/// Bar chart of per-condition means with 95% CI whiskers, one panel per question: plotters'
/// SVG backend, drawn with plain elements (SVG text needs no font files).
pub fn plot_svg(a: &Analysis, key: &Key) -> String {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0x4e, 0x79, 0xa7),
        RGBColor(0xf2, 0x8e, 0x2b),
        RGBColor(0x59, 0xa1, 0x4f),
        RGBColor(0xe1, 0x57, 0x59),
        RGBColor(0x76, 0xb7, 0xb2),
        RGBColor(0xed, 0xc9, 0x48),
        RGBColor(0xb0, 0x7a, 0xa1),
        RGBColor(0x9c, 0x75, 0x5f),
    ];
    let k = key.conditions.len().max(1) as i32;
    let (panel_w, h, top, bottom, left) = (60 + 70 * k, 300i32, 30i32, 50i32, 45i32);
    let width = left + panel_w * a.questions.len().max(1) as i32 + 20;
    let plot_h = (h - top - bottom) as f64;
    let y = |v: f64| top + (plot_h * (1.0 - v.clamp(0.0, 100.0) / 100.0)).round() as i32;
    let font = |size: f64, h: HPos, v: VPos| {
        TextStyle::from(("sans-serif", size).into_font())
            .color(&BLACK)
            .pos(Pos::new(h, v))
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (width as u32, h as u32)).into_drawing_area();
        // Drawing into a String cannot fail; errors are ignored rather than unwrapped.
        let _ = root.fill(&WHITE);
        for tick in [0, 25, 50, 75, 100] {
            let yy = y(tick as f64);
            let _ = root.draw(&PathElement::new(
                vec![(left, yy), (width - 20, yy)],
                RGBColor(0xdd, 0xdd, 0xdd).stroke_width(1),
            ));
            let _ = root.draw(&Text::new(
                tick.to_string(),
                (left - 5, yy),
                font(12.0, HPos::Right, VPos::Center),
            ));
        }
        for (qi, q) in a.questions.iter().enumerate() {
            let x0 = left + panel_w * qi as i32;
            let _ = root.draw(&Text::new(
                q.question.clone(),
                (x0 + panel_w / 2, 10),
                font(13.0, HPos::Center, VPos::Top),
            ));
            for (ci, c) in q.conditions.iter().enumerate() {
                let bx = x0 + 30 + 70 * ci as i32;
                if c.ci.mean.is_finite() {
                    let _ = root.draw(&Rectangle::new(
                        [(bx, y(c.ci.mean)), (bx + 44, y(0.0))],
                        PALETTE[ci % PALETTE.len()].filled(),
                    ));
                }
                if c.ci.ci_low.is_finite() {
                    let (cx, lo, hi) = (bx + 22, y(c.ci.ci_low), y(c.ci.ci_high));
                    for seg in [
                        vec![(cx, lo), (cx, hi)],
                        vec![(cx - 6, lo), (cx + 6, lo)],
                        vec![(cx - 6, hi), (cx + 6, hi)],
                    ] {
                        let _ = root.draw(&PathElement::new(seg, BLACK.stroke_width(1)));
                    }
                }
                let _ = root.draw(&Text::new(
                    c.condition.clone(),
                    (bx + 22, h - bottom + 8),
                    font(12.0, HPos::Center, VPos::Top),
                ));
            }
        }
        let _ = root.draw(&Text::new(
            "mean rating over subjects, whiskers: 95% CI",
            (left, h - 12),
            font(12.0, HPos::Left, VPos::Center),
        ));
        let _ = root.present();
    }
    buf
}
