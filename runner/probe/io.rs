//! Probe storage: tensors in one safetensors file plus a JSON manifest (never pickles), and
//! plain .npy exports (M, eigenvalues, directions) for other tools. Every file is written to a
//! temporary sibling and renamed, so a reader never sees half a probe file.

use super::data::{Features, Task};
use super::directions::Directions;
use super::error::{ProbeError, Result};
use super::linear::LinearModel;
use super::mlp::{MlpConfig, MlpModel};
use super::rfm::{RfmHyper, RfmModel};
use super::search::Trial;
use super::{Model, ProbeConfig, ProbeFit, Scores, Split, Standardiser};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const TENSORS: &str = "probe.safetensors";
pub const MANIFEST: &str = "probe.json";
pub const FORMAT: &str = "rfmx-probe/1";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    config: ProbeConfig,
    n_classes: usize,
    d: usize,
    outputs: usize,
    split: Split,
    val: Scores,
    test: Scores,
    trials: Vec<Trial>,
    best_iter: Option<usize>,
    /// RFM hyper-parameters actually used.
    #[serde(skip_serializing_if = "Option::is_none")]
    hyper: Option<RfmHyper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linear_lambda: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlp: Option<(MlpConfig, usize, Task)>,
    /// Per-direction |Pearson r| of the projection with the orientation target.
    #[serde(skip_serializing_if = "Option::is_none")]
    direction_correlations: Option<Vec<f64>>,
}

fn werr(path: &Path, e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Write {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn rerr(path: &Path, e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Read {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Runs `write` on a temporary sibling of `path`, then renames it into place.
fn atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| werr(path, e))?;
    }
    let tmp = crate::fsx::temp_sibling(path);
    let r = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| werr(path, e)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn t64(v: &[f64], shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?)
}

fn t32(v: &[f32], shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?)
}

