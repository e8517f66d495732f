//! A `directions` node's output written through its own types, for tests that steer without
//! fitting probes: unit rows `layer.<l>` = [1, hidden] and the per-layer scores.

use std::path::Path;

use candle_core::{Device, Tensor};
use rfmx::stages::contract::Output;
use rfmx::stages::directions::{DirectionLayer, DirectionScores, Judge};

/// `qs`: (layer, direction) pairs (normalised here); `val[l]`: layer l's validation AUC.
pub fn write_directions(dir: &Path, qs: &[(usize, Vec<f32>)], val: &[f64], judge: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let map: std::collections::HashMap<String, Tensor> = qs
        .iter()
        .map(|(l, q)| {
            let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
            let q: Vec<f32> = q.iter().map(|v| v / n).collect();
            let t = Tensor::from_vec(q.clone(), (1, q.len()), &Device::Cpu).unwrap();
            (format!("layer.{l}"), t)
        })
        .collect();
    candle_core::safetensors::save(&map, dir.join("directions.safetensors")).unwrap();
    DirectionScores {
        concept: "notes".into(),
        class: "C".into(),
        kind: "linear".into(),
        layers: qs
            .iter()
            .map(|&(l, _)| DirectionLayer {
                layer: l,
                val_auc: Some(val[l]),
                test_auc: Some(val[l]),
                k: 1,
                degenerate: None,
            })
            .collect(),
        degenerate_layers: vec![],
        judge_layer: judge,
        judge: Judge {
            layer: judge,
            val_acc: None,
            test_acc: None,
            probe: String::new(),
        },
    }
    .write(dir)
    .unwrap();
}
