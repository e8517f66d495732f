//! The generation node's work on the embedded model, with directions written through the
//! directions node's own output types (`common::directions`).

#![allow(clippy::needless_range_loop)]

mod common;
use common::directions::write_directions;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rfmx::model::{ModelSource, Pipeline, Precision};
use rfmx::spec::schema::{EtaMode, GateMode, LayerStrategy, Pooling, Schedule};
use rfmx::stages::generation::{GenParams, GenerationInputs, gate_seed, run_generation};
use rfmx::steer::gate::Gate;
use rfmx::steer::layers::layer_weights;
use serde_json::Value;

fn params(eta: f64, target: Option<&str>) -> GenParams {
    GenParams {
        target: target.map(String::from),
        schedule: target.map(|_| Schedule::LinearUp),
        layers: target.map(|_| LayerStrategy::Exponential {
            w0: 1.0,
            kappa: 0.95,
        }),
        gate: if target.is_some() { 0.5 } else { 1.0 },
        gate_mode: GateMode::PerStep,
        eta,
        eta_mode: EtaMode::Absolute,
        prompt: "solo piano".into(),
        seed: 4,
        seconds: 0.3,
        cfg: 3.0,
        pooling: Pooling::Mean,
        constants: None,
        dtype: Precision::F32,
    }
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn generation_writes_audio_codes_and_the_realised_trace() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let (layers, hidden) = (pipe.decoder.num_layers(), pipe.decoder.hidden_size());
    let tmp = tempfile::tempdir().unwrap();
    let dirs = tmp.path().join("dirs");
    let qs: Vec<(usize, Vec<f32>)> = (0..layers)
        .map(|l| {
            (
                l,
                (0..hidden).map(|i| ((i * (l + 2)) as f32).sin()).collect(),
            )
        })
        .collect();
    let val = [0.6, 0.9, 0.8, 0.7];
    write_directions(&dirs, &qs, &val, 1);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let p = params(1.5, Some("notes:C"));
    let inputs = GenerationInputs {
        probes: Default::default(),
        params: &p,
        direction_dirs: vec![dirs.as_path()],
    };
    let t0 = std::time::Instant::now();
    run_generation(&pipe, "tiny", &inputs, &out).unwrap();
    eprintln!("one 0.3 s generation: {:.2}s", t0.elapsed().as_secs_f64());
    // 0.3 s = 15 frames at 50 Hz, + 3 delay steps.
    let steps = 18;
    let codes = Tensor::read_npy(out.join("codes.npy")).unwrap();
    assert_eq!(codes.dims(), &[4, 15]);
    assert_eq!(codes.dtype(), DType::I64);
    let (wav, ch, sr) = rfmx::audio::wav::read(&out.join("audio.wav")).unwrap();
    assert_eq!((ch, sr), (1, 32_000));
    assert_eq!(wav.len(), 15 * 640);
    let trace = read(&out.join("trace.json"));
    assert_eq!(trace["steps"], steps);
    assert_eq!(trace["layers"], layers);
    let w = layer_weights(
        &LayerStrategy::Exponential {
            w0: 1.0,
            kappa: 0.95,
        },
        &val,
    )
    .unwrap();
    let gate = Gate::draw(0.5, GateMode::PerStep, steps, layers, gate_seed(4, 0)).unwrap();
    let mut on = 0;
    for t in 0..steps {
        let phi = t as f64 / steps as f64;
        assert!((trace["phi"][t].as_f64().unwrap() - phi).abs() < 1e-12);
        assert_eq!(trace["psi"][t].as_f64().unwrap(), gate.psi(t, 0));
        on += gate.psi(t, 0) as usize;
        for l in 0..layers {
            let want = 1.5 * w[l] * phi * gate.psi(t, l);
            let got = trace["eta_lt"][t][l].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "t {t} l {l}: {got} vs {want}");
        }
    }
    assert!(on > 0 && on < steps, "gate p = 0.5 never switched: {on}");
    let meta = read(&out.join("meta.json"));
    assert_eq!(meta["target"], "notes:C");
    assert_eq!(meta["schedule"], "linear_up");
    assert_eq!(meta["eta"], 1.5);
    for f in ["features.safetensors", "captured.safetensors"] {
        let t = candle_core::safetensors::load(out.join(f), &Device::Cpu).unwrap();
        assert_eq!(t.len(), layers, "{f}");
        assert_eq!(t["layer.0"].dims(), &[hidden]);
    }
    // Steering changed the captured activations relative to the baseline of the same seed.
    let base_out = tmp.path().join("base");
    std::fs::create_dir_all(&base_out).unwrap();
    let bp = params(0.0, None);
    run_generation(
        &pipe,
        "tiny",
        &GenerationInputs {
            probes: Default::default(),
            params: &bp,
            direction_dirs: vec![],
        },
        &base_out,
    )
    .unwrap();
    let bt = read(&base_out.join("trace.json"));
    assert!(
        bt["eta_lt"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .all(|v| v.as_f64() == Some(0.0))
    );
    let a = candle_core::safetensors::load(out.join("captured.safetensors"), &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(base_out.join("captured.safetensors"), &Device::Cpu)
        .unwrap();
    let d = common::numeric::max_abs_diff(&a["layer.1"], &b["layer.1"]);
    assert!(d > 1e-3, "steering left layer 1 unchanged ({d})");
}

#[test]
fn absurd_eta_fails_with_a_non_finite_error() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let (layers, hidden) = (pipe.decoder.num_layers(), pipe.decoder.hidden_size());
    let tmp = tempfile::tempdir().unwrap();
    let dirs = tmp.path().join("dirs");
    let qs: Vec<(usize, Vec<f32>)> = (0..layers).map(|l| (l, vec![1.0; hidden])).collect();
    write_directions(&dirs, &qs, &[0.5, 0.6, 0.7, 0.8], 0);
    let mut p = params(1e39, Some("notes:C"));
    p.gate = 1.0;
    p.schedule = Some(Schedule::Constant);
    let err = run_generation(
        &pipe,
        "tiny",
        &GenerationInputs {
            probes: Default::default(),
            params: &p,
            direction_dirs: vec![dirs.as_path()],
        },
        tmp.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn a_two_term_target_sums_both_terms_in_the_trace() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let (layers, hidden) = (pipe.decoder.num_layers(), pipe.decoder.hidden_size());
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    // Term a: layers 0 and 2; term b: layers 2 and 3 (different validation scores).
    write_directions(
        &da,
        &[(0, vec![1.0; hidden]), (2, vec![0.5; hidden])],
        &[0.9, 0.0, 0.7, 0.0],
        0,
    );
    let qb: Vec<f32> = (0..hidden).map(|i| (i as f32).cos()).collect();
    write_directions(&db, &[(2, qb.clone()), (3, qb)], &[0.0, 0.0, 0.6, 0.8], 3);
    let mut p = params(0.7, Some("notes:C + notes:G"));
    p.gate = 1.0;
    p.schedule = Some(Schedule::Sine);
    p.layers = Some(LayerStrategy::All);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    run_generation(
        &pipe,
        "tiny",
        &GenerationInputs {
            probes: Default::default(),
            params: &p,
            direction_dirs: vec![da.as_path(), db.as_path()],
        },
        &out,
    )
    .unwrap();
    let trace = read(&out.join("trace.json"));
    let terms = trace["terms"].as_array().unwrap();
    assert_eq!(terms.len(), 2);
    assert_eq!(terms[0]["target"], "notes:C");
    assert_eq!(terms[1]["target"], "notes:G");
    let steps = trace["steps"].as_u64().unwrap() as usize;
    let has = [[true, false, true, false], [false, false, true, true]];
    for t in 0..steps {
        let phi = 0.5 * (1.0 + (2.0 * std::f64::consts::PI * t as f64 / steps as f64).sin());
        for l in 0..layers {
            let mut sum = 0.0;
            for k in 0..2 {
                let want = if has[k][l] { 0.7 * phi } else { 0.0 };
                let got = terms[k]["eta_lt"][t][l].as_f64().unwrap();
                assert!((got - want).abs() < 1e-12, "term {k} t {t} l {l}: {got}");
                sum += got;
            }
            let total = trace["eta_lt"][t][l].as_f64().unwrap();
            assert!((total - sum).abs() < 1e-12);
        }
    }
}
