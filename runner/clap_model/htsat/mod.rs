//! HTSAT, CLAP's audio encoder (transformers' `ClapAudioEncoder`): the batch-normed log-mel is
//! stretched and folded into a square image ([`mel`]), cut into patches (with `enable_fusion`, the
//! three local crops go through their own wide-stride conv and are merged into the global patches
//! by the attentional feature fusion block), run through a Swin transformer ([`swin`]) and
//! mean-pooled; [`Projection`] is the `ClapProjectionLayer` head on top.

mod mel;
mod swin;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::ClapError;
use super::config::AudioConfig;

use mel::EvalBatchNorm;
pub use mel::bicubic_align_corners;
use swin::Stage;

/// An audio config this port (or transformers itself) cannot run.
fn unsupported(message: String) -> ClapError {
    ClapError::snapshot("config.json", format!("audio_config: {message}"))
}

/// PyTorch's default `nn.LayerNorm` eps, which the patch-embedding and final norms keep.
const TORCH_LN_EPS: f64 = 1e-5;

/// A single-input-channel conv whose kernel equals its stride and has no padding (HTSAT's patch
/// convs, `patch_size == patch_stride`): non-overlapping patches times a matrix. candle's conv2d
/// takes one stride for both axes, which the `(p, 3p)` fusion conv does not have.
struct PatchConv {
    /// `[kh·kw, out]`.
    weight: Tensor,
    bias: Tensor,
    kh: usize,
    kw: usize,
}

impl PatchConv {
    fn load(vb: VarBuilder, out: usize, kh: usize, kw: usize) -> Result<Self, ClapError> {
        let weight = vb
            .get((out, 1, kh, kw), "weight")?
            .reshape((out, kh * kw))?
            .t()?
            .contiguous()?;
        Ok(Self {
            weight,
            bias: vb.get(out, "bias")?,
            kh,
            kw,
        })
    }

    /// `planes`: `[n, height, width]` → `[n, height / kh, width / kw, out]` (channels last; the
    /// right/bottom remainder a strided conv never reaches is dropped).
    fn forward(&self, planes: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w) = planes.dims3()?;
        let (ho, wo) = (h / self.kh, w / self.kw);
        planes
            .narrow(1, 0, ho * self.kh)?
            .narrow(2, 0, wo * self.kw)?
            .reshape((n, ho, self.kh, wo, self.kw))?
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((n * ho * wo, self.kh * self.kw))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((n, ho, wo, ()))
    }
}

/// Eval-mode `BatchNorm2d` on channels-last activations.
struct ChannelNorm {
    alpha: Tensor,
    beta: Tensor,
}

impl ChannelNorm {
    fn load(vb: VarBuilder, channels: usize) -> Result<Self, ClapError> {
        let norm = read_batch_norm(&vb, channels)?;
        let device = vb.device();
        Ok(Self {
            alpha: Tensor::from_vec(norm.alpha, channels, device)?.to_dtype(vb.dtype())?,
            beta: Tensor::from_vec(norm.beta, channels, device)?.to_dtype(vb.dtype())?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.alpha)?.broadcast_add(&self.beta)
    }
}

fn read_batch_norm(vb: &VarBuilder, channels: usize) -> Result<EvalBatchNorm, ClapError> {
    let read = |name: &str| -> Result<Vec<f32>, ClapError> {
        Ok(vb
            .get(channels, name)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    };
    Ok(EvalBatchNorm::new(
        &read("weight")?,
        &read("bias")?,
        &read("running_mean")?,
        &read("running_var")?,
    ))
}

/// One attention branch of the AFF block: 1×1 conv, BN, ReLU, 1×1 conv, BN (convs as matrices on
/// channels-last activations). `first` is the `nn.Sequential` index of its first conv.
struct AffBranch {
    conv1: Linear,
    bn1: ChannelNorm,
    conv2: Linear,
    bn2: ChannelNorm,
}

impl AffBranch {
    fn load(
        vb: VarBuilder,
        first: usize,
        channels: usize,
        inter: usize,
    ) -> Result<Self, ClapError> {
        let conv = |i: usize, out: usize, inp: usize| -> Result<Linear, ClapError> {
            let vb = vb.pp(i.to_string());
            let weight = vb.get((out, inp, 1, 1), "weight")?.reshape((out, inp))?;
            Ok(Linear::new(weight, Some(vb.get(out, "bias")?)))
        };
        Ok(Self {
            conv1: conv(first, inter, channels)?,
            bn1: ChannelNorm::load(vb.pp((first + 1).to_string()), inter)?,
            conv2: conv(first + 3, channels, inter)?,
            bn2: ChannelNorm::load(vb.pp((first + 4).to_string()), channels)?,
        })
    }

    /// `x`: `[n, tokens, channels]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        self.bn2.forward(&self.conv2.forward(&x)?)
    }
}

/// `ClapAudioAFFBlock`: a sigmoid gate from local (per-position) and global (pooled) attention
/// blends the global patches with the local ones.
struct AffBlock {
    local: AffBranch,
    global: AffBranch,
}

impl AffBlock {
    fn load(vb: VarBuilder, cfg: &AudioConfig) -> Result<Self, ClapError> {
        let channels = cfg.patch_embeds_hidden_size;
        let inter = channels / cfg.aff_block_r.max(1);
        if inter == 0 {
            return Err(unsupported(format!(
                "aff_block_r {} leaves no channels of {channels}",
                cfg.aff_block_r
            )));
        }
        Ok(Self {
            // local_att = [conv, bn, relu, conv, bn]; global_att starts with the pooling.
            local: AffBranch::load(vb.pp("local_att"), 0, channels, inter)?,
            global: AffBranch::load(vb.pp("global_att"), 1, channels, inter)?,
        })
    }

