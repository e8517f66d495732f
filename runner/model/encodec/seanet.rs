//! SEANet encoder/decoder as in HF's `modeling_encodec.py`: padded convolutions (`EncodecConv1d`),
//! trimmed transposed convolutions (`EncodecConvTranspose1d`), residual blocks, the skip LSTM and ELU.
//! Layer indices follow HF's `nn.ModuleList` (parameterless ELUs take an index too) so weight names match.

use candle_core::{D, Tensor};
use candle_nn::VarBuilder;

use super::EncodecError;
use super::config::{EncodecConfig, PadMode};
use super::conv::Kernel;
use super::lstm::Lstm;

type Result<T> = std::result::Result<T, EncodecError>;

/// `EncodecConv1d._pad1d`: torch padding, except that reflect on an input no longer than the pad first
/// appends zeros (torch's reflect needs pad < length), then drops them again.
fn pad1d(x: &Tensor, left: usize, right: usize, mode: PadMode) -> Result<Tensor> {
    Ok(match mode {
        PadMode::Constant => x.pad_with_zeros(D::Minus1, left, right)?,
        PadMode::Replicate => x.pad_with_same(D::Minus1, left, right)?,
        PadMode::Reflect => {
            let max_pad = left.max(right);
            let len = x.dim(D::Minus1)?;
            let extra = if len <= max_pad { max_pad - len + 1 } else { 0 };
            let x = x.pad_with_zeros(D::Minus1, 0, extra)?;
            let padded = super::conv::reflect_pad(&x, left, right)?;
            padded.narrow(D::Minus1, 0, left + len + extra + right - extra)?
        }
    })
}

/// `EncodecConv1d`: "same"-style padding so the output has ceil(T / stride) frames.
pub struct Conv1d {
    weight: Kernel,
    bias: Tensor,
    stride: usize,
    dilation: usize,
    causal: bool,
    pad_mode: PadMode,
}

