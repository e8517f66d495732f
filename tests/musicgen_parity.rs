//! Parity of the candle MusicGen decoder with transformers on tiny random models
//! (fixtures/make_musicgen.py). Tolerance: rel = max|a − b| / max|b| ≤ 1e-4 per tensor (f32, CPU);
//! greedy CFG codes must match exactly.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rfmx::model::musicgen::{CaptureHook, GenerateConfig, MusicgenModel, NoHook};

const TOL: f32 = 1e-4;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/musicgen")
        .join(name)
}

fn load(name: &str) -> (MusicgenModel, HashMap<String, Tensor>) {
    let model = MusicgenModel::load_dir(&dir(name), &Device::Cpu, DType::F32).unwrap();
    let refs =
        candle_core::safetensors::load(dir(name).join("refs.safetensors"), &Device::Cpu).unwrap();
    (model, refs)
}

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let e = common::numeric::rel_err(a, b);
    eprintln!("rel {e:e}");
    e
}

fn codes(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn check_blocks_nocond(name: &str) {
    let (m, r) = load(name);
    let blocks = m.extract_blocks(&codes(&r["tf_codes"])).unwrap();
    let want = &r["tf_blocks_nocond"];
    assert_eq!(blocks.len(), want.dim(0).unwrap());
    for (l, got) in blocks.iter().enumerate() {
        let e = rel(got, &want.get(l).unwrap());
        assert!(e <= TOL, "{name} layer {l}: rel {e:e}");
    }
}

fn check_cond_forward(name: &str) {
    let (m, r) = load(name);
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let mut cap = CaptureHook::default();
    let logits = m
        .forward_codes(&codes(&r["tf_codes2"]), Some(&cond), &mut cap)
        .unwrap();
    let want = &r["tf_blocks_cond"];
    for (l, got) in cap.steps[0].iter().enumerate() {
        let e = rel(got, &want.get(l).unwrap());
        assert!(e <= TOL, "{name} cond layer {l}: rel {e:e}");
    }
    let e = rel(&logits, &r["tf_logits_cond"]);
    assert!(e <= TOL, "{name} logits: rel {e:e}");
}

fn check_greedy_cfg(name: &str) {
    let (m, r) = load(name);
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let want = codes(&r["gen_codes"]);
    let steps = r["gen_scores"].dim(0).unwrap();
    let cfg = GenerateConfig {
        steps,
        guidance_scale: 3.0,
        top_k: 1,
        temperature: 1.0,
        seed: 0,
    };
    let got = m.generate(&cond, &cfg, &mut NoHook).unwrap();
    assert_eq!(got.codes.dims(), want.dims());
    assert_eq!(
        got.codes.to_vec3::<u32>().unwrap(),
        want.to_vec3::<u32>().unwrap(),
        "{name}: greedy CFG codes differ"
    );
}

/// The CFG-combined scores of the first step (BOS input), computed through the public API.
fn check_cfg_step_logits(name: &str) {
    let (m, r) = load(name);
    let cond = m
        .condition(&r["text_states"], Some(&r["text_mask"]))
        .unwrap();
    let b = cond.batch().unwrap();
    let k = m.num_codebooks();
    // Step 0 input: BOS in every codebook, which the delay mask turns into the pad id.
    let pad = m.config().decoder.pad_token() as u32;
    let input = Tensor::from_vec(vec![pad; b * k], (b, k, 1), &Device::Cpu).unwrap();
    let lc = m.forward_codes(&input, Some(&cond), &mut NoHook).unwrap();
    let uncond = rfmx::model::musicgen::Condition {
        states: cond.uncond_states.clone(),
        mask: cond.uncond_mask.clone(),
        uncond_states: cond.uncond_states.clone(),
        uncond_mask: cond.uncond_mask.clone(),
    };
    let lu = m.forward_codes(&input, Some(&uncond), &mut NoHook).unwrap();
    let g = ((lc - &lu).unwrap() * 3.0).unwrap();
    let combined = (lu + g).unwrap().squeeze(2).unwrap(); // [B, K, V]
    let want = r["gen_scores"].get(0).unwrap(); // [B*K, V]
    let want = want.reshape(combined.dims()).unwrap();
    let e = rel(&combined, &want);
    assert!(e <= TOL, "{name} CFG step-0 scores: rel {e:e}");
}

#[test]
fn tiny_a_block_outputs_without_text() {
    check_blocks_nocond("tiny_a");
}
#[test]
fn tiny_b_block_outputs_without_text() {
    check_blocks_nocond("tiny_b");
}
#[test]
fn tiny_a_conditioned_blocks_and_logits() {
    check_cond_forward("tiny_a");
}
#[test]
fn tiny_b_conditioned_blocks_and_logits() {
    check_cond_forward("tiny_b");
}
#[test]
fn tiny_a_cfg_step_scores() {
    check_cfg_step_logits("tiny_a");
}
#[test]
fn tiny_b_cfg_step_scores() {
    check_cfg_step_logits("tiny_b");
}
#[test]
fn tiny_a_greedy_cfg_codes() {
    check_greedy_cfg("tiny_a");
}
#[test]
fn tiny_b_greedy_cfg_codes() {
    check_greedy_cfg("tiny_b");
}