    /// `x` (global) and `residual` (local): `[n, tokens, channels]`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let sum = (x + residual)?;
        let local = self.local.forward(&sum)?;
        let global = self.global.forward(&sum.mean_keepdim(1)?)?;
        let gate = candle_nn::ops::sigmoid(&local.broadcast_add(&global)?)?;
        let keep = ((x * 2.0)? * &gate)?;
        let blend = ((residual * 2.0)? * gate.affine(-1.0, 1.0)?)?;
        keep + blend
    }
}

struct Fusion {
    mel_conv: PatchConv,
    block: AffBlock,
}

/// `ClapAudioPatchEmbed` (flattened, channels last).
struct PatchEmbed {
    proj: PatchConv,
    fusion: Option<Fusion>,
    norm: Option<LayerNorm>,
}

impl PatchEmbed {
    fn load(vb: VarBuilder, cfg: &AudioConfig) -> Result<Self, ClapError> {
        let [ph, pw] = cfg.patch_size.pair();
        let dim = cfg.patch_embeds_hidden_size;
        let proj = PatchConv::load(vb.pp("proj"), dim, ph, pw)?;
        let fusion = if cfg.enable_fusion {
            Some(Fusion {
                mel_conv: PatchConv::load(vb.pp("mel_conv2d"), dim, ph, 3 * pw)?,
                block: AffBlock::load(vb.pp("fusion_model"), cfg)?,
            })
        } else {
            None
        };
        let norm = if cfg.enable_patch_layer_norm {
            Some(candle_nn::layer_norm(dim, TORCH_LN_EPS, vb.pp("norm"))?)
        } else {
            None
        };
        Ok(Self { proj, fusion, norm })
    }

