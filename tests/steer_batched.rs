//! Batched generation (docs/design.md, batched generation): a batch of generation rows gives each
//! row exactly what generating it alone gives — codes, traces and meta equal, captured and
//! feature tensors equal to 1e-5 — and a row that fails fails alone.

mod common;
use common::directions::write_directions;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rfmx::model::{ModelSource, Pipeline};
use rfmx::spec::schema::{EtaMode, GateMode, LayerStrategy, Pooling, Schedule};
use rfmx::stages::generation::{GenParams, GenerationInputs, run_generation, run_generation_batch};
use serde_json::Value;

fn base(seed: u64) -> GenParams {
    GenParams::baseline("solo piano", seed, 0.3, 3.0, Pooling::Mean)
}

fn steered(seed: u64, target: &str, eta: f64, schedule: Schedule, gate: f64) -> GenParams {
    GenParams {
        target: Some(target.into()),
        schedule: Some(schedule),
        layers: Some(LayerStrategy::Exponential {
            w0: 1.0,
            kappa: 0.95,
        }),
        gate,
        eta,
        ..base(seed)
    }
}

fn inputs_of<'a>(rows: &'a [(GenParams, Vec<&'a Path>)]) -> Vec<GenerationInputs<'a>> {
    rows.iter()
        .map(|(p, d)| GenerationInputs {
            probes: Default::default(),
            params: p,
            direction_dirs: d.clone(),
        })
        .collect()
}

/// `root/<name><i>` for `i < n`, created.
fn out_dirs(root: &Path, name: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("{name}{i}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Equal JSON, numbers to a relative 1e-5.
fn json_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-12),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                json_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

fn assert_close(a: &Path, b: &Path, file: &str) {
    let ta = candle_core::safetensors::load(a.join(file), &Device::Cpu).unwrap();
    let tb = candle_core::safetensors::load(b.join(file), &Device::Cpu).unwrap();
    assert_eq!(
        ta.keys().collect::<std::collections::BTreeSet<_>>(),
        tb.keys().collect()
    );
    for (k, x) in &ta {
        let d = (x - &tb[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-5, "{file} {k}: max |Δ| {d}");
    }
}

/// Writes two terms' directions (different layers, widths of support) under `root`.
fn two_directions(root: &Path, layers: usize, hidden: usize) -> (PathBuf, PathBuf) {
    let (a, b) = (root.join("a"), root.join("b"));
    let qa: Vec<(usize, Vec<f32>)> = (0..layers)
        .map(|l| {
            (
                l,
                (0..hidden).map(|i| ((i * (l + 2)) as f32).sin()).collect(),
            )
        })
        .collect();
    write_directions(&a, &qa, &[0.6, 0.9, 0.8, 0.7], 1);
    let qb: Vec<f32> = (0..hidden).map(|i| (i as f32 * 0.3).cos()).collect();
    write_directions(&b, &[(1, qb.clone()), (3, qb)], &[0.0, 0.7, 0.0, 0.9], 3);
    (a, b)
}

#[test]
fn a_mixed_batch_gives_every_row_what_it_gives_alone() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let (layers, hidden) = (pipe.decoder.num_layers(), pipe.decoder.hidden_size());
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = two_directions(tmp.path(), layers, hidden);
    let mut norm = steered(11, "notes:C", 0.4, Schedule::Sine, 1.0);
    norm.eta_mode = EtaMode::NormRelative;
    norm.gate_mode = GateMode::PerLayer;
    norm.gate = 0.6;
    // Baseline, a target at two schedules/gates/seeds, a two-term target, a norm-relative row.
    let rows: Vec<(GenParams, Vec<&Path>)> = vec![
        (base(4), vec![]),
        (
            steered(4, "notes:C", 1.5, Schedule::LinearUp, 0.5),
            vec![da.as_path()],
        ),
        (
            steered(7, "notes:C", 0.9, Schedule::ExpDown, 1.0),
            vec![da.as_path()],
        ),
        (
            steered(4, "notes:C + chords:major", 0.7, Schedule::Constant, 0.8),
            vec![da.as_path(), db.as_path()],
        ),
        (norm, vec![da.as_path()]),
        (base(9), vec![]),
    ];
    let inputs = inputs_of(&rows);
    let alone = out_dirs(tmp.path(), "alone", rows.len());
    for (inp, out) in inputs.iter().zip(&alone) {
        run_generation(&pipe, "tiny", inp, out).unwrap();
    }
    let batched = out_dirs(tmp.path(), "batch", rows.len());
    let outs: Vec<&Path> = batched.iter().map(|p| p.as_path()).collect();
    for r in run_generation_batch(&pipe, "tiny", &inputs, &outs) {
        r.unwrap();
    }
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let ca = Tensor::read_npy(a.join("codes.npy")).unwrap();
        let cb = Tensor::read_npy(b.join("codes.npy")).unwrap();
        assert_eq!(
            ca.to_vec2::<i64>().unwrap(),
            cb.to_vec2::<i64>().unwrap(),
            "row {i}: codes"
        );
        let (ta, tb) = (json(&a.join("trace.json")), json(&b.join("trace.json")));
        if rows[i].0.eta_mode == EtaMode::Absolute {
            assert_eq!(ta, tb, "row {i}: trace");
        } else {
            // Norm-relative η scales by ‖h‖ measured on the stream, which a batch-shaped matmul
            // computes to within f32 rounding (docs/design.md, batched generation).
            json_close(&ta, &tb, &format!("row {i}: trace"));
        }
        assert_eq!(
            json(&a.join("meta.json")),
            json(&b.join("meta.json")),
            "row {i}: meta"
        );
        assert_close(a, b, "captured.safetensors");
        assert_close(a, b, "features.safetensors");
    }
    // The rows really differ (seeds and steering reach the codes), so equality is not vacuous.
    let codes = |d: &Path| {
        Tensor::read_npy(d.join("codes.npy"))
            .unwrap()
            .to_vec2::<i64>()
            .unwrap()
    };
    assert_ne!(codes(&batched[0]), codes(&batched[5]));
    assert_ne!(
        json(&batched[0].join("trace.json")),
        json(&batched[1].join("trace.json"))
    );
}

#[test]
fn a_non_finite_row_fails_alone() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let (layers, hidden) = (pipe.decoder.num_layers(), pipe.decoder.hidden_size());
    let tmp = tempfile::tempdir().unwrap();
    let (da, _) = two_directions(tmp.path(), layers, hidden);
    let absurd = steered(4, "notes:C", 1e39, Schedule::Constant, 1.0);
    let rows = [
        (base(4), vec![]),
        (absurd, vec![da.as_path()]),
        (base(5), vec![]),
    ];
    let inputs = inputs_of(&rows);
    let outs = out_dirs(tmp.path(), "o", 3);
    let refs: Vec<&Path> = outs.iter().map(|p| p.as_path()).collect();
    let res = run_generation_batch(&pipe, "tiny", &inputs, &refs);
    assert!(
        res[0].is_ok(),
        "{:?}",
        res[0].as_ref().err().map(|e| e.to_string())
    );
    let err = res[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
    assert!(res[2].is_ok());
    // The baseline next to the failed row is still exactly the baseline generated alone.
    let alone = tmp.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    run_generation(&pipe, "tiny", &inputs[0], &alone).unwrap();
    assert_eq!(
        json(&alone.join("trace.json")),
        json(&outs[0].join("trace.json"))
    );
    let c = |d: &Path| {
        Tensor::read_npy(d.join("codes.npy"))
            .unwrap()
            .to_vec2::<i64>()
            .unwrap()
    };
    assert_eq!(c(&alone), c(&outs[0]));
}

#[test]
fn rows_of_different_prompts_are_refused_as_one_batch() {
    let pipe = Pipeline::shared(&ModelSource::Tiny, &Device::Cpu, DType::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut other = base(4);
    other.prompt = "drums".into();
    let (a, b) = (base(4), other);
    let inputs = [
        GenerationInputs {
            probes: Default::default(),
            params: &a,
            direction_dirs: vec![],
        },
        GenerationInputs {
            probes: Default::default(),
            params: &b,
            direction_dirs: vec![],
        },
    ];
    let res = run_generation_batch(&pipe, "tiny", &inputs, &[tmp.path(), tmp.path()]);
    for r in res {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("mixes prompts"), "{e}");
    }
}

#[test]
fn steer_batch_is_validated_with_its_position() {
    let spec = |v: &str| {
        format!("[experiment]\nname = \"b\"\n[model]\nname = \"tiny\"\n[steer]\nbatch = {v}\n")
    };
    for ok in ["1", "8", "\"auto\""] {
        rfmx::spec::load_str("t.toml", "t", &spec(ok), &[], &[])
            .unwrap_or_else(|e| panic!("batch = {ok}: {e:?}"));
    }
    for bad in ["0", "-2", "\"many\"", "1.5"] {
        let e = rfmx::spec::load_str("t.toml", "t", &spec(bad), &[], &[]).unwrap_err();
        let msg = format!("{e:?}");
        assert!(
            msg.contains(">= 1") || msg.contains("at least 1"),
            "batch = {bad}: {msg}"
        );
        // Pointed at the value (or the key) on line 6.
        assert!(msg.contains("line: Some(6)"), "batch = {bad}: {msg}");
    }
}
