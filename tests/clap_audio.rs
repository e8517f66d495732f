//! The HTSAT audio encoder and audio projection against transformers' own outputs on the tiny CLAP
//! fixtures (fixtures/make_clap.py: refs_<variant>.safetensors, computed with transformers' code on
//! the very features stored beside them). Tolerances: relative max error ≤ 1e-4 of the reference's
//! largest magnitude, for the mel image, the pooled output and the projected L2-normalised embedding.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rfmx::clap_model::ClapError;
use rfmx::clap_model::config::ClapConfig;
use rfmx::clap_model::htsat::{HtsatEncoder, Projection};

mod common;
use common::clap_fixtures::{fixtures, refs};
use common::numeric::rel_err;

const TOL: f32 = 1e-4;

struct Fixture {
    encoder: HtsatEncoder,
    projection: Projection,
    refs: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(variant: &str) -> Self {
        let dir = fixtures().join(variant);
        let cfg = ClapConfig::load(&dir).unwrap();
        let weights =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let encoder =
            HtsatEncoder::load(vb.pp("audio_model.audio_encoder"), &cfg.audio_config).unwrap();
        let projection = Projection::load(
            vb.pp("audio_projection"),
            cfg.audio_config.hidden_size,
            cfg.projection_dim,
        )
        .unwrap();
        let (refs, _) = refs(variant);
        Self {
            encoder,
            projection,
            refs,
        }
    }

    fn get(&self, name: &str) -> &Tensor {
        &self.refs[name]
    }

    fn is_longer(&self, clip: &str) -> Vec<bool> {
        self.get(&format!("is_longer_{clip}"))
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v != 0.0)
            .collect()
    }

    fn embed(&self, pooler: &Tensor) -> Tensor {
        let p = self.projection.forward(pooler).unwrap();
        let norm = p.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
        p.broadcast_div(&norm).unwrap()
    }
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    let err = rel_err(got, want);
    eprintln!("{what}: max rel err {err:.3e}");
    assert!(err <= TOL, "{what}: max rel err {err:.3e} > {TOL:e}");
}

fn matches_transformers(variant: &str) {
    let fx = Fixture::load(variant);
    let img = fx.encoder.mel2img(fx.get("features_a")).unwrap();
    check(&format!("{variant} mel2img_a"), &img, fx.get("mel2img_a"));
    for clip in ["a", "b"] {
        let features = fx.get(&format!("features_{clip}"));
        let t = std::time::Instant::now();
        let pooler = fx.encoder.forward(features, &fx.is_longer(clip)).unwrap();
        eprintln!("{variant} forward {clip}: {:?}", t.elapsed());
        check(
            &format!("{variant} pooler_{clip}"),
            &pooler,
            fx.get(&format!("pooler_{clip}")),
        );
        check(
            &format!("{variant} audio_{clip}"),
            &fx.embed(&pooler),
            fx.get(&format!("audio_{clip}")),
        );
    }
}

#[test]
fn unfused_encoder_matches_transformers() {
    matches_transformers("tiny_clap");
}

#[test]
fn fused_encoder_matches_transformers() {
    matches_transformers("tiny_clap_fused");
}

/// A batch is rows run alone: the fused rows (is_longer) and the global-only rows are put back in
/// their places.
#[test]
fn fused_batch_mixes_longer_and_plain_rows() {
    let fx = Fixture::load("tiny_clap_fused");
    assert_eq!(fx.is_longer("a"), [true]);
    let a = fx.get("features_a");
    let b = fx.get("features_b");
    let batch = Tensor::cat(&[b, a], 0).unwrap();
    let pooled = fx.encoder.forward(&batch, &[false, true]).unwrap();
    let plain_b = fx.encoder.forward(b, &[false]).unwrap();
    check(
        "fused batch row 0 (b, not longer)",
        &pooled.narrow(0, 0, 1).unwrap(),
        &plain_b,
    );
    check(
        "fused batch row 1 (a, longer)",
        &pooled.narrow(0, 1, 1).unwrap(),
        fx.get("pooler_a"),
    );
    // The fusion path has to change the result, or the row-1 check above proves nothing about it.
    let unfused_a = fx.encoder.forward(a, &[false]).unwrap();
    assert!(rel_err(&unfused_a, fx.get("pooler_a")) > 1e-2);
}

#[test]
fn unfused_batch_rows_match_single_clips() {
    let fx = Fixture::load("tiny_clap");
    let batch = Tensor::cat(&[fx.get("features_a"), fx.get("features_b")], 0).unwrap();
    let pooled = fx.encoder.forward(&batch, &[false, false]).unwrap();
    for (row, clip) in ["a", "b"].iter().enumerate() {
        check(
            &format!("unfused batch row {row}"),
            &pooled.narrow(0, row, 1).unwrap(),
            fx.get(&format!("pooler_{clip}")),
        );
    }
}

#[test]
fn wrong_shapes_are_input_errors() {
    let fx = Fixture::load("tiny_clap_fused");
    let plain = Fixture::load("tiny_clap");
    let dev = Device::Cpu;
    let input = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &dev).unwrap();
    let expect = |r: Result<Tensor, ClapError>, needle: &str| match r {
        Err(ClapError::Input(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        Err(e) => panic!("not an input error: {e}"),
        Ok(t) => panic!("accepted, gave {:?}", t.dims()),
    };
    expect(
        fx.encoder.forward(&input(&[1, 1, 1001, 64]), &[true]),
        "1 channels",
    );
    expect(
        plain.encoder.forward(&input(&[1, 4, 1001, 64]), &[false]),
        "4 channels",
    );
    expect(
        fx.encoder.forward(&input(&[1, 4, 1025, 64]), &[true]),
        "1025 frames",
    );
    expect(
        fx.encoder.forward(&input(&[1, 4, 0, 64]), &[true]),
        "0 frames",
    );
    expect(
        fx.encoder.forward(&input(&[1, 4, 1001, 63]), &[true]),
        "63 mel bins",
    );
    expect(
        fx.encoder.forward(&input(&[4, 1001, 64]), &[true]),
        "[4, 1001, 64]",
    );
    expect(
        fx.encoder.forward(&input(&[2, 4, 1001, 64]), &[true]),
        "is_longer has 1",
    );
    expect(fx.encoder.mel2img(&input(&[1, 4, 1001, 32])), "32 mel bins");
    let nan = (input(&[1, 1, 1001, 64]) / 0.0).unwrap();
    expect(plain.encoder.forward(&nan, &[false]), "non-finite");
    // A full-length input needs no stretch and is accepted.
    let full = plain
        .encoder
        .forward(&input(&[1, 1, 1024, 64]), &[false])
        .unwrap();
    assert_eq!(full.dims(), [1, 64]);
}
