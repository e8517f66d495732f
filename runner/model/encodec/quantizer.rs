//! Residual vector quantiser (`EncodecResidualVectorQuantizer`): each stage picks the nearest codebook
//! entry (Euclidean) to what the previous stages left over.

use candle_core::{D, DType, Tensor};
use candle_nn::VarBuilder;

use super::EncodecError;
use super::config::EncodecConfig;

type Result<T> = std::result::Result<T, EncodecError>;

pub struct ResidualVq {
    /// per stage: codebook [codebook_size, dim] and its squared norms [1, codebook_size]
    codebooks: Vec<(Tensor, Tensor)>,
}

impl ResidualVq {
    pub fn new(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Self> {
        let shape = (cfg.codebook_size, cfg.codebook_dim());
        let codebooks = (0..cfg.num_quantizers())
            .map(|i| {
                let embed = vb.get(shape, &format!("layers.{i}.codebook.embed"))?;
                let sq = embed.sqr()?.sum(1)?.unsqueeze(0)?;
                Ok((embed, sq))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { codebooks })
    }

    pub fn num_codebooks(&self) -> usize {
        self.codebooks.len()
    }

    /// embeddings [B, D, F] -> codes [B, n_q, F] (u32)
    pub fn encode(&self, embeddings: &Tensor, n_q: usize) -> Result<Tensor> {
        let (b, d, f) = embeddings.dims3()?;
        let mut residual = embeddings
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * f, d))?;
        let mut codes = Vec::with_capacity(n_q);
        for (embed, embed_sq) in &self.codebooks[..n_q] {
            // the same expansion HF uses, |x|^2 - 2 x.e + |e|^2, so rounding (and thus ties) match
            let x_sq = residual.sqr()?.sum_keepdim(1)?;
            let dist = x_sq
                .broadcast_sub(&(residual.matmul(&embed.t()?)? * 2.0)?)?
                .broadcast_add(embed_sq)?;
            let idx = dist.argmin(D::Minus1)?;
            residual = (residual - embed.index_select(&idx, 0)?)?;
            codes.push(idx.reshape((b, f))?);
        }
        Ok(Tensor::stack(&codes, 1)?)
    }

    /// codes [B, K, F] -> embeddings [B, D, F]
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, k, f) = codes.dims3()?;
        let codes = codes.to_dtype(DType::U32)?;
        let mut sum: Option<Tensor> = None;
        for (i, (embed, _)) in self.codebooks[..k].iter().enumerate() {
            let idx = codes.narrow(1, i, 1)?.flatten_all()?;
            let q = embed.index_select(&idx, 0)?.reshape((b, f, ()))?;
            sum = Some(match sum {
                Some(s) => (s + q)?,
                None => q,
            });
        }
        let sum = sum.ok_or_else(|| EncodecError::Input("codes have zero codebooks".into()))?;
        Ok(sum.transpose(1, 2)?.contiguous()?)
    }
}
