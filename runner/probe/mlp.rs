//! MLP baseline with SynTheory's probe shape (brown-palm/syntheory `SimpleMLP`): dropout on the
//! input, one hidden layer of 512 with ReLU and dropout, a linear output; Adam (lr 1e-3, no
//! weight decay), batch 64, dropout 0.5, early stopping on the validation criterion evaluated
//! every 8 steps. Differences from SynTheory, for CPU budgets: patience is 32 evaluations
//! (theirs 256) and training stops after `max_steps`; binary tasks use 2-way softmax (SynTheory
//! only has multiclass and regression) and report p(class 1). All randomness (init, batches,
//! dropout masks) comes from one seeded ChaCha stream, so fits are reproducible.

use super::data::{Features, Targets, Task};
use super::error::Result;
use super::metrics;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    pub hidden: usize,
    pub dropout: f64,
    pub lr: f64,
    pub batch: usize,
    pub eval_every: usize,
    pub patience: usize,
    pub max_steps: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            dropout: 0.5,
            lr: 1e-3,
            batch: 64,
            eval_every: 8,
            patience: 32,
            max_steps: 3000,
        }
    }
}

/// Weights row-major: w1 hidden×d, b1 hidden, w2 c×hidden, b2 c (torch `Linear` layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpModel {
    pub config: MlpConfig,
    pub d: usize,
    /// Network outputs (2 for binary).
    pub logits: usize,
    pub task: Task,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

struct Net {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Net {
    fn forward(&self, x: &Tensor, drop: Option<(&mut ChaCha8Rng, f64)>) -> Result<Tensor> {
        let mut drop = drop;
        let mut dropout = |t: Tensor| -> Result<Tensor> {
            match drop.as_mut() {
                Some((rng, p)) if *p > 0.0 => {
                    let keep = 1.0 - *p;
                    let mask: Vec<f32> = (0..t.elem_count())
                        .map(|_| {
                            if rng.random::<f64>() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let shape = x_shape(&t);
                    let mask = Tensor::from_vec(mask, shape, t.device())?;
                    Ok((t * mask)?)
                }
                _ => Ok(t),
            }
        };
        let h = dropout(x.clone())?;
        let h = h.matmul(&self.w1.t()?)?.broadcast_add(&self.b1)?.relu()?;
        let h = dropout(h)?;
        Ok(h.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)?)
    }
}

fn x_shape(t: &Tensor) -> (usize, usize) {
    let d = t.dims();
    (d[0], d[1])
}

/// torch `nn.Linear` default init: U(−1/√fan_in, 1/√fan_in) for weights and bias.
fn uniform(rng: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let b = 1.0 / (fan_in as f64).sqrt();
    (0..n)
        .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * b) as f32)
        .collect()
}

impl MlpModel {
    fn net(&self) -> Result<Net> {
        let dev = Device::Cpu;
        let h = self.config.hidden;
        Ok(Net {
            w1: Var::from_tensor(&Tensor::from_slice(&self.w1, (h, self.d), &dev)?)?,
            b1: Var::from_tensor(&Tensor::from_slice(&self.b1, h, &dev)?)?,
            w2: Var::from_tensor(&Tensor::from_slice(&self.w2, (self.logits, h), &dev)?)?,
            b2: Var::from_tensor(&Tensor::from_slice(&self.b2, self.logits, &dev)?)?,
        })
    }

    /// Outputs in the probe convention: p(class 1) for binary, class probabilities for
    /// multiclass, the value for regression.
    pub fn predict(&self, x: &Features) -> Result<Vec<f64>> {
        let net = self.net()?;
        predict_net(&net, x, self.task)
    }

    pub fn outputs(&self) -> usize {
        if self.task == Task::Binary {
            1
        } else {
            self.logits
        }
    }
}

