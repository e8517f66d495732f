//! The `clap` metric: CLAP cosine between each generation's audio and its own prompt (the paper's
//! text alignment; baseline ≈ .33 with laion/larger_clap_music), mean with a bootstrap CI.
//!
//! Plan time resolves the snapshot once: the node's params get `{"fingerprint": <blake3>}` (the
//! path travels as the hint `clap_path`), or `{"missing": <reason>}` when there is none, in which
//! case the metric reports the reason and the download command and the rest of the run proceeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{Value, json};

use crate::clap_model::model::{Clap, ClapSource, cosine, fingerprint};

use super::stats::{self, Estimate, MetricEntry};

/// (the `clap` param of evaluation nodes, their hints) for the spec's `clap_model`.
pub fn plan_param(clap_model: &str) -> (Option<Value>, Value) {
    let source = ClapSource::parse(clap_model);
    match source
        .resolve()
        .and_then(|dir| Ok((fingerprint(&dir)?, dir)))
    {
        Ok((fp, dir)) => (
            Some(json!({ "fingerprint": fp })),
            json!({ "clap_path": dir.display().to_string() }),
        ),
        Err(e) => (Some(json!({ "missing": e.to_string() })), Value::Null),
    }
}

/// One generation to score: its mono audio and prompt.
pub struct Clip<'a> {
    pub samples: &'a [f32],
    pub sample_rate: u32,
    pub prompt: &'a str,
}

/// The per-clip cosines of `clips` under the snapshot at `dir`, checked against the planned
/// fingerprint (a snapshot replaced between plan and run is an error, not a silent mix).
pub fn cosines(
    dir: &Path,
    planned: &str,
    clips: &[Clip<'_>],
    seed: u64,
) -> Result<(Vec<f64>, String), String> {
    let model = Clap::shared(&ClapSource::Path(dir.to_path_buf()), &Device::Cpu)
        .map_err(|e| e.to_string())?;
    if model.fingerprint != planned {
        return Err(format!(
            "the CLAP snapshot at {} changed since the run was planned; plan again",
            dir.display()
        ));
    }
    let mut prompts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in clips {
        let n = prompts.len();
        prompts.entry(c.prompt).or_insert(n);
    }
    let mut texts = vec![String::new(); prompts.len()];
    for (p, &i) in &prompts {
        texts[i] = (*p).to_string();
    }
    let text = model.embed_texts(&texts).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(clips.len());
    for (i, c) in clips.iter().enumerate() {
        let a = model
            .embed_audio(c.samples, c.sample_rate, seed.wrapping_add(i as u64))
            .map_err(|e| e.to_string())?;
        out.push(cosine(&a, &text[prompts[c.prompt]]));
    }
    Ok((out, model.description()))
}

/// The metric value for `metrics.json` and the per-sample cosines (empty when unavailable).
pub fn metric(
    param: Option<&Value>,
    hint_path: Option<PathBuf>,
    clips: &[Clip<'_>],
    boot: usize,
    seed: u64,
) -> (MetricEntry, Vec<f64>) {
    let unavailable = |r: String| (MetricEntry::unavailable(r), Vec::new());
    let Some(param) = param else {
        return unavailable("the evaluation node was planned without a CLAP model".into());
    };
    if let Some(reason) = param.get("missing").and_then(Value::as_str) {
        return unavailable(reason.to_string());
    }
    let (Some(fp), Some(dir)) = (param.get("fingerprint").and_then(Value::as_str), hint_path)
    else {
        return unavailable("no CLAP snapshot path reached the node (plan again)".into());
    };
    match cosines(&dir, fp, clips, seed) {
        Ok((values, model)) => {
            let e: Estimate = stats::bootstrap_mean(&values, boot, seed);
            let mut v = e.entry();
            if let MetricEntry::Estimate { model: m, .. } = &mut v {
                *m = Some(model);
            }
            (v, values)
        }
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_snapshot_is_reported_with_the_download_and_keys_the_node() {
        let (param, hints) = plan_param("/nonexistent/clap");
        let param = param.unwrap();
        let reason = param["missing"].as_str().unwrap();
        assert!(
            reason.contains("no CLAP snapshot at /nonexistent/clap"),
            "{reason}"
        );
        assert!(reason.contains("huggingface-cli download laion/larger_clap_music"));
        assert!(hints.is_null());
        let x = [0.0f32; 320];
        let clips = [Clip {
            samples: &x,
            sample_rate: 32_000,
            prompt: "piano",
        }];
        let (v, per) = metric(Some(&param), None, &clips, 10, 0);
        assert_eq!(v, MetricEntry::unavailable(reason));
        assert!(per.is_empty());
        let (v, _) = metric(None, None, &clips, 10, 0);
        assert!(
            matches!(&v, MetricEntry::Unavailable { unavailable } if unavailable.contains("without a CLAP model")),
            "{v:?}"
        );
    }

    #[test]
    fn a_found_snapshot_keys_the_node_by_content() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clap/tiny_clap");
        let (param, hints) = plan_param(dir.to_str().unwrap());
        let fp = param.unwrap()["fingerprint"].as_str().unwrap().to_string();
        assert_eq!(fp.len(), 64);
        assert_eq!(hints["clap_path"].as_str(), dir.to_str());
        // A planned fingerprint that no longer matches the files is an error, not a silent mix.
        let x = [0.0f32; 320];
        let clips = [Clip {
            samples: &x,
            sample_rate: 32_000,
            prompt: "piano",
        }];
        let param = json!({ "fingerprint": "0".repeat(64) });
        let (v, _) = metric(Some(&param), Some(dir), &clips, 10, 0);
        assert!(
            matches!(&v, MetricEntry::Unavailable { unavailable } if unavailable.contains("changed since")),
            "{v:?}"
        );
    }
}
