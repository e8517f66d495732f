//! Autoregressive generation with the delay pattern and classifier-free guidance, and the
//! teacher-forced feature extraction used by the probes.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::decoder::{Condition, MusicgenModel};
use super::error::{MusicgenError, Result};
use super::hooks::{LayerHook, Pool};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Decoder steps; with K codebooks they give `steps + 1 - K` audio frames.
    pub steps: usize,
    /// `g` in `uncond + (cond - uncond)·g`; CFG is off (single branch) when `g == 1`.
    pub guidance_scale: f64,
    /// Sample among the `top_k` best codes; 1 is greedy.
    pub top_k: usize,
    /// Softmax temperature; 0 is greedy.
    pub temperature: f64,
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            steps: 250,
            guidance_scale: 3.0,
            top_k: 250,
            temperature: 1.0,
            seed: 0,
        }
    }
}

/// Result of a generation run.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `[B, K, frames]` audio codes with the delay pattern removed (u32).
    pub codes: Tensor,
    /// `[B, K, steps + 1]` delayed sequence as the decoder saw it, pads included (u32).
    pub delayed: Tensor,
}

/// transformers' `build_delay_pattern_mask` for a BOS-only prompt: position `p` of codebook `k`
/// is the pad token when `p <= k` or `p >= len - K + 1 + k`, else a generated code.
pub fn delay_is_pad(k: usize, p: usize, len: usize, codebooks: usize) -> bool {
    p <= k || p + codebooks > len + k
}

impl MusicgenModel {
    /// Generates `cond.batch()` clips. With guidance the conditional rows and their unconditional
    /// twins run as one batch of `2B` (conditional first, as transformers). `hook` sees every block
    /// output of every step (both branches).
    pub fn generate(
        &self,
        cond: &Condition,
        cfg: &GenerateConfig,
        hook: &mut dyn LayerHook,
    ) -> Result<Generated> {
        let mut rngs = [ChaCha20Rng::seed_from_u64(cfg.seed)];
        self.generate_with(cond, cfg, &mut rngs, hook)
    }

    /// Like [`MusicgenModel::generate`], but row `i` samples from its own RNG seeded with
    /// `seeds[i]` (`cfg.seed` is ignored). Row `i` then draws exactly what a one-row generation
    /// with seed `seeds[i]` draws, which is what lets a batch of generation nodes give the outputs
    /// each would give alone (docs/design.md, batched generation).
    pub fn generate_seeded(
        &self,
        cond: &Condition,
        cfg: &GenerateConfig,
        seeds: &[u64],
        hook: &mut dyn LayerHook,
    ) -> Result<Generated> {
        if seeds.len() != cond.batch()? {
            return Err(MusicgenError::Input(format!(
                "{} seeds for a batch of {}",
                seeds.len(),
                cond.batch()?
            )));
        }
        let mut rngs: Vec<ChaCha20Rng> = seeds
            .iter()
            .map(|&s| ChaCha20Rng::seed_from_u64(s))
            .collect();
        self.generate_with(cond, cfg, &mut rngs, hook)
    }

    /// `rngs` holds one RNG shared by every row or one per row.
    fn generate_with(
        &self,
        cond: &Condition,
        cfg: &GenerateConfig,
        rngs: &mut [ChaCha20Rng],
        hook: &mut dyn LayerHook,
    ) -> Result<Generated> {
        let k = self.num_codebooks();
        if cfg.steps < k {
            return Err(MusicgenError::Input(format!(
                "{} steps give no audio frame with {k} codebooks (need at least {k})",
                cfg.steps
            )));
        }
        if !(cfg.guidance_scale.is_finite()
            && cfg.temperature.is_finite()
            && cfg.temperature >= 0.0)
        {
            return Err(MusicgenError::Input(
                "guidance_scale and temperature must be finite, temperature >= 0".into(),
            ));
        }
        let b = cond.batch()?;
        let guided = cfg.guidance_scale != 1.0;
        let (states, mask) = if guided {
            let s = Tensor::cat(&[&cond.states, &cond.uncond_states], 0)?;
            let m = match (&cond.mask, &cond.uncond_mask) {
                (Some(a), Some(u)) => Some(Tensor::cat(&[a, u], 0)?),
                (None, None) => None,
                _ => return Err(MusicgenError::Input("condition masks disagree".into())),
            };
            (s, m)
        } else {
            (cond.states.clone(), cond.mask.clone())
        };
        let rows = if guided { 2 * b } else { b };
        let mut state = self.new_state(Some((&states, mask.as_ref())))?;
        let len = cfg.steps + 1;
        let pad = self.config().decoder.pad_token() as u32;
        let bos = self.config().decoder.bos_token() as u32;
        let vocab = self.config().decoder.vocab_size;
        // seq[b][k][p]; position 0 is BOS (masked to pad by the pattern, as in transformers).
        let mut seq = vec![vec![vec![pad; len]; k]; b];
        for s in seq.iter_mut() {
            for c in s.iter_mut() {
                c[0] = bos;
            }
        }
        let per_row = rngs.len() > 1 || b == 1;
        if per_row && rngs.len() != b {
            return Err(MusicgenError::Input(format!(
                "{} RNGs for a batch of {b}",
                rngs.len()
            )));
        }
        let mut scratch = Vec::with_capacity(vocab);
        for step in 0..cfg.steps {
            let mut input = Vec::with_capacity(rows * k);
            for r in 0..rows {
                for (c, codebook) in seq[r % b].iter().enumerate() {
                    let v = if delay_is_pad(c, step, len, k) {
                        pad
                    } else {
                        codebook[step]
                    };
                    input.push(v);
                }
            }
            let input = Tensor::from_vec(input, (rows, k, 1), self.device())?;
            let h = self.forward(&mut state, &input, step, hook)?;
            let logits = self
                .logits(&h)?
                .squeeze(2)?
                .to_dtype(DType::F32)?
                .to_vec3::<f32>()?;
            for bi in 0..b {
                let rng = &mut rngs[if per_row { bi } else { 0 }];
                for c in 0..k {
                    let row: Vec<f32> = if guided {
                        let (cl, ul) = (&logits[bi][c], &logits[b + bi][c]);
                        let g = cfg.guidance_scale as f32;
                        ul.iter().zip(cl).map(|(u, x)| u + (x - u) * g).collect()
                    } else {
                        logits[bi][c].clone()
                    };
                    seq[bi][c][step + 1] = sample(&row, cfg, rng, &mut scratch) as u32;
                }
            }
        }
        let frames = len - k;
        let mut codes = Vec::with_capacity(b * k * frames);
        let mut delayed = Vec::with_capacity(b * k * len);
        for s in &seq {
            for (c, row) in s.iter().enumerate() {
                codes.extend_from_slice(&row[c + 1..c + 1 + frames]);
                delayed.extend((0..len).map(|p| {
                    if delay_is_pad(c, p, len, k) {
                        pad
                    } else {
                        row[p]
                    }
                }));
            }
        }
        Ok(Generated {
            codes: Tensor::from_vec(codes, (b, k, frames), self.device())?,
            delayed: Tensor::from_vec(delayed, (b, k, len), self.device())?,
        })
    }