impl Conv1d {
    fn new(
        cfg: &EncodecConfig,
        vb: VarBuilder,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        dilation: usize,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        Ok(Self {
            weight: Kernel::new(vb.get((cout, cin, k), "weight")?)?,
            bias: vb.get(cout, "bias")?,
            stride,
            dilation,
            causal: cfg.use_causal_conv,
            pad_mode: cfg.pad_mode()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = (self.weight.dims()?.2 - 1) * self.dilation + 1;
        let padding_total = k - self.stride;
        let len = x.dim(D::Minus1)?;
        // HF's `_get_extra_padding_for_conv1d`, in float as HF computes it
        let n_frames = (len as f64 - k as f64 + padding_total as f64) / self.stride as f64 + 1.0;
        let ideal = (n_frames.ceil() as i64 - 1) * self.stride as i64 + (k - padding_total) as i64;
        let extra = (ideal - len as i64).max(0) as usize;
        let x = if self.causal {
            pad1d(x, padding_total, extra, self.pad_mode)?
        } else {
            let right = padding_total / 2;
            pad1d(x, padding_total - right, right + extra, self.pad_mode)?
        };
        super::conv::conv1d(&x, &self.weight, &self.bias, self.stride, self.dilation)
    }
}

/// `EncodecConvTranspose1d`: transposed convolution with the fixed padding trimmed off.
pub struct ConvTranspose1d {
    weight: Kernel,
    bias: Tensor,
    stride: usize,
    causal: bool,
    trim_right_ratio: f64,
}

impl ConvTranspose1d {
    fn new(
        cfg: &EncodecConfig,
        vb: VarBuilder,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        Ok(Self {
            weight: Kernel::new(vb.get((cin, cout, k), "weight")?)?,
            bias: vb.get(cout, "bias")?,
            stride,
            causal: cfg.use_causal_conv,
            trim_right_ratio: cfg.trim_right_ratio,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let padding_total = self.weight.dims()?.2 - self.stride;
        let y = super::conv::conv_transpose1d(x, &self.weight, &self.bias, self.stride)?;
        let right = if self.causal {
            (padding_total as f64 * self.trim_right_ratio).ceil() as usize
        } else {
            padding_total / 2
        };
        let left = padding_total - right;
        let len = y.dim(D::Minus1)?;
        Ok(y.narrow(D::Minus1, left, len - left - right)?)
    }
}

/// `EncodecResnetBlock`: ELU, conv(k, dilation), ELU, conv(1), plus a 1x1-conv or identity shortcut.
pub struct ResnetBlock {
    convs: Vec<Conv1d>,
    shortcut: Option<Conv1d>,
}

impl ResnetBlock {
    fn new(cfg: &EncodecConfig, vb: VarBuilder, dim: usize, dilations: [usize; 2]) -> Result<Self> {
        let hidden = dim / cfg.compress;
        let kernels = [cfg.residual_kernel_size, 1];
        let convs = (0..2)
            .map(|i| {
                let cin = if i == 0 { dim } else { hidden };
                let cout = if i == 1 { dim } else { hidden };
                // block.{0,2} are ELUs
                Conv1d::new(
                    cfg,
                    vb.pp(format!("block.{}", 2 * i + 1)),
                    (cin, cout, kernels[i]),
                    1,
                    dilations[i],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let shortcut = if cfg.use_conv_shortcut {
            Some(Conv1d::new(cfg, vb.pp("shortcut"), (dim, dim, 1), 1, 1)?)
        } else {
            None
        };
        Ok(Self { convs, shortcut })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&crate::model::kernels::elu(&h)?)?;
        }
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

enum Layer {
    Conv(Conv1d),
    ConvTr(ConvTranspose1d),
    Res(ResnetBlock),
    Lstm(Lstm),
    Elu,
}

/// A SEANet stack (`EncodecEncoder` or `EncodecDecoder`).
pub struct Seanet {
    layers: Vec<Layer>,
}

impl Seanet {
    pub fn encoder(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let mut layers = Vec::new();
        let mut push = |make: &mut dyn FnMut(VarBuilder) -> Result<Layer>| -> Result<()> {
            let l = make(vb.pp(layers.len()))?;
            layers.push(l);
            Ok(())
        };
        let nf = cfg.num_filters;
        push(&mut |vb| {
            Ok(Layer::Conv(Conv1d::new(
                cfg,
                vb,
                (cfg.audio_channels, nf, cfg.kernel_size),
                1,
                1,
            )?))
        })?;
        let mut scaling = 1;
        for &ratio in cfg.upsampling_ratios.iter().rev() {
            let scale = scaling * nf;
            for j in 0..cfg.num_residual_layers {
                let dil = [cfg.dilation_growth_rate.pow(j as u32), 1];
                push(&mut |vb| Ok(Layer::Res(ResnetBlock::new(cfg, vb, scale, dil)?)))?;
            }
            push(&mut |_| Ok(Layer::Elu))?;
            push(&mut |vb| {
                Ok(Layer::Conv(Conv1d::new(
                    cfg,
                    vb,
                    (scale, scale * 2, ratio * 2),
                    ratio,
                    1,
                )?))
            })?;
            scaling *= 2;
        }
        let top = scaling * nf;
        push(&mut |vb| Ok(Layer::Lstm(Lstm::new(cfg, vb, top)?)))?;
        push(&mut |_| Ok(Layer::Elu))?;
        push(&mut |vb| {
            Ok(Layer::Conv(Conv1d::new(
                cfg,
                vb,
                (top, cfg.hidden_size, cfg.last_kernel_size),
                1,
                1,
            )?))
        })?;
        Ok(Self { layers })
    }

    pub fn decoder(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let mut layers = Vec::new();
        let mut push = |make: &mut dyn FnMut(VarBuilder) -> Result<Layer>| -> Result<()> {
            let l = make(vb.pp(layers.len()))?;
            layers.push(l);
            Ok(())
        };
        let nf = cfg.num_filters;
        let mut scaling = 1usize << cfg.upsampling_ratios.len();
        let top = scaling * nf;
        push(&mut |vb| {
            Ok(Layer::Conv(Conv1d::new(
                cfg,
                vb,
                (cfg.hidden_size, top, cfg.kernel_size),
                1,
                1,
            )?))
        })?;
        push(&mut |vb| Ok(Layer::Lstm(Lstm::new(cfg, vb, top)?)))?;
        for &ratio in &cfg.upsampling_ratios {
            let scale = scaling * nf;
            push(&mut |_| Ok(Layer::Elu))?;
            push(&mut |vb| {
                Ok(Layer::ConvTr(ConvTranspose1d::new(
                    cfg,
                    vb,
                    (scale, scale / 2, ratio * 2),
                    ratio,
                )?))
            })?;
            for j in 0..cfg.num_residual_layers {
                let dil = [cfg.dilation_growth_rate.pow(j as u32), 1];
                push(&mut |vb| Ok(Layer::Res(ResnetBlock::new(cfg, vb, scale / 2, dil)?)))?;
            }
            scaling /= 2;
        }
        push(&mut |_| Ok(Layer::Elu))?;
        push(&mut |vb| {
            Ok(Layer::Conv(Conv1d::new(
                cfg,
                vb,
                (nf, cfg.audio_channels, cfg.last_kernel_size),
                1,
                1,
            )?))
        })?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = match layer {
                Layer::Conv(c) => c.forward(&h)?,
                Layer::ConvTr(c) => c.forward(&h)?,
                Layer::Res(r) => r.forward(&h)?,
                Layer::Lstm(l) => l.forward(&h)?,
                Layer::Elu => crate::model::kernels::elu(&h)?,
            };
        }
        Ok(h)
    }
}
