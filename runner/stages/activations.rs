//! `activations[<concept>,<pooling>]`: every clip of the input dataset is encoded to codes with
//! EnCodec and fed teacher-forced to the decoder (codes directly: no text, no delay pattern, no
//! BOS — the authors' extraction); each requested layer's block output is pooled over time.
//!
//! Outputs: `features.safetensors` with `layer.<l>` = [n, hidden] f32 and `index.json`
//! {n, hidden, layers, pooling, classes, labels, model, ...}. The model is named by execution
//! hints (name, path, device) and keyed by its fingerprint. Within one process the codes of a
//! dataset are computed once and shared by the activations nodes of its other poolings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::contract::Output;
use super::{StageError, save_tensors};
use crate::dag::{NodeCtx, NodeError, NodeKind};
use crate::data::Dataset;
use crate::data::RendererInfo;
use crate::model::musicgen::{Pool, parse_device};
use crate::model::{ModelSource, Pipeline, Precision};

/// Clips per forward pass (a hint: it does not change the features beyond float rounding).
pub const DEFAULT_BATCH: usize = 16;

type CodesCell = Arc<Mutex<Option<Arc<Vec<Tensor>>>>>;

/// Codes per batch, keyed by (dataset dir, model fingerprint, device, batch size).
fn codes_cache() -> &'static Mutex<HashMap<String, CodesCell>> {
    static CACHE: OnceLock<Mutex<HashMap<String, CodesCell>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

#[derive(Deserialize)]
struct Params {
    concept: String,
    pooling: String,
    layers: Vec<usize>,
    /// `[model] dtype` resolved (always in this kind's key; "f32" before the knob existed).
    #[serde(default)]
    dtype: Precision,
}

/// `index.json` of an activations node: what the rows of `features.safetensors` are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationsIndex {
    pub concept: String,
    pub n: usize,
    pub hidden: usize,
    pub layers: Vec<usize>,
    pub pooling: String,
    /// The classes present, in the concept's order.
    pub classes: Vec<String>,
    /// Each row's class.
    pub labels: Vec<String>,
    /// Each row's GM program.
    pub programs: Vec<u8>,
    /// The model that produced the features (a description naming random weights as such).
    pub model: String,
    pub model_fingerprint: String,
    pub renderer: RendererInfo,
}

impl Output for ActivationsIndex {
    const FILE: &'static str = "index.json";
}

pub struct ActivationsNode;