/// Writes an f32 or f64 array as .npy (atomically), in one buffered write (candle's writer
/// issues a system call per element: a second for a d×d M at d = 1024).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let t = match t.dtype() {
        DType::F32 | DType::F64 => t.clone(),
        _ => t.to_dtype(DType::F32)?,
    };
    let descr = if t.dtype() == DType::F64 {
        "<f8"
    } else {
        "<f4"
    };
    let shape = match t.dims() {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes =
        Vec::with_capacity(10 + header.len() + t.elem_count() * t.dtype().size_in_bytes());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let flat = t.flatten_all()?;
    if t.dtype() == DType::F64 {
        for v in flat.to_vec1::<f64>()? {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    } else {
        for v in flat.to_vec1::<f32>()? {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    crate::fsx::write_atomic(path, &bytes).map_err(|e| werr(path, e))
}

impl ProbeFit {
    /// Saves `probe.safetensors` and `probe.json` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut ts: HashMap<String, Tensor> = HashMap::new();
        let mut hyper = None;
        let mut linear_lambda = None;
        let mut mlp = None;
        match &self.model {
            Model::Rfm(m) => {
                let (n, d, c) = (m.centres.n, m.centres.d, m.outputs);
                ts.insert("M".into(), t64(&m.m, &[d, d])?);
                ts.insert("alpha".into(), t64(&m.alpha, &[n, c])?);
                ts.insert("centres".into(), t32(&m.centres.data, &[n, d])?);
                hyper = Some(m.hyper);
            }
            Model::Linear(m) => {
                ts.insert("w".into(), t64(&m.w, &[m.d, m.outputs])?);
                ts.insert("b".into(), t64(&m.b, &[m.outputs])?);
                linear_lambda = Some(m.lambda);
            }
            Model::Mlp(m) => {
                let h = m.config.hidden;
                ts.insert("w1".into(), t32(&m.w1, &[h, m.d])?);
                ts.insert("b1".into(), t32(&m.b1, &[h])?);
                ts.insert("w2".into(), t32(&m.w2, &[m.logits, h])?);
                ts.insert("b2".into(), t32(&m.b2, &[m.logits])?);
                mlp = Some((m.config, m.logits, m.task));
            }
        }
        if let Some(s) = &self.standardiser {
            ts.insert("mean".into(), t32(&s.mean, &[self.d])?);
            ts.insert("std".into(), t32(&s.std, &[self.d])?);
        }
        if let Some(dir_) = &self.directions {
            ts.insert(
                "eigenvalues".into(),
                t64(&dir_.eigenvalues, &[dir_.eigenvalues.len()])?,
            );
            ts.insert("directions".into(), t64(&dir_.vectors, &[dir_.k, dir_.d])?);
        }
        let path = dir.join(TENSORS);
        atomically(&path, |tmp| {
            candle_core::safetensors::save(&ts, tmp).map_err(|e| werr(&path, e))
        })?;
        let man = Manifest {
            format: FORMAT.into(),
            config: self.config.clone(),
            n_classes: self.n_classes,
            d: self.d,
            outputs: self.outputs(),
            split: self.split.clone(),
            val: self.val.clone(),
            test: self.test.clone(),
            trials: self.trials.clone(),
            best_iter: self.best_iter,
            hyper,
            linear_lambda,
            mlp,
            direction_correlations: self.directions.as_ref().map(|d| d.correlations.clone()),
        };
        let json = serde_json::to_vec_pretty(&man)?;
        let mpath = dir.join(MANIFEST);
        crate::fsx::write_atomic(&mpath, &json).map_err(|e| werr(&mpath, e))
    }

    /// Loads a probe written by `save`.
    pub fn load(dir: &Path) -> Result<ProbeFit> {
        let mpath = dir.join(MANIFEST);
        let bytes = std::fs::read(&mpath).map_err(|e| rerr(&mpath, e))?;
        let man: Manifest = serde_json::from_slice(&bytes).map_err(|e| rerr(&mpath, e))?;
        if man.format != FORMAT {
            return Err(rerr(
                &mpath,
                format!("unknown format {:?} (expected {FORMAT})", man.format),
            ));
        }
        let path = dir.join(TENSORS);
        let ts = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| rerr(&path, e))?;
        let get = |name: &str| -> Result<&Tensor> {
            ts.get(name)
                .ok_or_else(|| rerr(&path, format!("missing tensor {name:?}")))
        };
        let v64 = |name: &str| -> Result<Vec<f64>> {
            Ok(get(name)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        let v32 = |name: &str| -> Result<Vec<f32>> {
            Ok(get(name)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let model = match man.config.kind {
            super::ProbeKind::Rfm => {
                let hyper = man
                    .hyper
                    .ok_or_else(|| rerr(&mpath, "RFM probe without hyper-parameters"))?;
                let (n, d) = get("centres")?.dims2()?;
                Model::Rfm(RfmModel {
                    hyper,
                    centres: Features::new(n, d, v32("centres")?)?,
                    m: v64("M")?,
                    alpha: v64("alpha")?,
                    outputs: man.outputs,
                    factor: None,
                })
            }
            super::ProbeKind::Linear => Model::Linear(LinearModel {
                w: v64("w")?,
                b: v64("b")?,
                d: man.d,
                outputs: man.outputs,
                lambda: man.linear_lambda.unwrap_or(f64::NAN),
            }),
            super::ProbeKind::Mlp => {
                let (config, logits, task) = man
                    .mlp
                    .ok_or_else(|| rerr(&mpath, "MLP probe without its shape"))?;
                Model::Mlp(MlpModel {
                    config,
                    d: man.d,
                    logits,
                    task,
                    w1: v32("w1")?,
                    b1: v32("b1")?,
                    w2: v32("w2")?,
                    b2: v32("b2")?,
                })
            }
        };
        let standardiser = if ts.contains_key("mean") {
            Some(Standardiser {
                mean: v32("mean")?,
                std: v32("std")?,
            })
        } else {
            None
        };
        let directions = if ts.contains_key("directions") {
            let (k, d) = get("directions")?.dims2()?;
            Some(Directions {
                eigenvalues: v64("eigenvalues")?,
                vectors: v64("directions")?,
                k,
                d,
                correlations: man.direction_correlations.clone().unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(ProbeFit {
            config: man.config,
            n_classes: man.n_classes,
            d: man.d,
            split: man.split,
            standardiser,
            model,
            val: man.val,
            test: man.test,
            trials: man.trials,
            best_iter: man.best_iter,
            directions,
            trace: None,
        })
    }

    /// Writes `M.npy` (d×d f32), `eigenvalues.npy` (d, f64), `directions.npy` (k×d f32) and
    /// `hyper.json` (the chosen RFM hyper-parameters), for RFM probes.
    pub fn export_npy(&self, dir: &Path) -> Result<()> {
        if let Model::Rfm(m) = &self.model {
            let d = m.d();
            write_npy(
                &dir.join("M.npy"),
                &t64(&m.m, &[d, d])?.to_dtype(DType::F32)?,
            )?;
            let hp = dir.join("hyper.json");
            crate::fsx::write_atomic(&hp, &serde_json::to_vec_pretty(&m.hyper)?)
                .map_err(|e| werr(&hp, e))?;
        }
        if let Some(dr) = &self.directions {
            write_npy(
                &dir.join("eigenvalues.npy"),
                &t64(&dr.eigenvalues, &[dr.eigenvalues.len()])?,
            )?;
            write_npy(
                &dir.join("directions.npy"),
                &t64(&dr.vectors, &[dr.k, dr.d])?.to_dtype(DType::F32)?,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::from_vec(
            (0..12).map(|v| v as f32 * 0.5 - 1.0).collect::<Vec<f32>>(),
            (3, 4),
            &Device::Cpu,
        )
        .unwrap();
        let b = Tensor::from_vec(vec![1.5f64, -2.25, 3.0], 3, &Device::Cpu).unwrap();
        for (name, t) in [("a.npy", &a), ("b.npy", &b)] {
            let p = dir.path().join(name);
            write_npy(&p, t).unwrap();
            let back = Tensor::read_npy(&p).unwrap();
            assert_eq!(back.dims(), t.dims());
            assert_eq!(back.dtype(), t.dtype());
            let diff = (back.to_dtype(DType::F64).unwrap() - t.to_dtype(DType::F64).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(diff, 0.0, "{name}");
        }
    }
}
