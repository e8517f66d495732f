//! Hooks, sampling determinism and the embedded tiny model.

#![allow(clippy::needless_range_loop)] // (step, layer) grids read clearer with indices

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rfmx::model::musicgen::{
    CaptureHook, GenerateConfig, InjectHook, MusicgenModel, NoHook, Pool, TinySpec,
};

fn tiny_a() -> (MusicgenModel, std::collections::HashMap<String, Tensor>) {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/musicgen/tiny_a");
    let m = MusicgenModel::load_dir(&d, &Device::Cpu, DType::F32).unwrap();
    let r = candle_core::safetensors::load(d.join("refs.safetensors"), &Device::Cpu).unwrap();
    (m, r)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn unit(h: usize, seed: f32) -> Tensor {
    let v: Vec<f32> = (0..h).map(|i| ((i as f32 + 1.0) * seed).sin()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Tensor::from_vec(v.iter().map(|x| x / n).collect::<Vec<_>>(), h, &Device::Cpu).unwrap()
}

/// Injecting η·q into layer 1 at step 3 leaves everything before it bit-identical, shifts layer 1's
/// output (both CFG branches, every row) by exactly η·q, and changes the later layers.
#[test]
fn injection_changes_exactly_the_chosen_layer_and_step() {
    let (m, r) = tiny_a();
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let cfg = GenerateConfig {
        steps: 6,
        top_k: 1,
        ..Default::default()
    };
    let mut base = CaptureHook::default();
    m.generate(&cond, &cfg, &mut base).unwrap();
    let h = m.hidden_size();
    let q = unit(h, 0.7);
    let (layer, step, eta) = (1usize, 3usize, 2.5f64);
    let dirs = (0..m.num_layers())
        .map(|l| (l == layer).then(|| q.clone()))
        .collect();
    let inject = InjectHook::new(dirs, move |_, t| if t == step { eta } else { 0.0 });
    let mut hooks = (inject, CaptureHook::default());
    m.generate(&cond, &cfg, &mut hooks).unwrap();
    let steered = &hooks.1.steps;
    assert_eq!(steered.len(), 6);
    for t in 0..step {
        for l in 0..m.num_layers() {
            assert_eq!(
                bits(&steered[t][l]),
                bits(&base.steps[t][l]),
                "step {t} layer {l} changed"
            );
        }
    }
    for l in 0..layer {
        assert_eq!(bits(&steered[step][l]), bits(&base.steps[step][l]));
    }
    let got = &steered[step][layer];
    assert_eq!(got.dim(0).unwrap(), 4, "both CFG branches of 2 prompts");
    let want = base.steps[step][layer]
        .broadcast_add(&(&q * eta).unwrap())
        .unwrap();
    assert_eq!(bits(got), bits(&want), "layer {layer} is not base + η·q");
    let delta = (got - &base.steps[step][layer]).unwrap();
    let expect = (&q * eta).unwrap().broadcast_as(delta.shape()).unwrap();
    let err = common::numeric::max_abs_diff(&delta, &expect);
    assert!(err < 1e-5, "{err}");
    for l in layer + 1..m.num_layers() {
        assert_ne!(
            bits(&steered[step][l]),
            bits(&base.steps[step][l]),
            "layer {l} unaffected"
        );
    }
}

#[test]
fn capture_matches_extraction_and_pooling() {
    let (m, r) = tiny_a();
    let codes = r["tf_codes"].to_dtype(DType::U32).unwrap();
    let blocks = m.extract_blocks(&codes).unwrap();
    let pooled = m
        .extract_pooled(&codes, &[Pool::Mean, Pool::Last, Pool::Max])
        .unwrap();
    let (l, b, h) = pooled[0].dims3().unwrap();
    assert_eq!((l, b, h), (m.num_layers(), 1, m.hidden_size()));
    let t = blocks[0].dim(1).unwrap();
    for (i, blk) in blocks.iter().enumerate() {
        let v = blk.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let mean = pooled[0]
            .get(i)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let last = pooled[1]
            .get(i)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let max = pooled[2]
            .get(i)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for j in 0..h {
            let col: Vec<f32> = (0..t).map(|s| v[s][j]).collect();
            let m_ = col.iter().sum::<f32>() / t as f32;
            assert!((mean[j] - m_).abs() < 1e-5);
            assert_eq!(last[j], col[t - 1]);
            assert_eq!(max[j], col.iter().cloned().fold(f32::MIN, f32::max));
        }
    }
    // Capture during a teacher-forced pass with a hook sees the same tensors.
    let mut cap = CaptureHook::default();
    m.forward_codes(&codes, None, &mut cap).unwrap();
    for (a, b) in cap.steps[0].iter().zip(&blocks) {
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn sampling_is_deterministic_per_seed() {
    let (m, r) = tiny_a();
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let run = |seed| {
        let cfg = GenerateConfig {
            steps: 12,
            top_k: 8,
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        m.generate(&cond, &cfg, &mut NoHook)
            .unwrap()
            .codes
            .to_vec3::<u32>()
            .unwrap()
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
}

#[test]
fn kv_cache_matches_full_forward() {
    let (m, r) = tiny_a();
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let codes = r["tf_codes2"].to_dtype(DType::U32).unwrap();
    let full = m.forward_codes(&codes, Some(&cond), &mut NoHook).unwrap();
    let mut state = m
        .new_state(Some((&cond.states, cond.mask.as_ref())))
        .unwrap();
    let t = codes.dim(2).unwrap();
    let mut steps = Vec::new();
    for s in 0..t {
        let h = m
            .forward(&mut state, &codes.narrow(2, s, 1).unwrap(), s, &mut NoHook)
            .unwrap();
        steps.push(m.logits(&h).unwrap());
    }
    let inc = Tensor::cat(&steps, 2).unwrap();
    let e = common::numeric::rel_err(&inc, &full);
    assert!(e < 1e-5, "{e}");
}

#[test]
fn tiny_model_is_deterministic_and_generates() {
    let spec = TinySpec::default();
    let a = spec.weights().unwrap();
    let b = spec.weights().unwrap();
    let mut names: Vec<_> = a.keys().cloned().collect();
    names.sort();
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0usize;
    for n in &names {
        let va = bits(&a[n]);
        assert_eq!(va, bits(&b[n]), "{n}");
        hasher.update(n.as_bytes());
        for x in &va {
            hasher.update(&x.to_le_bytes());
        }
        bytes += va.len() * 4;
    }
    assert!(bytes < 8 << 20, "tiny model is {bytes} bytes");
    // Golden digest: fails if the seeded weight stream changes on any platform or version.
    assert_eq!(hasher.finalize().to_hex().as_str(), GOLDEN);
    assert!(spec.description().contains("random weights"));

    let loaded = rfmx::model::musicgen::load("tiny", &Device::Cpu, DType::F32).unwrap();
    let m = loaded.model;
    let text = Tensor::from_vec(
        (0..2 * 3 * 768)
            .map(|i| ((i as f32) * 0.013).sin())
            .collect::<Vec<_>>(),
        (2, 3, 768),
        &Device::Cpu,
    )
    .unwrap();
    let cond = m.condition(&text, None).unwrap();
    let cfg = GenerateConfig {
        steps: 8,
        seed: 3,
        ..Default::default()
    };
    let out = m.generate(&cond, &cfg, &mut NoHook).unwrap();
    assert_eq!(out.codes.dims(), &[2, 4, 5]);
    assert!(
        out.codes
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .all(|&c| c < 2048)
    );
}

const GOLDEN: &str = "1864616bd12c5ea253bfce80cb3eba2c8a8fbb029e47caabe9621b49a5345dd3";
