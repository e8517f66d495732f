//! The Bernoulli gate ψ_p(t) (docs/design.md §3): steering is on at a step with probability `p`, drawn
//! once per step (the paper; default) or independently per layer per step (the authors' code).
//!
//! The gate is drawn up front for the whole run from its own seeded stream, so it does not depend on
//! the order in which the decoder visits layers, and the time counter of the schedule advances every
//! step whether the gate is open or not.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::spec::schema::GateMode;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GateError {
    #[error("gate probability must be in [0, 1], got {0}")]
    BadP(f64),
}

/// ψ for every (step, layer): `open[t][l]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub p: f64,
    pub mode: GateMode,
    open: Vec<Vec<bool>>,
}

impl Gate {
    /// Draws the gate for `steps × layers`. `p = 1` is always open and `p = 0` always shut (no draw).
    pub fn draw(
        p: f64,
        mode: GateMode,
        steps: usize,
        layers: usize,
        seed: u64,
    ) -> Result<Gate, GateError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(GateError::BadP(p));
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let bern = |rng: &mut ChaCha20Rng| {
            if p >= 1.0 {
                true
            } else if p <= 0.0 {
                false
            } else {
                rng.random::<f64>() < p
            }
        };
        let open = (0..steps)
            .map(|_| match mode {
                GateMode::PerStep => vec![bern(&mut rng); layers],
                GateMode::PerLayer => (0..layers).map(|_| bern(&mut rng)).collect(),
            })
            .collect();
        Ok(Gate { p, mode, open })
    }

    /// ψ(t, l) ∈ {0, 1}; closed outside the drawn range.
    pub fn psi(&self, step: usize, layer: usize) -> f64 {
        match self.open.get(step).and_then(|r| r.get(layer)) {
            Some(true) => 1.0,
            _ => 0.0,
        }
    }

    /// For the trace: per step ψ(t) (per_step mode) or per step the per-layer ψ (per_layer mode).
    pub fn trace(&self) -> Psi {
        match self.mode {
            GateMode::PerStep => Psi::PerStep(
                self.open
                    .iter()
                    .map(|r| u8::from(r.first().copied().unwrap_or(false)))
                    .collect(),
            ),
            GateMode::PerLayer => Psi::PerLayer(
                self.open
                    .iter()
                    .map(|r| r.iter().map(|&o| u8::from(o)).collect())
                    .collect(),
            ),
        }
    }
}

/// The realised gate draws of a generation: ψ(t) per step, or ψ(t, l) per step and layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Psi {
    PerStep(Vec<u8>),
    PerLayer(Vec<Vec<u8>>),
}

impl Psi {
    /// Per step, the fraction of the gate that is open (ψ(t), or its mean over layers).
    pub fn open_fraction(&self) -> Vec<f64> {
        match self {
            Psi::PerStep(v) => v.iter().map(|&o| f64::from(o)).collect(),
            Psi::PerLayer(v) => v
                .iter()
                .map(|r| r.iter().map(|&o| f64::from(o)).sum::<f64>() / r.len().max(1) as f64)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |rate − p| ≤ 3σ with σ = sqrt(p(1 − p)/n).
    fn within_3_sigma(opens: usize, n: usize, p: f64) {
        let rate = opens as f64 / n as f64;
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (rate - p).abs() <= 3.0 * sigma,
            "rate {rate} vs p {p} (3σ = {})",
            3.0 * sigma
        );
    }

    #[test]
    fn per_step_gate_rate_is_p_and_layers_agree() {
        for (p, seed) in [(0.3, 1), (0.5, 2), (0.9, 3)] {
            let g = Gate::draw(p, GateMode::PerStep, 4000, 3, seed).unwrap();
            let mut opens = 0;
            for t in 0..4000 {
                let v = g.psi(t, 0);
                assert!((0..3).all(|l| g.psi(t, l) == v), "layers disagree at {t}");
                opens += v as usize;
            }
            within_3_sigma(opens, 4000, p);
        }
    }

    #[test]
    fn per_layer_gate_rate_is_p_and_layers_differ() {
        let p = 0.4;
        let g = Gate::draw(p, GateMode::PerLayer, 2000, 4, 9).unwrap();
        let mut opens = 0;
        let mut mixed = 0;
        for t in 0..2000 {
            let row: Vec<f64> = (0..4).map(|l| g.psi(t, l)).collect();
            opens += row.iter().sum::<f64>() as usize;
            mixed += usize::from(row.iter().any(|&v| v != row[0]));
        }
        within_3_sigma(opens, 8000, p);
        // P(all four equal) = 0.4^4 + 0.6^4 = 0.1552: most steps mix.
        assert!(mixed > 1500, "{mixed}");
    }

    #[test]
    fn seeded_extremes_and_bad_p() {
        let a = Gate::draw(0.5, GateMode::PerStep, 100, 2, 7).unwrap();
        assert_eq!(a, Gate::draw(0.5, GateMode::PerStep, 100, 2, 7).unwrap());
        assert_ne!(a, Gate::draw(0.5, GateMode::PerStep, 100, 2, 8).unwrap());
        let on = Gate::draw(1.0, GateMode::PerLayer, 10, 2, 0).unwrap();
        assert!((0..10).all(|t| on.psi(t, 1) == 1.0));
        let off = Gate::draw(0.0, GateMode::PerStep, 10, 2, 0).unwrap();
        assert!((0..10).all(|t| off.psi(t, 0) == 0.0));
        assert_eq!(
            Gate::draw(1.5, GateMode::PerStep, 1, 1, 0),
            Err(GateError::BadP(1.5))
        );
    }
}
