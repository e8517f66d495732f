//! The seeded EnCodec init (see `model::seeded` for how the streams are keyed).

use crate::model::seeded::SeededBackend;

/// The stream domain; changing it changes every tiny codec (the pinned codes in tests/codec_seeded.rs).
const DOMAIN: &str = "rfmx encodec seeded v1";

pub fn backend(seed: u64) -> SeededBackend {
    SeededBackend::new(DOMAIN, seed, init)
}

pub(crate) fn init(name: &str, dims: &[usize]) -> (f32, f32) {
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
    (0.0, bound)
}
