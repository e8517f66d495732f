//! `rfmx stimuli SPEC`: build `reports/<name>/` (see the module docs of `stimuli`).

use super::design::{self, Item};
use super::loudness::{self, Normalised};
use super::sources::{self, SourceClip};
use super::spec::ListeningSpec;
use super::{Result, StimuliError, io_err};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PAGE_HTML: &str = include_str!("../../templates/listening/index.html");
pub const PAGE_JS: &str = include_str!("../../templates/listening/app.js");
pub const PAGE_CSS: &str = include_str!("../../templates/listening/style.css");

/// The private key: everything needed to unblind results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub name: String,
    pub set_id: String,
    pub seed: u64,
    pub conditions: Vec<KeyCondition>,
    pub targets: Vec<String>,
    pub questions: Vec<String>,
    pub subjects: Vec<String>,
    pub clips: Vec<KeyClip>,
    /// Per subject label, the stimulus ids in presentation order.
    pub orders: BTreeMap<String, Vec<String>>,
    pub target_lufs: f64,
    pub true_peak_dbtp: f64,
    /// Source clips that feed more than one stimulus (only with `test.allow_repeats`): analysis
    /// should treat the ratings of these stimuli as ratings of one clip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<Repeat>,
}

/// One clip behind several stimuli.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    /// blake3 of the normalised excerpt's samples, equal for all of `ids`.
    pub blake3: String,
    /// The stimulus ids it feeds.
    pub ids: Vec<String>,
    /// Their sources, in the order of `ids`.
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyCondition {
    pub id: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyClip {
    #[serde(flatten)]
    pub item: Item,
    pub origin: String,
    pub source_lufs: f64,
    pub gain_db: f64,
    pub limited: bool,
    pub lufs: f64,
    pub true_peak_dbtp: f64,
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub key_path: PathBuf,
    pub key: Key,
    pub warnings: Vec<String>,
}

pub fn subject_label(i: usize) -> String {
    format!("S{:02}", i + 1)
}

/// The stimulus-set id (written into the page and every results file): a hash of the key's
/// assignments, which reveals nothing about them.
pub fn set_id(name: &str, seed: u64, items: &[Item]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&seed.to_le_bytes());
    h.update(serde_json::to_string(items).unwrap_or_default().as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// Reads a source as mono at `rate`.
fn load_mono(path: &Path, rate: u32) -> Result<Vec<f32>> {
    let (x, ch, sr) = crate::audio::wav::read(path)?;
    let ch = ch.max(1) as usize;
    let mono: Vec<f32> = x
        .chunks(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok(crate::audio::resample::resample(&mono, sr, rate)?)
}

/// Builds `<reports_root>/<name>/{stimuli,private,results}`.
pub fn build(spec: &ListeningSpec, reports_root: &Path) -> Result<Built> {
    let t = &spec.test;
    let mut warnings = Vec::new();
    let cond_ids: Vec<String> = spec.conditions.iter().map(|c| c.id.clone()).collect();
    let target_ids: Vec<String> = spec.targets.iter().map(|c| c.id.clone()).collect();
    let mut cell: BTreeMap<(String, String), Vec<SourceClip>> = BTreeMap::new();
    for c in &spec.conditions {
        for tg in &spec.targets {
            cell.insert(
                (c.id.clone(), tg.id.clone()),
                sources::resolve(spec, c, tg)?,
            );
        }
    }
    let items = design::items(&cond_ids, &target_ids, t.clips_per_cell, t.seed);
    let rate = t.sample_rate;
    let n = (t.clip_seconds * rate as f64).round() as usize;
    let offset = (t.offset_seconds * rate as f64).round() as usize;
    let fade = (t.fade_ms * 1e-3 * rate as f64).round() as usize;
    let rendered: Vec<(Vec<f32>, Normalised, String, Option<String>)> = items
        .par_iter()
        .map(|it| {
            let src = &cell[&(it.condition.clone(), it.target.clone())][it.replicate];
            let x = load_mono(&src.path, rate)?;
            let short = (x.len() < offset + n).then(|| {
                format!(
                    "{} is {:.2} s long, shorter than offset + clip ({:.2} s): zero-padded",
                    src.origin,
                    x.len() as f64 / rate as f64,
                    (offset + n) as f64 / rate as f64
                )
            });
            let y = loudness::excerpt(&x, offset, n, fade);
            let (y, norm) =
                loudness::normalise(&y, rate, t.target_lufs, t.true_peak_dbtp, &src.origin)?;
            Ok((y, norm, src.origin.clone(), short))
        })
        .collect::<Result<Vec<_>>>()?;
    let samples: Vec<Vec<f32>> = rendered.iter().map(|r| r.0.clone()).collect();
    let origins: Vec<String> = rendered.iter().map(|r| r.2.clone()).collect();
    let repeats = repeated_stimuli(&samples);
    if !repeats.is_empty() {
        let text = describe_repeats(&repeats, &items, &origins);
        if !t.allow_repeats {
            return Err(StimuliError::Repeats(format!(
                "{text}\na subject would hear the same clip more than once, its checksum would give \
                 away which stimuli share a condition, and analysis would count identical audio as \
                 independent ratings.\nhint: let each target select its own clips (e.g. per-target \
                 seeds: match = {{ seed = {{ \"notes:C\" = [0, 1], \"notes:E\" = [2, 3] }} }}), or set \
                 `allow_repeats = true` in [test] to keep the repeats (recorded in the private key)"
            )));
        }
        warnings.push(format!(
            "{text} (allowed by test.allow_repeats; recorded in the private key)"
        ));
    }

    let set = set_id(&t.name, t.seed, &items);
    let subjects: Vec<String> = (0..t.subjects).map(subject_label).collect();
    let orders = design::orders(
        cond_ids.len(),
        target_ids.len(),
        t.clips_per_cell,
        t.subjects,
        t.seed,
    );
    let rows = design::williams(cond_ids.len()).len();
    if !t.subjects.is_multiple_of(rows) {
        warnings.push(format!(
            "{} subjects is not a multiple of the {rows} rows of the Williams design for {} \
             conditions: positions are only approximately balanced",
            t.subjects,
            cond_ids.len()
        ));
    }
    let order_map: BTreeMap<String, Vec<String>> = subjects
        .iter()
        .zip(&orders)
        .map(|(s, o)| (s.clone(), o.iter().map(|&i| items[i].id.clone()).collect()))
        .collect();

    let out = reports_root.join(&t.name);
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let tmp = out.join(format!(".stimuli.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let audio = tmp.join("audio");
    std::fs::create_dir_all(&audio).map_err(io_err(&audio))?;
    // Written in id order, so that file times follow the random ids, not the conditions.
    let mut by_id: Vec<usize> = (0..items.len()).collect();
    by_id.sort_by(|&a, &b| items[a].id.cmp(&items[b].id));
    for &i in &by_id {
        crate::audio::wav::write_f32(
            &audio.join(format!("{}.wav", items[i].id)),
            &rendered[i].0,
            1,
            rate,
        )?;
    }
    let page_data = page_data(spec, &items, &set, &order_map);
    for (name, text) in [
        ("index.html", PAGE_HTML.to_string()),
        ("app.js", PAGE_JS.to_string()),
        ("style.css", PAGE_CSS.to_string()),
        ("trials.js", page_data),
    ] {
        let p = tmp.join(name);
        crate::fsx::write_atomic(&p, text.as_bytes()).map_err(io_err(&p))?;
    }
    let stimuli = out.join("stimuli");
    if stimuli.exists() {
        std::fs::remove_dir_all(&stimuli).map_err(io_err(&stimuli))?;
    }
    std::fs::rename(&tmp, &stimuli).map_err(io_err(&stimuli))?;

    let key = Key {
        name: t.name.clone(),
        set_id: set,
        seed: t.seed,
        conditions: spec
            .conditions
            .iter()
            .map(|c| KeyCondition {
                id: c.id.clone(),
                description: c.description.clone(),
            })
            .collect(),
        targets: target_ids,
        questions: spec.all_questions().into_iter().map(|q| q.id).collect(),
        subjects,
        clips: items
            .iter()
            .zip(&rendered)
            .map(|(it, (_, nm, origin, _))| KeyClip {
                item: it.clone(),
                origin: origin.clone(),
                source_lufs: nm.source_lufs,
                gain_db: nm.gain_db,
                limited: nm.limited,
                lufs: nm.lufs,
                true_peak_dbtp: nm.true_peak_dbtp,
            })
            .collect(),
        orders: order_map,
        target_lufs: t.target_lufs,
        true_peak_dbtp: t.true_peak_dbtp,
        repeats: repeats
            .iter()
            .map(|(hash, idx)| Repeat {
                blake3: hash.clone(),
                ids: idx.iter().map(|&i| items[i].id.clone()).collect(),
                origins: idx.iter().map(|&i| origins[i].clone()).collect(),
            })
            .collect(),
    };
    warnings.extend(rendered.iter().filter_map(|r| r.3.clone()));
    let private = out.join("private");
    let key_path = private.join("key.json");
    let json = serde_json::to_string_pretty(&key).map_err(|e| StimuliError::Io {
        path: key_path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::fsx::write_atomic(&key_path, json.as_bytes()).map_err(io_err(&key_path))?;
    let mut csv = String::from(
        "id,condition,target,replicate,origin,source_lufs,gain_db,limited,lufs,true_peak_dbtp\n",
    );
    for c in &key.clips {
        csv.push_str(&super::csv::row(&[
            &c.item.id,
            &c.item.condition,
            &c.item.target,
            &c.item.replicate.to_string(),
            &c.origin,
            &format!("{:.3}", c.source_lufs),
            &format!("{:.3}", c.gain_db),
            &c.limited.to_string(),
            &format!("{:.3}", c.lufs),
            &format!("{:.3}", c.true_peak_dbtp),
        ]));
    }
    let p = private.join("key.csv");
    crate::fsx::write_atomic(&p, csv.as_bytes()).map_err(io_err(&p))?;
    let readme = private.join("README.txt");
    crate::fsx::write_atomic(
        &readme,
        b"PRIVATE: this folder unblinds the listening test. Do not give it to subjects;\n\
          hand out only the stimuli/ folder. Put the subjects' exported CSV files in ../results/.\n",
    )
    .map_err(io_err(&readme))?;
    let results = out.join("results");
    std::fs::create_dir_all(&results).map_err(io_err(&results))?;
    Ok(Built {
        dir: out,
        key_path,
        key,
        warnings,
    })
}

/// Groups of stimuli whose excerpts are identical after normalisation (the same source clip, or
/// sources that differ only in level): (blake3 of the samples, item indices).
fn repeated_stimuli(rendered: &[Vec<f32>]) -> Vec<(String, Vec<usize>)> {
    let mut by_hash: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, x) in rendered.iter().enumerate() {
        let h = blake3::hash(bytemuck::cast_slice(x)).to_hex().to_string();
        by_hash.entry(h).or_default().push(i);
    }
    let mut out: Vec<(String, Vec<usize>)> = by_hash
        .into_iter()
        .filter(|(_, idx)| idx.len() > 1)
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// One line per repeated clip: which cells it would feed, from which source.
fn describe_repeats(
    repeats: &[(String, Vec<usize>)],
    items: &[Item],
    origins: &[String],
) -> String {
    repeats
        .iter()
        .map(|(_, idx)| {
            let sources: std::collections::BTreeSet<&str> =
                idx.iter().map(|&i| origins[i].as_str()).collect();
            let cells: Vec<String> = idx
                .iter()
                .map(|&i| {
                    let it = &items[i];
                    format!(
                        "condition `{}` × target `{}` (clip {})",
                        it.condition,
                        it.target,
                        it.replicate + 1
                    )
                })
                .collect();
            let from = sources
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let what = if sources.len() == 1 {
                format!("source {from}")
            } else {
                format!("sources {from} (equal after loudness normalisation)")
            };
            format!(
                "{what} would feed {} stimuli: {}",
                idx.len(),
                cells.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `trials.js`: the page's data (ids, questions per stimulus, orders), with no conditions.
fn page_data(
    spec: &ListeningSpec,
    items: &[Item],
    set: &str,
    orders: &BTreeMap<String, Vec<String>>,
) -> String {
    let questions = spec.all_questions();
    let targets: BTreeMap<&str, &super::spec::TargetSpec> =
        spec.targets.iter().map(|t| (t.id.as_str(), t)).collect();
    let stimuli: BTreeMap<&str, serde_json::Value> = items
        .iter()
        .map(|it| {
            let tg = targets[it.target.as_str()];
            let qs: Vec<serde_json::Value> = questions
                .iter()
                .map(|q| {
                    serde_json::json!({"id": q.id, "text": tg.expand(&q.text), "low": q.low, "high": q.high})
                })
                .collect();
            (
                it.id.as_str(),
                serde_json::json!({"file": format!("audio/{}.wav", it.id), "questions": qs}),
            )
        })
        .collect();
    let data = serde_json::json!({
        "set_id": set,
        "name": spec.test.name,
        "instructions": spec.test.instructions.clone().unwrap_or_else(|| {
            "Listen to each clip to the end, then rate it with the sliders. You cannot go on \
             before the clip has played and every slider has been set."
                .into()
        }),
        "questions": questions.iter().map(|q| q.id.clone()).collect::<Vec<_>>(),
        "stimuli": stimuli,
        "orders": orders,
    });
    format!(
        "// Generated by rfmx stimuli: trial data for index.html.\nwindow.RFMX_TEST = {};\n",
        serde_json::to_string_pretty(&data).unwrap_or_default()
    )
}
