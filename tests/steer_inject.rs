//! The steering hook on the embedded model: it changes exactly the chosen layers by exactly
//! η_l(t)·q_l (captured before and after it in the same run), with schedules, gates, several terms
//! and norm-relative η.

#![allow(clippy::needless_range_loop)]

mod common;
use common::numeric::max_abs;

use candle_core::{DType, Device, Tensor};
use rfmx::model::Pipeline;
use rfmx::model::musicgen::{CaptureHook, GenerateConfig};
use rfmx::spec::schema::{EtaMode, GateMode, Schedule};
use rfmx::steer::gate::Gate;
use rfmx::steer::inject::{SteerHook, Term, mean_row_norm};
use rfmx::steer::schedule::{ScheduleConstants, phi};

fn unit(h: usize, seed: f32) -> Tensor {
    let v: Vec<f32> = (0..h).map(|i| ((i as f32 + 1.0) * seed).sin()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Tensor::from_vec(v.iter().map(|x| x / n).collect::<Vec<_>>(), h, &Device::Cpu).unwrap()
}

fn run(mode: EtaMode) {
    let p = Pipeline::tiny(&Device::Cpu, DType::F32).unwrap();
    let m = &p.decoder;
    let (layers, h) = (m.num_layers(), m.hidden_size());
    let steps = 12;
    let cond = p.condition(&["solo piano".to_string()]).unwrap();
    let cfg = GenerateConfig {
        steps,
        seed: 3,
        ..Default::default()
    };
    let c = ScheduleConstants::default();
    let (qa, qb) = (unit(h, 0.7), unit(h, 1.3));
    // Term A: layers 1 and 3 (weights 1 and 0.5), linear_up, gate p = 0.5 per step.
    // Term B: layer 3 only, exp_down, gate p = 0.7 per layer.
    let term_a = Term {
        label: "a".into(),
        directions: (0..layers)
            .map(|l| [1, 3].contains(&l).then(|| qa.clone()))
            .collect(),
        weights: (0..layers)
            .map(|l| match l {
                1 => 1.0,
                3 => 0.5,
                _ => 0.0,
            })
            .collect(),
        eta: 4.0,
        phi: phi(&Schedule::LinearUp, steps, &c).unwrap(),
        gate: Gate::draw(0.5, GateMode::PerStep, steps, layers, 11).unwrap(),
    };
    let term_b = Term {
        label: "b".into(),
        directions: (0..layers).map(|l| (l == 3).then(|| qb.clone())).collect(),
        weights: vec![1.0; layers],
        eta: 2.0,
        phi: phi(&Schedule::ExpDown, steps, &c).unwrap(),
        gate: Gate::draw(0.7, GateMode::PerLayer, steps, layers, 12).unwrap(),
    };
    let expect = |k: usize, t: usize, l: usize, term: &Term| -> f64 {
        let _ = k;
        if term.directions[l].is_none() {
            return 0.0;
        }
        term.eta * term.weights[l] * term.phi[t] * term.gate.psi(t, l)
    };
    let mut expected = vec![vec![[0.0f64; 2]; layers]; steps];
    for t in 0..steps {
        for l in 0..layers {
            expected[t][l] = [expect(0, t, l, &term_a), expect(1, t, l, &term_b)];
        }
    }
    let mut steer = SteerHook::new(vec![term_a, term_b], mode, layers).unwrap();
    let mut before = CaptureHook::default();
    let mut after = CaptureHook::default();
    {
        let mut hooks = ((&mut before, &mut steer), &mut after);
        m.generate(&cond, &cfg, &mut hooks).unwrap();
    }
    let mut changed = 0;
    for t in 0..steps {
        for l in 0..layers {
            let (b, a) = (&before.steps[t][l], &after.steps[t][l]);
            let norm = match mode {
                EtaMode::Absolute => 1.0,
                EtaMode::NormRelative => mean_row_norm(b).unwrap(),
            };
            let [ca, cb] = expected[t][l];
            let (ca, cb) = (ca * norm, cb * norm);
            // The trace records exactly these coefficients.
            assert!((steer.trace()[0][t][l] - ca).abs() < 1e-9 * (1.0 + ca.abs()));
            assert!((steer.trace()[1][t][l] - cb).abs() < 1e-9 * (1.0 + cb.abs()));
            let want = ((&qa * ca).unwrap() + (&qb * cb).unwrap()).unwrap();
            let diff = (a - b).unwrap();
            let err = max_abs(&diff.broadcast_sub(&want).unwrap());
            assert!(
                err <= 1e-5 * (1.0 + ca.abs().max(cb.abs()) as f32 * 10.0),
                "step {t} layer {l}: err {err}"
            );
            if ca == 0.0 && cb == 0.0 {
                // Untouched layers: bit-identical.
                assert_eq!(max_abs(&diff), 0.0, "step {t} layer {l} changed");
            } else {
                changed += 1;
                assert!(max_abs(&diff) > 0.0);
            }
            // Both CFG branches (2 rows) are shifted.
            assert_eq!(b.dim(0).unwrap(), 2);
        }
    }
    assert!(
        changed > 5,
        "too few steered (step, layer) cells: {changed}"
    );
    // Layers 0 and 2 never change.
    for t in 0..steps {
        for l in [0, 2] {
            assert_eq!(steer.total_trace()[t][l], 0.0);
        }
    }
}

#[test]
fn hook_adds_exactly_eta_q_on_the_chosen_layers() {
    run(EtaMode::Absolute);
}

#[test]
fn norm_relative_eta_scales_by_the_mean_row_norm() {
    run(EtaMode::NormRelative);
}

#[test]
fn bad_terms_are_rejected() {
    let g = Gate::draw(1.0, GateMode::PerStep, 2, 2, 0).unwrap();
    let t = Term {
        label: "x".into(),
        directions: vec![None],
        weights: vec![1.0, 1.0],
        eta: 1.0,
        phi: vec![1.0, 1.0],
        gate: g,
    };
    assert!(SteerHook::new(vec![t], EtaMode::Absolute, 2).is_err());
}