impl NodeKind for ActivationsNode {
    fn name(&self) -> &'static str {
        "activations"
    }
    fn version(&self) -> u32 {
        // 2: the vectorised exact-erf GELU and the per-tap EnCodec convolutions change the
        //    features in their last digits.
        2
    }
    fn resources(&self, node: &crate::dag::PlannedNode) -> crate::dag::Resources {
        crate::dag::Resources::heavy(node.hints["device"].as_str())
    }
    fn run(&self, ctx: &mut NodeCtx<'_>) -> Result<(), NodeError> {
        let p: Params = ctx.params_as()?;
        let pool: Pool = p.pooling.parse()?;
        let ds = Dataset::open(ctx.input("dataset")?)?;
        if ds.is_empty() {
            return Err(
                StageError::Input(format!("dataset for {} has no clips", p.concept)).into(),
            );
        }
        let hint = |k: &str| ctx.hints.get(k).and_then(|v| v.as_str()).map(String::from);
        let name = hint("model").unwrap_or_else(|| "tiny".into());
        let path = hint("model_path");
        let device = parse_device(&hint("device").unwrap_or_else(|| "cpu".into()))?;
        let batch = ctx
            .hints
            .get("batch")
            .and_then(|v| v.as_u64())
            .map_or(DEFAULT_BATCH, |b| b.max(1) as usize);
        let source = ModelSource::from_spec(&name, path.as_deref().map(std::path::Path::new));
        let pipe = Pipeline::shared(&source, &device, p.dtype.dtype())?;
        if let Some(fp) = hint("fingerprint")
            && fp != pipe.fingerprint
        {
            return Err(StageError::Input(format!(
                "model `{name}` changed since the run was planned (fingerprint {} != {}); run again",
                &pipe.fingerprint[..12.min(pipe.fingerprint.len())],
                &fp[..12.min(fp.len())]
            ))
            .into());
        }
        let n_layers = pipe.decoder.num_layers();
        if let Some(l) = p.layers.iter().find(|&&l| l >= n_layers) {
            return Err(StageError::Input(format!(
                "extract.layers: layer {l} does not exist ({n_layers} decoder layers)"
            ))
            .into());
        }
        let hidden = pipe.decoder.hidden_size();
        let rate = pipe.sample_rate();
        if ds.manifest.model_rate != rate {
            return Err(StageError::Input(format!(
                "dataset audio is at {} Hz but the model's codec expects {rate} Hz",
                ds.manifest.model_rate
            ))
            .into());
        }
        ctx.log(&format!(
            "{} clips, model {} (hidden {hidden}, {n_layers} layers), pooling {}, layers {:?}, batch {batch}",
            ds.len(),
            pipe.description,
            p.pooling,
            p.layers
        ));
        let n = ds.len();
        let mut rows: Vec<Vec<f32>> = vec![Vec::with_capacity(n * hidden); p.layers.len()];
        // Batches of equal-length clips (every SynTheory clip is 4 s).
        let mut bounds = Vec::new();
        let mut start = 0;
        while start < n {
            let len = ds.clips[start].len_32k;
            let mut end = start + 1;
            while end < n && end - start < batch && ds.clips[end].len_32k == len {
                end += 1;
            }
            bounds.push((start, end));
            start = end;
        }
        // The codes of a dataset are shared by the activations nodes of its other poolings run
        // by this process (a concurrent node for the same dataset waits for them).
        let cache_key = format!(
            "{}|{}|{:?}|{batch}",
            ctx.input("dataset")?.display(),
            pipe.fingerprint,
            pipe.decoder.device().location()
        );
        let cell = codes_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cache_key)
            .or_default()
            .clone();
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        let codes = match &*slot {
            Some(c) => {
                ctx.log("codes shared with an earlier activations node of this run");
                c.clone()
            }
            None => {
                let mut all = Vec::with_capacity(bounds.len());
                ctx.progress(0, n as u64, "encoding");
                for &(start, end) in &bounds {
                    let len = ds.clips[start].len_32k as usize;
                    let mut audio = Vec::with_capacity((end - start) * len);
                    for i in start..end {
                        audio.extend(ds.audio_32k(i)?);
                    }
                    let x = Tensor::from_vec(audio, (end - start, 1, len), pipe.decoder.device())?;
                    all.push(pipe.encode_audio(&x)?);
                    ctx.progress(end as u64, n as u64, "encoding");
                }
                let all = Arc::new(all);
                *slot = Some(all.clone());
                all
            }
        };
        drop(slot);
        ctx.progress(0, n as u64, "extracting");
        for (codes, &(_, end)) in codes.iter().zip(&bounds) {
            let pooled = pipe.decoder.extract_pooled(codes, &[pool])?;
            let all = pooled
                .into_iter()
                .next()
                .ok_or_else(|| StageError::Input("no pooled features returned".into()))?;
            for (slot, &l) in p.layers.iter().enumerate() {
                let t = all
                    .get(l)?
                    .to_dtype(DType::F32)?
                    .to_device(&candle_core::Device::Cpu)?;
                rows[slot].extend(t.flatten_all()?.to_vec1::<f32>()?);
            }
            ctx.progress(end as u64, n as u64, "extracting");
        }
        let mut tensors = HashMap::new();
        for (slot, &l) in p.layers.iter().enumerate() {
            let data = std::mem::take(&mut rows[slot]);
            if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
                return Err(StageError::Input(format!(
                    "non-finite activation at layer {l}, clip {}",
                    bad / hidden
                ))
                .into());
            }
            tensors.insert(
                format!("layer.{l}"),
                Tensor::from_vec(data, (n, hidden), &candle_core::Device::Cpu)?,
            );
        }
        save_tensors(&ctx.out_dir.join("features.safetensors"), &tensors)?;
        let concept = crate::data::Concept::parse(&p.concept)
            .ok_or_else(|| StageError::Input(format!("unknown concept {}", p.concept)))?;
        let present: std::collections::BTreeSet<&str> =
            ds.clips.iter().map(|c| c.class.as_str()).collect();
        let classes: Vec<String> = concept
            .classes()
            .into_iter()
            .filter(|c| present.contains(c.as_str()))
            .collect();
        ActivationsIndex {
            concept: p.concept.clone(),
            n,
            hidden,
            layers: p.layers.clone(),
            pooling: p.pooling.clone(),
            classes,
            labels: ds.clips.iter().map(|c| c.class.clone()).collect(),
            programs: ds.clips.iter().map(|c| c.program).collect(),
            model: pipe.description.clone(),
            model_fingerprint: pipe.fingerprint.clone(),
            renderer: ds.manifest.renderer.clone(),
        }
        .write(ctx.out_dir)?;
        Ok(())
    }
}
