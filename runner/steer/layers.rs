//! Layer cropping: how the steering strength is spread over decoder layers from the per-layer
//! probe validation scores (docs/design.md §3).

use crate::spec::schema::LayerStrategy;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayerWeightError {
    #[error("no probe scores: cannot weight layers")]
    Empty,
    #[error("probe score of layer {layer} is {score}, not a finite number")]
    NotFinite { layer: usize, score: f64 },
    #[error("top_k = {k} but the model has only {layers} layers")]
    TooManyLayers { k: usize, layers: usize },
}

/// `w_l` for every layer, in layer order.
///
/// - `TopK { k }`: 1 for the k best-scoring layers, 0 elsewhere (ties broken by lower layer index,
///   so the result never depends on sort stability).
/// - `Exponential { w0, kappa }`: `w0 · ŝ_l^(1/κ)` with `ŝ` min–max normalised to [0, 1]; when every
///   layer scores the same, ŝ = 1 everywhere (no layer is better than another).
/// - `All`: 1 everywhere.
pub fn layer_weights(
    strategy: &LayerStrategy,
    scores: &[f64],
) -> Result<Vec<f64>, LayerWeightError> {
    if scores.is_empty() {
        return Err(LayerWeightError::Empty);
    }
    if let Some((layer, &score)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(LayerWeightError::NotFinite { layer, score });
    }
    Ok(match *strategy {
        LayerStrategy::All => vec![1.0; scores.len()],
        LayerStrategy::TopK { k } => {
            if k > scores.len() {
                return Err(LayerWeightError::TooManyLayers {
                    k,
                    layers: scores.len(),
                });
            }
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            let mut w = vec![0.0; scores.len()];
            for &l in &order[..k] {
                w[l] = 1.0;
            }
            w
        }
        LayerStrategy::Exponential { w0, kappa } => {
            let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            scores
                .iter()
                .map(|&s| {
                    let norm = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
                    w0 * norm.powf(1.0 / kappa)
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_picks_the_best_layers_and_breaks_ties_by_index() {
        let w = layer_weights(&LayerStrategy::TopK { k: 2 }, &[0.5, 0.9, 0.7, 0.9]).unwrap();
        assert_eq!(w, vec![0.0, 1.0, 0.0, 1.0]);
        let w = layer_weights(&LayerStrategy::TopK { k: 1 }, &[0.8, 0.8]).unwrap();
        assert_eq!(w, vec![1.0, 0.0]);
    }

    #[test]
    fn exponential_matches_the_closed_form() {
        let s = [0.6, 0.8, 1.0, 0.7];
        let w = layer_weights(
            &LayerStrategy::Exponential {
                w0: 2.0,
                kappa: 0.5,
            },
            &s,
        )
        .unwrap();
        // ŝ = (0, 0.5, 1, 0.25); w = 2 ŝ^2
        let expect = [0.0, 0.5, 2.0, 0.125];
        for (a, b) in w.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        let flat = layer_weights(
            &LayerStrategy::Exponential {
                w0: 1.0,
                kappa: 0.95,
            },
            &[0.7, 0.7],
        )
        .unwrap();
        assert_eq!(flat, vec![1.0, 1.0]);
    }

    #[test]
    fn bad_scores_are_errors() {
        assert_eq!(
            layer_weights(&LayerStrategy::All, &[]),
            Err(LayerWeightError::Empty)
        );
        assert!(matches!(
            layer_weights(&LayerStrategy::All, &[0.1, f64::NAN]),
            Err(LayerWeightError::NotFinite { layer: 1, .. })
        ));
        assert!(matches!(
            layer_weights(&LayerStrategy::TopK { k: 3 }, &[0.1, 0.2]),
            Err(LayerWeightError::TooManyLayers { k: 3, layers: 2 })
        ));
    }
}
