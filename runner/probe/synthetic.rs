//! Synthetic probe data shared by the benchmarks and the estimate's calibration, so that the
//! calibration times fits on the same kind of data the stage benchmark measures.

use super::data::Features;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A synthetic concept shaped like pooled activations: a few dozen strong latent directions (a
/// class signal among them) plus weak isotropic noise.
pub fn concept(n: usize, d: usize, classes: usize, seed: u64) -> (Features, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let latent = 32.min(d);
    let mix = gaussian(&mut rng, latent * d);
    let means = gaussian(&mut rng, classes * latent);
    let mut data = Vec::with_capacity(n * d);
    let mut cls = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        let z: Vec<f64> = (0..latent)
            .map(|t| {
                let e: f64 = StandardNormal.sample(&mut rng);
                means[c * latent + t] * 0.7 + e
            })
            .collect();
        for j in 0..d {
            let s: f64 =
                (0..latent).map(|t| z[t] * mix[t * d + j]).sum::<f64>() / (latent as f64).sqrt();
            data.push((s + 0.3 * rng.random::<f64>()) as f32);
        }
        cls.push(c);
    }
    (Features { n, d, data }, cls)
}
