//! The Swin part of HTSAT: `ClapAudioStage`s of `ClapAudioLayer`s (window attention with relative
//! position bias, shifted windows on every second layer) and `ClapAudioPatchMerging` between stages.
//!
//! Per layer everything that depends only on the grid is built once at load: the token order of the
//! (padded, cyclically shifted) windows and its inverse as two gather indices, and the relative
//! position bias with the shift mask already added, so a forward is two `index_select`s, one batched
//! attention over all windows and the MLP.

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::super::ClapError;
use super::unsupported;

/// What transformers adds to the scores of token pairs from different regions of a shifted window.
const SHIFT_MASK: f32 = -100.0;

/// `ACT2FN[hidden_act]` for the activations HTSAT checkpoints use. Note transformers' `"gelu"` is the
/// exact erf form (candle_nn's `Activation` maps that name to the tanh approximation).
#[derive(Debug, Clone, Copy)]
pub(super) enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Act {
    pub(super) fn parse(name: &str) -> Result<Self, ClapError> {
        match name {
            "gelu" => Ok(Act::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Act::GeluTanh),
            "relu" => Ok(Act::Relu),
            other => Err(unsupported(format!(
                "hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))),
        }
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::GeluErf => x.gelu_erf(),
            Act::GeluTanh => x.gelu(),
            Act::Relu => x.relu(),
        }
    }
}

/// Where each token goes for window attention at one layer (`ws` tokens a side, cyclic shift `shift`,
/// the grid zero-padded on the bottom/right to whole windows first, as `maybe_pad` does).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct WindowPlan {
    pub windows: usize,
    /// For each window slot (window-major, row-major inside the window) the token it reads, where
    /// `height · width` stands for a zero padding token.
    pub gather: Vec<u32>,
    /// For each token the window slot holding its attention output (undoes shift and partition and
    /// drops the padding).
    pub scatter: Vec<u32>,
    pub padded: bool,
    /// `[windows, ws², ws²]`: 0 within a shift region, −100 across regions (`get_attn_mask`);
    /// `None` when the layer is not shifted.
    pub mask: Option<Vec<f32>>,
}

impl WindowPlan {
    pub(super) fn new(height: usize, width: usize, ws: usize, shift: usize) -> Self {
        let hp = height.div_ceil(ws) * ws;
        let wp = width.div_ceil(ws) * ws;
        let (nh, nw) = (hp / ws, wp / ws);
        let len = ws * ws;
        let slot = |i: usize, j: usize| ((i / ws) * nw + j / ws) * len + (i % ws) * ws + j % ws;
        let pad_token = (height * width) as u32;
        // torch.roll(padded, -shift): the shifted grid at (i, j) holds padded (i + shift, j + shift).
        let mut gather = vec![0u32; nh * nw * len];
        for i in 0..hp {
            for j in 0..wp {
                let (r, c) = ((i + shift) % hp, (j + shift) % wp);
                gather[slot(i, j)] = if r < height && c < width {
                    (r * width + c) as u32
                } else {
                    pad_token
                };
            }
        }
        let mut scatter = Vec::with_capacity(height * width);
        for r in 0..height {
            for c in 0..width {
                scatter.push(slot((r + hp - shift) % hp, (c + wp - shift) % wp) as u32);
            }
        }
        let mask = (shift > 0).then(|| {
            let region =
                |x: usize, n: usize| usize::from(x >= n - ws) + usize::from(x >= n - shift);
            let mut labels = vec![0usize; nh * nw * len];
            for i in 0..hp {
                for j in 0..wp {
                    labels[slot(i, j)] = region(i, hp) * 3 + region(j, wp);
                }
            }
            let mut mask = Vec::with_capacity(nh * nw * len * len);
            for window in labels.chunks_exact(len) {
                for p in window {
                    mask.extend(window.iter().map(|q| if p == q { 0.0 } else { SHIFT_MASK }));
                }
            }
            mask
        });
        Self {
            windows: nh * nw,
            gather,
            scatter,
            padded: hp != height || wp != width,
            mask,
        }
    }
}

/// `create_relative_position_index`: the bias-table row of each (query, key) pair of a window.
fn relative_position_index(ws: usize) -> Vec<usize> {
    let len = ws * ws;
    let mut index = Vec::with_capacity(len * len);
    for p in 0..len {
        for q in 0..len {
            let dh = p / ws + ws - 1 - q / ws;
            let dw = p % ws + ws - 1 - q % ws;
            index.push(dh * (2 * ws - 1) + dw);
        }
    }
    index
}

struct WindowAttention {
    /// query, key and value stacked into one `[3·dim, dim]` projection.
    qkv: Linear,
    output: Linear,
    heads: usize,
    head_dim: usize,
    /// `[1 or windows, heads, ws², ws²]`: relative position bias plus the shift mask.
    bias: Tensor,
}

impl WindowAttention {
    fn load(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        ws: usize,
        qkv_bias: bool,
        plan: &WindowPlan,
    ) -> Result<Self, ClapError> {
        let attn = vb.pp("self");
        let weights = ["query", "key", "value"]
            .iter()
            .map(|n| attn.get((dim, dim), &format!("{n}.weight")))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let bias = if qkv_bias {
            let b = ["query", "key", "value"]
                .iter()
                .map(|n| attn.get(dim, &format!("{n}.bias")))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&b, 0)?)
        } else {
            None
        };
        let qkv = Linear::new(Tensor::cat(&weights, 0)?, bias);
        let output = candle_nn::linear(dim, dim, vb.pp("output.dense"))?;

        let table_rows = (2 * ws - 1) * (2 * ws - 1);
        let table: Vec<f32> = attn
            .get((table_rows, heads), "relative_position_bias_table")?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let len = ws * ws;
        let index = relative_position_index(ws);
        let mut rel = Vec::with_capacity(heads * len * len);
        for h in 0..heads {
            rel.extend(index.iter().map(|&row| table[row * heads + h]));
        }
        let device = vb.device();
        let bias = match &plan.mask {
            None => Tensor::from_vec(rel, (1, heads, len, len), device)?,
            Some(mask) => {
                let mut full = Vec::with_capacity(plan.windows * heads * len * len);
                for window in mask.chunks_exact(len * len) {
                    for head in rel.chunks_exact(len * len) {
                        full.extend(head.iter().zip(window).map(|(b, m)| b + m));
                    }
                }
                Tensor::from_vec(full, (plan.windows, heads, len, len), device)?
            }
        }
        .to_dtype(vb.dtype())?;
        Ok(Self {
            qkv,
            output,
            heads,
            head_dim: dim / heads,
            bias,
        })
    }

    /// `windows`: `[batch · n_windows, ws², dim]`.
    fn forward(&self, windows: &Tensor, batch: usize) -> candle_core::Result<Tensor> {
        let (bn, len, dim) = windows.dims3()?;
        let qkv = self
            .qkv
            .forward(windows)?
            .reshape((bn, len, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?
            .reshape((batch, bn / batch, self.heads, len, len))?
            .broadcast_add(&self.bias)?
            .reshape((bn, self.heads, len, len))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bn, len, dim))?;
        self.output.forward(&context)
    }
}