    /// Block outputs `[B, T, H]` of every layer for teacher-forced `codes` `[B, K, T]`, fed as the
    /// authors' extraction does: codes directly, no text, no delay pattern, no BOS.
    pub fn extract_blocks(&self, codes: &Tensor) -> Result<Vec<Tensor>> {
        let mut cap = super::hooks::CaptureHook::default();
        let mut state = self.new_state(None)?;
        self.forward(&mut state, &codes.to_device(self.device())?, 0, &mut cap)?;
        cap.steps
            .pop()
            .ok_or_else(|| MusicgenError::Input("no block outputs captured".into()))
    }

    /// Per-layer pooled features: `[L, B, H]` f32 for each requested pooling, in order.
    pub fn extract_pooled(&self, codes: &Tensor, pools: &[Pool]) -> Result<Vec<Tensor>> {
        let blocks = self.extract_blocks(codes)?;
        pools
            .iter()
            .map(|p| {
                let per = blocks
                    .iter()
                    .map(|h| p.apply(h))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::stack(&per, 0)?)
            })
            .collect()
    }
}

/// Greedy when `top_k <= 1` or `temperature == 0` (first maximum, like `torch.argmax`); otherwise
/// temperature, then top-k, then a draw from the softmax (transformers' warper order).
fn sample(
    logits: &[f32],
    cfg: &GenerateConfig,
    rng: &mut ChaCha20Rng,
    scratch: &mut Vec<(f32, usize)>,
) -> usize {
    if cfg.top_k <= 1 || cfg.temperature == 0.0 {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best;
    }
    scratch.clear();
    let t = cfg.temperature as f32;
    scratch.extend(logits.iter().enumerate().map(|(i, &v)| (v / t, i)));
    let k = cfg.top_k.min(scratch.len());
    // Stable order (value desc, index asc) keeps the draw deterministic on ties.
    let cmp = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k < scratch.len() {
        scratch.select_nth_unstable_by(k - 1, cmp);
        scratch.truncate(k);
    }
    scratch.sort_by(cmp);
    let max = scratch[0].0 as f64;
    let total: f64 = scratch.iter().map(|(v, _)| (*v as f64 - max).exp()).sum();
    let mut u = rng.random::<f64>() * total;
    for (v, i) in scratch.iter() {
        u -= (*v as f64 - max).exp();
        if u <= 0.0 {
            return *i;
        }
    }
    scratch[k - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_pattern_matches_transformers_docstring() {
        // build_delay_pattern_mask's docstring example: 4 codebooks, length 8.
        let expect = ["P....PPP", "PP....PP", "PPP....P", "PPPP...."];
        for (k, row) in expect.iter().enumerate() {
            let got: String = (0..8)
                .map(|p| if delay_is_pad(k, p, 8, 4) { 'P' } else { '.' })
                .collect();
            assert_eq!(&got, row, "codebook {k}");
        }
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = GenerateConfig {
            top_k: 3,
            ..Default::default()
        };
        let mut top: Vec<usize> = (0..50).collect();
        top.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let draw = |seed| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut s = Vec::new();
            (0..200)
                .map(|_| sample(&logits, &cfg, &mut rng, &mut s))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        assert!(a.iter().all(|i| top[..3].contains(i)));
        for t in &top[..3] {
            assert!(a.contains(t), "top-3 code {t} never drawn in 200 draws");
        }
        let greedy = GenerateConfig {
            top_k: 1,
            ..Default::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        assert_eq!(sample(&logits, &greedy, &mut rng, &mut Vec::new()), top[0]);
    }
}
