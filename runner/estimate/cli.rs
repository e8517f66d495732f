//! `rfmx calibrate`: the model measurements behind the estimate (docs/design.md §9), at chosen
//! batch sizes and lengths, printed as JSON lines — what `fixtures/bench_gpu.sh` compares with
//! transformers on the same device. Timings exclude the model load (printed on its own line) and
//! follow one untimed warm-up call; the device is synchronised around every timing.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::EstimateError;
use crate::model::musicgen::{
    GenerateConfig, LayerHook, Pool, RowHooks, parse_device, parse_dtype,
};
use crate::model::{ModelSource, Pipeline};
use crate::stages::generation::MeanCapture;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// tiny, random-small, a snapshot directory or a hub id in the local HF cache
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// cpu, cuda, cuda:N or metal
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto, f32, f16 or bf16
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// What to time: gen (guided generation), extract (teacher-forced extraction), or both
    #[arg(long, default_value = "gen,extract", value_delimiter = ',')]
    pub what: Vec<String>,
    /// Generation batch sizes (prompts generated together, each with its guidance twin)
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Decoder steps per generation
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Clips to extract, and how many per forward pass
    #[arg(long, default_value_t = 64)]
    pub clips: usize,
    #[arg(long, default_value_t = 16)]
    pub clip_batch: usize,
    /// Frames per clip (50 a second: 200 = the 4 s SynTheory clips)
    #[arg(long, default_value_t = 200)]
    pub frames: usize,
}

fn m(e: impl std::fmt::Display) -> EstimateError {
    EstimateError::measure(e)
}

/// Prints one JSON line per measurement; exit status 2 for an unusable device/dtype/model.
pub fn run(args: &CalibrateArgs) -> Result<(), EstimateError> {
    let bad = |spec: &str, e: &dyn std::fmt::Display| EstimateError::Device {
        spec: spec.to_string(),
        msg: e.to_string(),
    };
    for w in &args.what {
        if w != "gen" && w != "extract" {
            return Err(bad(w, &"--what takes gen and/or extract"));
        }
    }
    if args.batches.contains(&0)
        || args.steps == 0
        || args.clips == 0
        || args.clip_batch == 0
        || args.frames == 0
    {
        return Err(bad(
            "--batches/--steps/--clips/--clip-batch/--frames",
            &"must be at least 1",
        ));
    }
    let device = parse_device(&args.device).map_err(|e| bad(&args.device, &e))?;
    let dtype = parse_dtype(&args.dtype, &device).map_err(|e| bad(&args.dtype, &e))?;
    let source = ModelSource::parse(&args.model);
    let t = Instant::now();
    let pipe = Pipeline::load(&source, &device, dtype).map_err(|e| bad(&args.model, &e))?;
    device.synchronize().map_err(m)?;
    let base = json!({
        "impl": "rfmx",
        "model": source.label(),
        "hidden": pipe.decoder.hidden_size(),
        "layers": pipe.decoder.num_layers(),
        "device": super::calibrate::device_label(&device),
        "dtype": format!("{dtype:?}").to_lowercase(),
    });
    let line = |extra: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        println!("{v}");
    };
    line(json!({"task": "load", "seconds": t.elapsed().as_secs_f64()}));
    let dec = &pipe.decoder;
    if args.what.iter().any(|w| w == "gen") {
        for &b in &args.batches {
            let cond = pipe
                .condition(&vec!["calibration".to_string(); b])
                .map_err(m)?;
            let cfg = |steps| GenerateConfig {
                steps,
                ..GenerateConfig::default()
            };
            // The generation node's batched path (docs/design.md, batched generation): one RNG
            // and one hook per row, here each row's capture of the block outputs (a baseline).
            let seeds: Vec<u64> = (0..b as u64).collect();
            let run = |steps: usize| {
                let mut caps: Vec<MeanCapture> = (0..b)
                    .map(|_| MeanCapture::new(dec.num_layers(), 1))
                    .collect();
                let hooks = caps.iter_mut().map(|c| c as &mut dyn LayerHook).collect();
                let mut hooks = RowHooks::new(hooks, cfg(steps).guidance_scale != 1.0);
                dec.generate_seeded(&cond, &cfg(steps), &seeds, &mut hooks)
            };
            // A short untimed run compiles the kernels and sizes the allocator's pools.
            run(dec.num_codebooks() + 1).map_err(m)?;
            device.synchronize().map_err(m)?;
            let t = Instant::now();
            run(args.steps.max(dec.num_codebooks())).map_err(m)?;
            device.synchronize().map_err(m)?;
            let s = t.elapsed().as_secs_f64();
            line(
                json!({"task": "generate_cfg", "batch": b, "steps": args.steps, "seconds": s,
                        "steps_per_s": args.steps as f64 / s}),
            );
        }
    }
    if args.what.iter().any(|w| w == "extract") {
        let k = dec.num_codebooks();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut batch = |b: usize| -> Result<Tensor, EstimateError> {
            let codes: Vec<u32> = (0..b * k * args.frames)
                .map(|_| rng.random_range(0..2048u32))
                .collect();
            Tensor::from_vec(codes, (b, k, args.frames), &device).map_err(m)
        };
        let sizes: Vec<usize> = (0..args.clips)
            .step_by(args.clip_batch)
            .map(|s| args.clip_batch.min(args.clips - s))
            .collect();
        let inputs = sizes
            .iter()
            .map(|&b| batch(b))
            .collect::<Result<Vec<_>, _>>()?;
        let extract = |codes: &Tensor| -> Result<(), EstimateError> {
            let pooled = dec.extract_pooled(codes, &[Pool::Mean]).map_err(m)?;
            // The activations node copies the pooled rows to the host: part of the work.
            pooled[0]
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(&Device::Cpu))
                .map_err(m)?;
            Ok(())
        };
        extract(&inputs[0])?;
        device.synchronize().map_err(m)?;
        let t = Instant::now();
        for codes in &inputs {
            extract(codes)?;
        }
        device.synchronize().map_err(m)?;
        let s = t.elapsed().as_secs_f64();
        line(
            json!({"task": "extract", "batch": args.clip_batch, "clips": args.clips,
                    "frames": args.frames, "seconds": s, "clips_per_s": args.clips as f64 / s}),
        );
    }
    Ok(())
}
