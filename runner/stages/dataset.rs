//! `dataset[<concept>]`: renders a SynTheory concept dataset (`crate::data::build`) into the node's
//! output dir: `audio_32k.f32`, `clips.json`, `labels.csv`, `manifest.json` (the data::store
//! layout; the 44.1 kHz renders are not kept — `rfmx data export --native` writes them).
//!
//! Params: {concept, per_class (null = all), instruments (null = all), soundfont, seed}. The
//! SoundFont enters the key by content: `{"blake3": hash}` (its path is an execution hint), or
//! `{"missing": path}` when the file cannot be read at plan time (the node then fails naming
//! `data.soundfont`), or null for the built-in synthesizer.
//!
//! A folder dataset (`[data] source = { kind = "folder" }`, docs/design.md §5) is the same kind
//! with params `{folder: FolderConfig}`: the concept, clip/hop lengths, the CSV's (file, class)
//! rows of that concept, and the fingerprint of those files (an [`External`] checked again before
//! the node runs). The folder's path is a hint; the key holds relative names and content only.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::dag::NodeSpec;
use crate::dag::{NodeCtx, NodeError, NodeKind};
use crate::data::folder::{FolderConfig, FolderLabels};
use crate::data::{Concept, DEFAULT_SOUNDFONT, DataError, DatasetConfig};
use crate::external::External;
use crate::spec::schema::DataSource;

/// The hash domain of a folder dataset's audio files (`crate::external::of_files`).
const FOLDER_TAG: &[u8] = b"rfmx folder dataset audio\0";

/// The `dataset[<concept>]` node of a folder source: keyed by the concept's labelled rows and
/// their files' content (not by the CSV's other columns, so relabelling one concept re-extracts
/// only that concept).
pub fn folder_node(
    id: String,
    concept: Concept,
    src: &DataSource,
    labels: &FolderLabels,
) -> Result<NodeSpec, String> {
    let rows = labels.rows_of(concept);
    let files = rows.iter().map(|(f, _)| labels.folder.join(f)).collect();
    let ext = External::files("audio folder", FOLDER_TAG, files)
        .map_err(|e| format!("data.source: cannot read {e}"))?;
    let cfg = FolderConfig {
        concept: concept.name().to_string(),
        clip_seconds: src.clip_seconds,
        hop_seconds: src.hop_seconds,
        rows,
        fingerprint: ext.fingerprint.clone(),
    };
    let params = super::with_concept_defs(json!({ "folder": cfg }), [concept]);
    Ok(NodeSpec::new(id, "dataset", params)
        .hints(json!({ "folder": labels.folder.display().to_string() }))
        .external(Some(ext)))
}

/// (params value, hint path, external input) of the SoundFont a dataset renders with: the spec's
/// path, else the default SoundFont when installed, else none (built-in synth). Hashed once per
/// process however many sweep points use it (`crate::external`).
pub fn soundfont_param(spec: Option<&str>) -> (Value, Value, Option<External>) {
    let path = match spec {
        Some(p) => PathBuf::from(p),
        None if Path::new(DEFAULT_SOUNDFONT).is_file() => PathBuf::from(DEFAULT_SOUNDFONT),
        None => return (Value::Null, Value::Null, None),
    };
    let shown = path.display().to_string();
    match External::file("SoundFont", &path) {
        Ok(e) => (json!({ "blake3": e.fingerprint }), json!(shown), Some(e)),
        Err(_) => (json!({ "missing": shown }), json!(shown), None),
    }
}

#[derive(Deserialize)]
struct Params {
    concept: String,
    per_class: Option<usize>,
    instruments: Option<Vec<u32>>,
    soundfont: Option<Value>,
    seed: u64,
}

/// The dataset node's `manifest.json` is the data store's manifest (what was rendered, how).
impl super::contract::Output for crate::data::store::Manifest {
    const FILE: &'static str = "manifest.json";
}

pub struct DatasetNode;

impl NodeKind for DatasetNode {
    fn name(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    /// Rendering is spread over every core (rayon).
    fn resources(&self, _node: &crate::dag::PlannedNode) -> crate::dag::Resources {
        crate::dag::Resources::heavy(None)
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        if let Some(folder) = ctx.params.get("folder") {
            let cfg: FolderConfig = serde_json::from_value(folder.clone())
                .map_err(|e| format!("bad params for {}: {e}", ctx.id))?;
            let dir = ctx
                .hints
                .get("folder")
                .and_then(Value::as_str)
                .ok_or("dataset node: folder params without a folder hint")?;
            ctx.log(&format!(
                "decoding {} file(s) of {} from {dir}",
                cfg.rows.len(),
                cfg.concept
            ));
            let progress = ctx.progress;
            let ds =
                crate::data::folder::build(&cfg, Path::new(dir), ctx.out_dir, &|done, total| {
                    progress(done as u64, total as u64, "decoding files")
                })?;
            ctx.log(&format!(
                "{} clips kept ({} all-zero dropped) from {} files",
                ds.manifest.kept,
                ds.manifest.silent_dropped,
                cfg.rows.len()
            ));
            return Ok(());
        }
        let cfg = dataset_config(ctx.params, ctx.hints)?;
        ctx.log(&format!("building {}", serde_json::to_string(&cfg)?));
        let progress = ctx.progress;
        let ds = crate::data::build(&cfg, ctx.out_dir, &|done, total| {
            progress(done as u64, total as u64, "rendering clips")
        })?;
        ctx.log(&format!(
            "{} clips kept ({} rendered, {} silent dropped), renderer {:?}",
            ds.manifest.kept,
            ds.manifest.rendered,
            ds.manifest.silent_dropped,
            ds.manifest.renderer
        ));
        Ok(())
    }
}

/// The data configuration a dataset node builds, from its params and hints (the SoundFont's path
/// is a hint; a file that changed since planning is refused). Shared with the estimate
/// (docs/design.md §9), which counts and times the same clips.
pub fn dataset_config(params: &Value, hints: &Value) -> Result<DatasetConfig, NodeError> {
    let p: Params = serde_json::from_value(params.clone())?;
    let mut cfg = DatasetConfig::new(&p.concept);
    cfg.per_class = p.per_class;
    cfg.seed = p.seed;
    cfg.native = false;
    cfg.instruments = match p.instruments {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|&x| {
                    u8::try_from(x).ok().filter(|x| *x < 128).ok_or_else(|| {
                        format!("data.instruments: GM program {x} is outside 0..=127")
                    })
                })
                .collect::<Result<Vec<u8>, String>>()?,
        ),
    };
    match &p.soundfont {
        None => cfg.builtin_synth = true,
        Some(sf) => {
            let path = hints
                .get("soundfont_path")
                .and_then(Value::as_str)
                .or_else(|| sf.get("missing").and_then(Value::as_str))
                .ok_or("dataset node: SoundFont param without a soundfont_path hint")?;
            let path = PathBuf::from(path);
            let renderer = crate::data::Renderer::soundfont(&path)?;
            if let (Some(want), crate::data::RendererInfo::Soundfont { blake3, .. }) =
                (sf.get("blake3").and_then(Value::as_str), renderer.info())
                && want != blake3
            {
                return Err(DataError::SoundFont {
                    path,
                    reason: "the file changed since the run was planned; run again".into(),
                }
                .into());
            }
            cfg.soundfont = Some(path);
        }
    }
    Ok(cfg)
}
