//! The steering hook: `h_l ← h_l + Σ_terms η_l(t) · q_l` with `η_l(t) = η0 · w_l · φ(t) · ψ(t, l)`
//! (docs/design.md §3), added to every position and batch row of the step (both guidance branches).
//!
//! Each term of a multi-direction target ("notes:C + chords:maj") has its own η0, layer weights,
//! schedule and gate. With norm-relative η the coefficient is further multiplied by the mean L2 norm
//! of the block output's rows at that layer and step. The realised coefficient of every term at
//! every (step, layer) is recorded for `trace.json`.

use candle_core::{DType, Tensor};

use crate::model::musicgen::{LayerHook, MusicgenError, Result};
use crate::spec::schema::EtaMode;

use super::feedback::Feedback;
use super::gate::Gate;

/// One `concept:class` term of a target.
pub struct Term {
    /// e.g. `notes:C`.
    pub label: String,
    /// `q_l` per layer (unit norm, `[hidden]`), `None` where the term has no direction.
    pub directions: Vec<Option<Tensor>>,
    /// `w_l` per layer (layer cropping).
    pub weights: Vec<f64>,
    /// η0.
    pub eta: f64,
    /// φ(t) for every step.
    pub phi: Vec<f64>,
    pub gate: Gate,
}

/// The injection hook with its trace.
pub struct SteerHook {
    terms: Vec<Term>,
    mode: EtaMode,
    /// `trace[term][step][layer]`: the coefficient of `q_l` actually added (0 when gated off).
    trace: Vec<Vec<Vec<f64>>>,
    layers: usize,
    /// Per term, its controller when its schedule is `feedback`.
    feedback: Vec<Option<Feedback>>,
}

impl SteerHook {
    /// `layers` is the decoder's depth; every term must describe exactly that many layers.
    pub fn new(terms: Vec<Term>, mode: EtaMode, layers: usize) -> Result<Self> {
        for t in &terms {
            if t.directions.len() != layers || t.weights.len() != layers {
                return Err(MusicgenError::Input(format!(
                    "steering term {} describes {} directions and {} weights for a {layers}-layer decoder",
                    t.label,
                    t.directions.len(),
                    t.weights.len()
                )));
            }
            if !t.eta.is_finite() || t.weights.iter().any(|w| !w.is_finite()) {
                return Err(MusicgenError::Input(format!(
                    "steering term {}: η and layer weights must be finite",
                    t.label
                )));
            }
        }
        let trace = terms
            .iter()
            .map(|t| vec![vec![0.0; layers]; t.phi.len()])
            .collect();
        let feedback = terms.iter().map(|_| None).collect();
        Ok(Self {
            terms,
            mode,
            trace,
            layers,
            feedback,
        })
    }

    /// Drives term `k`'s φ by a feedback controller (docs/design.md §3).
    pub fn set_feedback(&mut self, k: usize, f: Feedback) -> Result<()> {
        if f.layer >= self.layers {
            return Err(MusicgenError::Input(format!(
                "feedback judge layer {} of a {}-layer decoder",
                f.layer, self.layers
            )));
        }
        match self.feedback.get_mut(k) {
            Some(slot) => {
                *slot = Some(f);
                Ok(())
            }
            None => Err(MusicgenError::Input(format!("no steering term {k}"))),
        }
    }

    /// Term `k`'s judge scores per step (feedback terms only).
    pub fn feedback_scores(&self, k: usize) -> Option<&[Option<f64>]> {
        self.feedback.get(k)?.as_ref().map(|f| f.scores.as_slice())
    }

    /// At layer 0 of each step, every feedback term's φ for the step from what was seen so far.
    fn control(&mut self, step: usize) -> Result<()> {
        for (term, fb) in self.terms.iter_mut().zip(&mut self.feedback) {
            let Some(fb) = fb else { continue };
            let phi = fb.step().map_err(|e| {
                MusicgenError::Input(format!("feedback judge of {}: {e}", term.label))
            })?;
            if let Some(slot) = term.phi.get_mut(step) {
                *slot = phi;
            }
        }
        Ok(())
    }

    /// Records the conditional row's steered activation at the feedback terms' judge layers.
    fn observe(&mut self, layer: usize, out: &Tensor) -> Result<()> {
        if !self.feedback.iter().flatten().any(|f| f.layer == layer) {
            return Ok(());
        }
        let mean = out
            .narrow(0, 0, 1)?
            .to_dtype(DType::F32)?
            .mean(1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for f in self
            .feedback
            .iter_mut()
            .flatten()
            .filter(|f| f.layer == layer)
        {
            f.observe(mean.clone());
        }
        Ok(())
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// `[term][step][layer]` realised coefficients.
    pub fn trace(&self) -> &[Vec<Vec<f64>>] {
        &self.trace
    }

    /// Σ over terms: `[step][layer]`.
    pub fn total_trace(&self) -> Vec<Vec<f64>> {
        let steps = self.trace.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut out = vec![vec![0.0; self.layers]; steps];
        for t in &self.trace {
            for (s, row) in t.iter().enumerate() {
                for (l, v) in row.iter().enumerate() {
                    out[s][l] += v;
                }
            }
        }
        out
    }
}

/// Mean over rows and positions of the L2 norm of `h` `[batch, positions, hidden]`.
pub fn mean_row_norm(h: &Tensor) -> Result<f64> {
    let n = h
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(2)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(n as f64)
}

impl LayerHook for SteerHook {
    fn on_block_output(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        if layer == 0 {
            self.control(step)?;
        }
        let out = self.inject(layer, step, h)?;
        self.observe(layer, out.as_ref().unwrap_or(h))?;
        Ok(out)
    }
}

impl SteerHook {
    fn inject(&mut self, layer: usize, step: usize, h: &Tensor) -> Result<Option<Tensor>> {
        let mut add: Option<Tensor> = None;
        let mut norm: Option<f64> = None;
        for (k, term) in self.terms.iter().enumerate() {
            let Some(Some(q)) = term.directions.get(layer) else {
                continue;
            };
            let Some(&phi) = term.phi.get(step) else {
                return Err(MusicgenError::Input(format!(
                    "steering term {} has a schedule for {} steps but the decoder is at step {step}",
                    term.label,
                    term.phi.len()
                )));
            };
            let mut c = term.eta * term.weights[layer] * phi * term.gate.psi(step, layer);
            if c == 0.0 {
                continue;
            }
            if self.mode == EtaMode::NormRelative {
                let n = match norm {
                    Some(n) => n,
                    None => {
                        let n = mean_row_norm(h)?;
                        norm = Some(n);
                        n
                    }
                };
                c *= n;
            }
            self.trace[k][step][layer] = c;
            let v = (q.to_device(h.device())?.to_dtype(h.dtype())? * c)?;
            add = Some(match add {
                Some(a) => (a + v)?,
                None => v,
            });
        }
        match add {
            Some(a) => Ok(Some(h.broadcast_add(&a)?)),
            None => Ok(None),
        }
    }
}
