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

/// Records the name and shape of every tensor a model asks for, handing out zeros (lazily
/// allocated pages, so recording a full-size model costs next to nothing). Building a model once
/// against it lists exactly the weights [`seeded_map`] must draw.
/// (name, shape) of each weight asked for.
type Seen = Vec<(String, Vec<usize>)>;

#[derive(Default, Clone)]
pub struct RecordingBackend {
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

impl RecordingBackend {
    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl SimpleBackend for RecordingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("recording needs a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Uniform random weights for models at real dimensions (hundreds of millions of values), fast
/// enough to draw on every load: each tensor is cut into blocks of 2^20 values, block `i` is
/// stream `i` of a ChaCha8 generator keyed by (domain, seed, tensor name), and the blocks are drawn
/// in parallel -- so the values depend neither on the order of the tensors nor on the thread count
/// or platform. Values are `centre - half_width + 2 half_width u`, `u = (bits >> 8) / 2^24`.
pub fn seeded_map(
    domain: &str,
    seed: u64,
    tensors: &[(String, Vec<usize>)],
    init: InitFn,
) -> candle_core::Result<std::collections::HashMap<String, Tensor>> {
    use rand::RngCore;
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 20;
    tensors
        .par_iter()
        .map(|(name, dims)| {
            let mut key = blake3::Hasher::new();
            key.update(domain.as_bytes());
            key.update(b"\0");
            key.update(&seed.to_le_bytes());
            key.update(name.as_bytes());
            let key = *key.finalize().as_bytes();
            let (centre, half) = init(name, dims);
            let scale = 2.0 * half / (1u32 << 24) as f32;
            let offset = centre - half;
            let mut values = vec![0f32; dims.iter().product()];
            values
                .par_chunks_mut(BLOCK)
                .enumerate()
                .for_each(|(i, block)| {
                    let mut rng = ChaCha8Rng::from_seed(key);
                    rng.set_stream(i as u64);
                    rng.fill_bytes(bytemuck::cast_slice_mut(block));
                    for v in block.iter_mut() {
                        *v = (v.to_bits() >> 8) as f32 * scale + offset;
                    }
                });
            Ok((
                name.clone(),
                Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?,
            ))
        })
        .collect()
}