    /// `image`: `[batch, channels, spec, spec]` → `[batch, tokens, dim]` (row-major token grid).
    fn forward(&self, image: &Tensor, is_longer: &[bool]) -> candle_core::Result<Tensor> {
        let (batch, _, h, w) = image.dims4()?;
        let global = self
            .proj
            .forward(&image.narrow(1, 0, 1)?.reshape((batch, h, w))?)?;
        let (_, gh, gw, dim) = global.dims4()?;
        let global = global.reshape((batch, gh * gw, dim))?;
        let longer: Vec<u32> = (0..batch as u32)
            .filter(|&i| is_longer[i as usize])
            .collect();
        let tokens = match &self.fusion {
            Some(fusion) if !longer.is_empty() => {
                let rows = Tensor::from_slice(&longer, longer.len(), image.device())?;
                let n = longer.len();
                // The crops are channels 1..; each goes through mel_conv2d alone and the results
                // lie side by side along time, zero-padded (or cut) to the global grid's width.
                let crops = image.index_select(&rows, 0)?.narrow(1, 1, 3)?;
                let local = fusion.mel_conv.forward(&crops.reshape((n * 3, h, w))?)?;
                let (_, lh, lw, _) = local.dims4()?;
                let local = local
                    .reshape((n, 3, lh, lw, dim))?
                    .permute((0, 2, 1, 3, 4))?
                    .contiguous()?
                    .reshape((n, lh, 3 * lw, dim))?;
                let local = if 3 * lw < gw {
                    local.pad_with_zeros(2, 0, gw - 3 * lw)?
                } else {
                    local.narrow(2, 0, gw)?
                };
                let local = local.reshape((n, lh * gw, dim))?;
                let fused = fusion
                    .block
                    .forward(&global.index_select(&rows, 0)?, &local)?;
                // Row i takes its fused version where it is longer, its global patches otherwise.
                let mut next = batch as u32;
                let pick: Vec<u32> = is_longer
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        if l {
                            next += 1;
                            next - 1
                        } else {
                            i as u32
                        }
                    })
                    .collect();
                let pick = Tensor::from_slice(&pick, batch, image.device())?;
                Tensor::cat(&[&global, &fused], 0)?.index_select(&pick, 0)?
            }
            _ => global,
        };
        match &self.norm {
            Some(norm) => norm.forward(&tokens),
            None => Ok(tokens),
        }
    }
}

/// The HTSAT audio encoder with its weights, on the VarBuilder's device and dtype.
pub struct HtsatEncoder {
    batch_norm: EvalBatchNorm,
    patch_embed: PatchEmbed,
    stages: Vec<Stage>,
    norm: LayerNorm,
    spec_size: usize,
    freq_ratio: usize,
    num_mel_bins: usize,
    channels: usize,
    dtype: DType,
    device: Device,
}