fn predict_net(net: &Net, x: &Features, task: Task) -> Result<Vec<f64>> {
    let xt = x
        .to_tensor(DType::F32)?
        .to_device(net.w1.as_tensor().device())?;
    let logits = net.forward(&xt, None)?;
    let out = match task {
        Task::Regression => logits,
        Task::Binary => candle_nn::ops::softmax_last_dim(&logits)?.narrow(1, 1, 1)?,
        Task::Multiclass => candle_nn::ops::softmax_last_dim(&logits)?,
    };
    Ok(out.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn snapshot(net: &Net) -> Result<[Vec<f32>; 4]> {
    let v = |t: &Var| -> Result<Vec<f32>> { Ok(t.as_tensor().flatten_all()?.to_vec1::<f32>()?) };
    Ok([v(&net.w1)?, v(&net.b1)?, v(&net.w2)?, v(&net.b2)?])
}

#[allow(clippy::too_many_arguments)]
pub fn fit(
    train: &Features,
    y_train: &Targets,
    val: &Features,
    y_val: &Targets,
    task: Task,
    n_classes: usize,
    cfg: &MlpConfig,
    seed: u64,
    dev: &Device,
) -> Result<MlpModel> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x31F);
    let d = train.d;
    let h = cfg.hidden;
    let logits = match task {
        Task::Regression => 1,
        Task::Binary => 2,
        Task::Multiclass => n_classes,
    };
    let dev = dev.clone();
    let mk = |v: Vec<f32>, s: (usize, usize)| -> Result<Var> {
        Ok(Var::from_tensor(
            &Tensor::from_vec(v, s, &dev)?.squeeze(0)?,
        )?)
    };
    let net = Net {
        w1: Var::from_tensor(&Tensor::from_vec(
            uniform(&mut rng, h * d, d),
            (h, d),
            &dev,
        )?)?,
        b1: mk(uniform(&mut rng, h, d), (1, h))?,
        w2: Var::from_tensor(&Tensor::from_vec(
            uniform(&mut rng, logits * h, h),
            (logits, h),
            &dev,
        )?)?,
        b2: mk(uniform(&mut rng, logits, h), (1, logits))?,
    };
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(
        vec![
            net.w1.clone(),
            net.b1.clone(),
            net.w2.clone(),
            net.b2.clone(),
        ],
        params,
    )?;
    let x_all = train.to_tensor(DType::F32)?.to_device(&dev)?;
    let (labels_u32, values): (Vec<u32>, Vec<f32>) = match y_train {
        Targets::Classes(c) => (c.iter().map(|&k| k as u32).collect(), vec![]),
        Targets::Values(v) => (vec![], v.iter().map(|&a| a as f32).collect()),
    };
    let mut best = (f64::NEG_INFINITY, snapshot(&net)?);
    let mut bored = 0;
    for step in 0..cfg.max_steps {
        if step % cfg.eval_every == 0 {
            let pred = predict_net(&net, val, task)?;
            let outs = if task == Task::Binary { 1 } else { logits };
            let s = metrics::score(task, &pred, outs, y_val).selection(task);
            if s > best.0 {
                best = (s, snapshot(&net)?);
                bored = 0;
            } else {
                bored += 1;
                if bored >= cfg.patience {
                    break;
                }
            }
        }
        let idx: Vec<u32> = rand::seq::index::sample(&mut rng, train.n, cfg.batch.min(train.n))
            .iter()
            .map(|i| i as u32)
            .collect();
        let it = Tensor::from_slice(&idx, idx.len(), &dev)?;
        let xb = x_all.index_select(&it, 0)?;
        let out = net.forward(&xb, Some((&mut rng, cfg.dropout)))?;
        let loss = if task == Task::Regression {
            let yb: Vec<f32> = idx.iter().map(|&i| values[i as usize]).collect();
            candle_nn::loss::mse(&out.squeeze(1)?, &Tensor::from_vec(yb, idx.len(), &dev)?)?
        } else {
            let yb: Vec<u32> = idx.iter().map(|&i| labels_u32[i as usize]).collect();
            candle_nn::loss::cross_entropy(&out, &Tensor::from_vec(yb, idx.len(), &dev)?)?
        };
        opt.backward_step(&loss)?;
    }
    let [w1, b1, w2, b2] = best.1;
    Ok(MlpModel {
        config: *cfg,
        d,
        logits,
        task,
        w1,
        b1,
        w2,
        b2,
    })
}
