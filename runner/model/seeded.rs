//! Deterministic random weights for the embedded "tiny" models, so extraction and generation run
//! everywhere with no download. Each tensor draws from its own ChaCha stream keyed by (domain, seed,
//! tensor name): the values depend neither on the order the network asks for them nor on the platform.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(centre, half_width)` of the uniform distribution for a tensor, from its name and shape.
pub type InitFn = fn(name: &str, dims: &[usize]) -> (f32, f32);

pub struct SeededBackend {
    domain: &'static str,
    seed: u64,
    init: InitFn,
}

impl SeededBackend {
    /// `domain` separates the streams of different models (and versions of their init).
    pub fn new(domain: &'static str, seed: u64, init: InitFn) -> Self {
        Self { domain, seed, init }
    }

    pub fn values(&self, shape: &Shape, name: &str) -> Vec<f32> {
        let mut key = blake3::Hasher::new();
        key.update(self.domain.as_bytes());
        key.update(b"\0");
        key.update(&self.seed.to_le_bytes());
        key.update(name.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
        let (centre, bound) = (self.init)(name, shape.dims());
        (0..shape.elem_count())
            .map(|_| centre + rng.random_range(-bound..=bound))
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
        candle_core::bail!("seeded weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