impl HtsatEncoder {
    /// `vb` rooted at `audio_model.audio_encoder`.
    pub fn load(vb: VarBuilder, cfg: &AudioConfig) -> Result<Self, ClapError> {
        let stages = cfg.depths.len();
        if stages == 0 || cfg.num_attention_heads.len() != stages {
            return Err(unsupported(format!(
                "depths {:?} and num_attention_heads {:?} must be non-empty and of one length",
                cfg.depths, cfg.num_attention_heads
            )));
        }
        if cfg.num_mel_bins == 0 || !cfg.spec_size.is_multiple_of(cfg.num_mel_bins) {
            return Err(unsupported(format!(
                "spec_size {} is not a multiple of num_mel_bins {}",
                cfg.spec_size, cfg.num_mel_bins
            )));
        }
        if cfg.patch_size.pair() != cfg.patch_stride.pair() {
            return Err(unsupported(format!(
                "patch_size {:?} differs from patch_stride {:?} (overlapping patches are not ported)",
                cfg.patch_size.pair(),
                cfg.patch_stride.pair()
            )));
        }
        if cfg.patch_embed_input_channels != 1 || !cfg.flatten_patch_embeds {
            return Err(unsupported(
                "patch_embed_input_channels must be 1 and flatten_patch_embeds true \
                 (transformers' forward assumes both)"
                    .into(),
            ));
        }
        if cfg.enable_fusion && cfg.fusion_type.as_deref() == Some("channel_map") {
            return Err(unsupported(
                "fusion_type \"channel_map\" is not supported (transformers cannot run it either)"
                    .into(),
            ));
        }
        let hidden = cfg.patch_embeds_hidden_size << (stages - 1);
        if hidden != cfg.hidden_size {
            return Err(unsupported(format!(
                "hidden_size {} is not patch_embeds_hidden_size·2^(stages−1) = {hidden}",
                cfg.hidden_size
            )));
        }
        let [sh, sw] = cfg.patch_stride.pair();
        if cfg.window_size == 0 || sh == 0 || sw == 0 || sh > cfg.spec_size || sw > cfg.spec_size {
            return Err(unsupported(format!(
                "window_size {} and patch_stride {:?} must be positive, the stride at most spec_size {}",
                cfg.window_size,
                [sh, sw],
                cfg.spec_size
            )));
        }
        let (gh, gw) = (cfg.spec_size / sh, cfg.spec_size / sw);
        // transformers gives stage i the grid (gh >> i, gw >> i) while merging rounds up: they
        // agree only on grids halving evenly.
        if !gh.is_multiple_of(1 << (stages - 1)) || !gw.is_multiple_of(1 << (stages - 1)) {
            return Err(unsupported(format!(
                "the {gh}×{gw} patch grid does not halve evenly over {stages} stages"
            )));
        }
        let stages = (0..stages)
            .map(|i| Stage::load(vb.pp(format!("layers.{i}")), cfg, i, gh >> i, gw >> i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            batch_norm: read_batch_norm(&vb.pp("batch_norm"), cfg.num_mel_bins)?,
            patch_embed: PatchEmbed::load(vb.pp("patch_embed"), cfg)?,
            stages,
            norm: candle_nn::layer_norm(hidden, TORCH_LN_EPS, vb.pp("norm"))?,
            spec_size: cfg.spec_size,
            freq_ratio: cfg.spec_size / cfg.num_mel_bins,
            num_mel_bins: cfg.num_mel_bins,
            channels: if cfg.enable_fusion { 4 } else { 1 },
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    fn check_input(&self, input_features: &Tensor) -> Result<(usize, usize, usize), ClapError> {
        let dims = input_features.dims();
        let [batch, channels, time, mel] = *dims else {
            return Err(ClapError::Input(format!(
                "input_features must be [batch, channels, time, mel], got shape {dims:?}"
            )));
        };
        let max_time = self.spec_size * self.freq_ratio;
        if batch == 0 {
            return Err(ClapError::Input("input_features has an empty batch".into()));
        }
        if channels != self.channels {
            return Err(ClapError::Input(format!(
                "input_features has {channels} channels, this {} model takes {}",
                if self.channels == 4 {
                    "fused"
                } else {
                    "unfused"
                },
                self.channels
            )));
        }
        if mel != self.num_mel_bins {
            return Err(ClapError::Input(format!(
                "input_features has {mel} mel bins, the model takes {}",
                self.num_mel_bins
            )));
        }
        if time == 0 || time > max_time {
            return Err(ClapError::Input(format!(
                "input_features has {time} frames, the model takes 1 to {max_time}"
            )));
        }
        Ok((batch, channels, time))
    }

    /// batch_norm + reshape_mel2img: the image fed to the patch embedding [B, C, spec_size, spec_size].
    pub fn mel2img(&self, input_features: &Tensor) -> Result<Tensor, ClapError> {
        let (batch, channels, time) = self.check_input(input_features)?;
        let data: Vec<f32> = input_features
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
            return Err(ClapError::Input(format!(
                "input_features holds a non-finite value at flat index {bad}"
            )));
        }
        let image = mel::mel_to_image(
            &data,
            batch * channels,
            time,
            &self.batch_norm,
            self.spec_size,
            self.freq_ratio,
        );
        let s = self.spec_size;
        Ok(Tensor::from_vec(image, (batch, channels, s, s), &self.device)?.to_dtype(self.dtype)?)
    }

    /// input_features [B, C, T, F] f32 (C = 1, or 4 with fusion), is_longer one flag per batch row
    /// (read only by fused models); returns pooler_output [B, hidden_size].
    pub fn forward(
        &self,
        input_features: &Tensor,
        is_longer: &[bool],
    ) -> Result<Tensor, ClapError> {
        let (batch, _, _) = self.check_input(input_features)?;
        if is_longer.len() != batch {
            return Err(ClapError::Input(format!(
                "is_longer has {} flags for a batch of {batch}",
                is_longer.len()
            )));
        }
        let image = self.mel2img(input_features)?;
        let mut x = self.patch_embed.forward(&image, is_longer)?;
        for stage in &self.stages {
            x = stage.forward(&x)?;
        }
        // The grouped 2-D regrouping before transformers' AdaptiveAvgPool1d(1) only permutes the
        // tokens, so the pooled output is their plain mean.
        Ok(self.norm.forward(&x)?.mean(1)?)
    }
}

/// `ClapProjectionLayer`: linear1 → ReLU → linear2.
pub struct Projection {
    linear1: Linear,
    linear2: Linear,
}

impl Projection {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self, ClapError> {
        Ok(Self {
            linear1: candle_nn::linear(in_dim, out_dim, vb.pp("linear1"))?,
            linear2: candle_nn::linear(out_dim, out_dim, vb.pp("linear2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ClapError> {
        Ok(self.linear2.forward(&self.linear1.forward(x)?.relu()?)?)
    }
}