/// `ClapAudioLayer` at a fixed grid.
struct SwinLayer {
    layernorm_before: LayerNorm,
    attention: WindowAttention,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
    act: Act,
    windows: usize,
    window_len: usize,
    gather: Tensor,
    scatter: Tensor,
    padded: bool,
}

pub(super) struct LayerSpec {
    pub dim: usize,
    pub heads: usize,
    pub height: usize,
    pub width: usize,
    pub shift: usize,
}

impl SwinLayer {
    fn load(vb: VarBuilder, cfg: &super::AudioConfig, spec: &LayerSpec) -> Result<Self, ClapError> {
        let LayerSpec {
            dim,
            heads,
            height,
            width,
            shift,
        } = *spec;
        // set_shift_and_window_size: a grid no larger than a window is one unshifted window.
        let (ws, shift) = if height.min(width) <= cfg.window_size {
            (height.min(width), 0)
        } else {
            (cfg.window_size, shift)
        };
        if ws != cfg.window_size {
            return Err(unsupported(format!(
                "a {height}×{width} token grid is smaller than window_size {} (transformers' relative \
                 position table would not match either)",
                cfg.window_size
            )));
        }
        let plan = WindowPlan::new(height, width, ws, shift);
        let hidden = (cfg.mlp_ratio * dim as f64) as usize;
        let eps = cfg.layer_norm_eps;
        let device = vb.device().clone();
        let index = |v: &[u32]| Tensor::from_slice(v, v.len(), &device);
        Ok(Self {
            layernorm_before: candle_nn::layer_norm(dim, eps, vb.pp("layernorm_before"))?,
            attention: WindowAttention::load(
                vb.pp("attention"),
                dim,
                heads,
                ws,
                cfg.qkv_bias,
                &plan,
            )?,
            layernorm_after: candle_nn::layer_norm(dim, eps, vb.pp("layernorm_after"))?,
            intermediate: candle_nn::linear(dim, hidden, vb.pp("intermediate.dense"))?,
            output: candle_nn::linear(hidden, dim, vb.pp("output.dense"))?,
            act: Act::parse(&cfg.hidden_act)?,
            windows: plan.windows,
            window_len: ws * ws,
            gather: index(&plan.gather)?,
            scatter: index(&plan.scatter)?,
            padded: plan.padded,
        })
    }

