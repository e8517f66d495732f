//! Deterministic random EnCodec weights, so the embedded "tiny" model runs everywhere with no download.
//! Each tensor draws from its own ChaCha stream keyed by (seed, tensor name): the values do not depend
//! on the order the network asks for them, nor on the platform.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct SeededBackend {
    seed: u64,
}

impl SeededBackend {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn values(&self, shape: &Shape, name: &str) -> Vec<f32> {
        let mut key = blake3::Hasher::new();
        key.update(b"rfmx encodec seeded v1\0");
        key.update(&self.seed.to_le_bytes());
        key.update(name.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
        let dims = shape.dims();
        // PyTorch-like scales keep activations O(1) through the stack; later RVQ stages get smaller
        // codebooks because they quantise what the earlier ones left over.
        let bound = if name.ends_with("codebook.embed") {
            let stage = name
                .split('.')
                .nth(2)
                .and_then(|s| s.parse::<i32>().ok())
                .unwrap_or(0);
            0.5f32.powi(stage)
        } else if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            // He-uniform: variance 2 / fan_in, so the signal neither dies nor blows up through the ELUs
            (6.0 / fan_in.max(1) as f32).sqrt()
        } else {
            0.01
        };
        (0..shape.elem_count())
            .map(|_| rng.random_range(-bound..=bound))
            .collect()
    }
}

impl SimpleBackend for SeededBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.values(&s, name), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded EnCodec weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