    /// `x`: `[batch, height · width, dim]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, _, dim) = x.dims3()?;
        let normed = self.layernorm_before.forward(x)?;
        let normed = if self.padded {
            let zero = Tensor::zeros((batch, 1, dim), normed.dtype(), normed.device())?;
            Tensor::cat(&[&normed, &zero], 1)?
        } else {
            normed
        };
        let windows = normed.index_select(&self.gather, 1)?.reshape((
            batch * self.windows,
            self.window_len,
            dim,
        ))?;
        let attended = self
            .attention
            .forward(&windows, batch)?
            .reshape((batch, self.windows * self.window_len, dim))?
            .index_select(&self.scatter, 1)?;
        let x = (x + attended)?;
        let mlp = self.output.forward(
            &self.act.apply(
                &self
                    .intermediate
                    .forward(&self.layernorm_after.forward(&x)?)?,
            )?,
        )?;
        x + mlp
    }
}

/// `ClapAudioPatchMerging`: 2×2 neighbourhoods concatenated (top-left, bottom-left, top-right,
/// bottom-right), normed and projected to twice the width.
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
    height: usize,
    width: usize,
}

impl PatchMerging {
    /// transformers' `nn.LayerNorm(4 · dim)` keeps PyTorch's default eps, not the config's.
    const NORM_EPS: f64 = 1e-5;

    fn load(vb: VarBuilder, dim: usize, height: usize, width: usize) -> Result<Self, ClapError> {
        Ok(Self {
            norm: candle_nn::layer_norm(4 * dim, Self::NORM_EPS, vb.pp("norm"))?,
            reduction: candle_nn::linear_no_bias(4 * dim, 2 * dim, vb.pp("reduction"))?,
            height,
            width,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, _, dim) = x.dims3()?;
        let mut grid = x.reshape((batch, self.height, self.width, dim))?;
        if self.height % 2 == 1 {
            grid = grid.pad_with_zeros(1, 0, 1)?;
        }
        if self.width % 2 == 1 {
            grid = grid.pad_with_zeros(2, 0, 1)?;
        }
        let (h2, w2) = (self.height.div_ceil(2), self.width.div_ceil(2));
        let merged = grid
            .reshape((batch * h2, 2, w2, 2, dim))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((batch, h2 * w2, 4 * dim))?;
        self.reduction.forward(&self.norm.forward(&merged)?)
    }
}

/// `ClapAudioStage`: its layers, then (all but the last stage) patch merging.
pub(super) struct Stage {
    layers: Vec<SwinLayer>,
    merge: Option<PatchMerging>,
}

impl Stage {
    /// `vb` at `layers.{i}`; the grid `height × width` is the stage's input resolution.
    pub(super) fn load(
        vb: VarBuilder,
        cfg: &super::AudioConfig,
        stage: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, ClapError> {
        let dim = cfg.patch_embeds_hidden_size << stage;
        let heads = cfg.num_attention_heads[stage];
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(unsupported(format!(
                "stage {stage}: width {dim} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let layers = (0..cfg.depths[stage])
            .map(|i| {
                let spec = LayerSpec {
                    dim,
                    heads,
                    height,
                    width,
                    shift: if i % 2 == 0 { 0 } else { cfg.window_size / 2 },
                };
                SwinLayer::load(vb.pp(format!("blocks.{i}")), cfg, &spec)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let merge = if stage + 1 < cfg.depths.len() {
            Some(PatchMerging::load(vb.pp("downsample"), dim, height, width)?)
        } else {
            None
        };
        Ok(Self { layers, merge })
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        match &self.merge {
            Some(merge) => merge.forward(&x),
            None => Ok(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar())
            .unwrap()
    }

    /// The straightforward transformers order on a `[1, H, W, C]` grid: pad, roll, partition.
    fn reference_windows(x: &Tensor, ws: usize, shift: usize) -> Tensor {
        let (_, h, w, c) = x.dims4().unwrap();
        let hp = h.div_ceil(ws) * ws;
        let wp = w.div_ceil(ws) * ws;
        let padded = x
            .pad_with_zeros(1, 0, hp - h)
            .unwrap()
            .pad_with_zeros(2, 0, wp - w)
            .unwrap();
        let shifted = padded
            .roll(-(shift as i32), 1)
            .unwrap()
            .roll(-(shift as i32), 2)
            .unwrap();
        shifted
            .reshape((1, hp / ws, ws, wp / ws, ws, c))
            .unwrap()
            .permute((0, 1, 3, 2, 4, 5))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((1, (hp / ws) * (wp / ws) * ws * ws, c))
            .unwrap()
    }

    #[test]
    fn gather_matches_pad_roll_partition_and_scatter_undoes_it() {
        let dev = Device::Cpu;
        for (h, w, ws, shift) in [(8, 8, 4, 2), (5, 7, 4, 2), (6, 9, 3, 1), (4, 4, 4, 0)] {
            let c = 3;
            let x = Tensor::arange(1f32, (h * w * c) as f32 + 1.0, &dev)
                .unwrap()
                .reshape((1, h, w, c))
                .unwrap();
            let plan = WindowPlan::new(h, w, ws, shift);
            let tokens = x.reshape((1, h * w, c)).unwrap();
            let with_pad = Tensor::cat(
                &[
                    &tokens,
                    &Tensor::zeros((1, 1, c), DType::F32, &dev).unwrap(),
                ],
                1,
            )
            .unwrap();
            let gather = Tensor::from_slice(&plan.gather, plan.gather.len(), &dev).unwrap();
            let windows = with_pad.index_select(&gather, 1).unwrap();
            let expected = reference_windows(&x, ws, shift);
            assert_eq!(
                max_diff(&windows, &expected),
                0.0,
                "{h}x{w} ws {ws} shift {shift}"
            );
            let scatter = Tensor::from_slice(&plan.scatter, plan.scatter.len(), &dev).unwrap();
            let back = windows.index_select(&scatter, 1).unwrap();
            assert_eq!(
                max_diff(&back, &tokens),
                0.0,
                "{h}x{w} ws {ws} shift {shift}: scatter"
            );
            assert_eq!(plan.padded, h % ws != 0 || w % ws != 0);
        }
    }

    #[test]
    fn shift_mask_separates_the_wrapped_regions() {
        // 8×8 grid, windows of 4, shift 2: transformers' get_attn_mask gives an all-zero first
        // window, and the last window has four regions of four tokens each.
        let plan = WindowPlan::new(8, 8, 4, 2);
        let mask = plan.mask.unwrap();
        assert_eq!(mask.len(), 4 * 16 * 16);
        assert!(mask[..256].iter().all(|&m| m == 0.0));
        let last = &mask[3 * 256..];
        let zeros_per_row: Vec<usize> = last
            .chunks_exact(16)
            .map(|row| row.iter().filter(|&&m| m == 0.0).count())
            .collect();
        assert!(zeros_per_row.iter().all(|&n| n == 4), "{zeros_per_row:?}");
        assert!(WindowPlan::new(8, 8, 4, 0).mask.is_none());
    }

    #[test]
    fn relative_index_matches_transformers_corners() {
        // ws = 2: transformers' relative_position_index is [[4,3,1,0],[5,4,2,1],[7,6,4,3],[8,7,5,4]].
        assert_eq!(
            relative_position_index(2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }
}
