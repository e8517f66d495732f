//! The feedback schedule (docs/design.md §3): φ(t) chosen during generation from the model's own
//! state. At each step a clamped PI controller in velocity form reads the target judge's score
//! `s_t` for the target class on the running (or windowed) mean of the steered activations at the
//! judge layer (the conditional branch, as `captured.safetensors` records them) and sets
//!
//!   e_t = setpoint − s_t,  φ_t = clamp(φ_{t−1} + kp·(e_t − e_{t−1}) + gain·e_t, 0, max),
//!
//! starting from `start` before anything was seen. Velocity form keeps φ inside its clamp without
//! integral wind-up. A non-finite score leaves φ where it was, so φ is never NaN.

use crate::spec::schema::FeedbackSchedule;

/// The controller alone (what is tested against a synthetic plant).
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: FeedbackSchedule,
    phi: f64,
    last_error: Option<f64>,
}

impl Controller {
    pub fn new(cfg: &FeedbackSchedule) -> Self {
        Self {
            phi: cfg.initial(),
            cfg: cfg.clone(),
            last_error: None,
        }
    }

    /// φ now.
    pub fn phi(&self) -> f64 {
        self.phi
    }

    /// One control step from the judge's latest score; returns the new φ.
    pub fn update(&mut self, score: f64) -> f64 {
        if !score.is_finite() {
            return self.phi;
        }
        let e = self.cfg.setpoint - score;
        let de = self.last_error.map_or(0.0, |p| e - p);
        let next = self.phi + self.cfg.kp * de + self.cfg.gain * e;
        if next.is_finite() {
            self.phi = next.clamp(0.0, self.cfg.max.max(0.0));
        }
        self.last_error = Some(e);
        self.phi
    }
}

/// Scores a pooled activation row for the target class (the judge's class score).
pub type Scorer = Box<dyn FnMut(&[f32]) -> Result<f64, String> + Send>;

/// One feedback-steered term: its controller, judge, judge layer and activation history.
pub struct Feedback {
    pub controller: Controller,
    pub layer: usize,
    score: Scorer,
    window: Option<usize>,
    /// The steps' means in the window (every step without one): the conditional row's mean over
    /// each step's positions. Kept only while a window needs to drop them again.
    means: std::collections::VecDeque<Vec<f32>>,
    /// Σ of the means in the window, so each step's score costs O(d), not O(steps · d).
    sum: Vec<f64>,
    seen: usize,
    /// The judge's score before each step's control update (None at step 0: nothing seen).
    pub scores: Vec<Option<f64>>,
}

impl Feedback {
    pub fn new(cfg: &FeedbackSchedule, layer: usize, score: Scorer) -> Self {
        Self {
            controller: Controller::new(cfg),
            layer,
            score,
            window: cfg.window.map(|w| w.max(1) as usize),
            means: Default::default(),
            sum: Vec::new(),
            seen: 0,
            scores: Vec::new(),
        }
    }

    /// Records one step's steered activation at the judge layer.
    pub fn observe(&mut self, mean: Vec<f32>) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; mean.len()];
        }
        for (a, &v) in self.sum.iter_mut().zip(&mean) {
            *a += f64::from(v);
        }
        if let Some(w) = self.window {
            self.means.push_back(mean);
            if self.means.len() > w
                && let Some(old) = self.means.pop_front()
            {
                for (a, v) in self.sum.iter_mut().zip(old) {
                    *a -= f64::from(v);
                }
            }
        }
        self.seen += 1;
    }

    /// φ for the coming step: the controller's update from the score of what was seen so far.
    pub fn step(&mut self) -> Result<f64, String> {
        if self.seen == 0 {
            self.scores.push(None);
            return Ok(self.controller.phi());
        }
        let n = self.window.map_or(self.seen, |w| self.seen.min(w)) as f64;
        let avg: Vec<f32> = self.sum.iter().map(|&a| (a / n) as f32).collect();
        let s = (self.score)(&avg)?;
        self.scores.push(Some(s));
        Ok(self.controller.update(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(setpoint: f64, gain: f64, max: f64) -> FeedbackSchedule {
        FeedbackSchedule {
            setpoint,
            gain,
            max,
            kp: 0.0,
            start: 0.0,
            window: None,
        }
    }

    /// A first-order plant: the score relaxes towards tanh(φ) (more steering, higher score).
    fn simulate(c: &mut Controller, steps: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut s, mut phis, mut scores) = (0.0f64, vec![], vec![]);
        for _ in 0..steps {
            let phi = c.update(s);
            s += 0.3 * (phi.tanh() - s);
            phis.push(phi);
            scores.push(s);
        }
        (phis, scores)
    }

    #[test]
    fn tracks_a_reachable_setpoint() {
        let mut c = Controller::new(&cfg(0.6, 0.2, 3.0));
        let (phis, scores) = simulate(&mut c, 400);
        let last = *scores.last().unwrap();
        assert!((last - 0.6).abs() < 1e-3, "score {last}");
        assert!((phis.last().unwrap() - 0.6f64.atanh()).abs() < 1e-2);
    }

    #[test]
    fn clamps_at_max_when_the_setpoint_is_out_of_reach_and_at_zero_above_it() {
        let mut c = Controller::new(&cfg(1.5, 0.5, 2.0)); // tanh never reaches 1.5
        let (phis, _) = simulate(&mut c, 200);
        assert!(phis.iter().all(|&p| (0.0..=2.0).contains(&p)));
        assert_eq!(*phis.last().unwrap(), 2.0);
        let mut c = Controller::new(&FeedbackSchedule {
            start: 1.0,
            ..cfg(-0.5, 0.5, 2.0)
        });
        let (phis, _) = simulate(&mut c, 200);
        assert_eq!(*phis.last().unwrap(), 0.0);
    }

    #[test]
    fn never_produces_nan() {
        let mut c = Controller::new(&FeedbackSchedule {
            kp: 0.3,
            ..cfg(0.5, 0.4, 1.0)
        });
        for s in [0.1, f64::NAN, f64::INFINITY, -f64::INFINITY, 0.9, f64::NAN] {
            let p = c.update(s);
            assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{p}");
        }
    }

    #[test]
    fn a_window_scores_only_the_latest_steps() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut f = Feedback::new(
            &FeedbackSchedule {
                window: Some(2),
                ..cfg(1.0, 0.1, 1.0)
            },
            0,
            Box::new(move |x: &[f32]| {
                log.lock().unwrap().push(x[0]);
                Ok(f64::from(x[0]))
            }),
        );
        assert_eq!(f.step().unwrap(), 0.0, "nothing seen: the start value");
        for v in [1.0, 3.0, 5.0] {
            f.observe(vec![v]);
            f.step().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), vec![1.0, 2.0, 4.0]);
        assert_eq!(f.scores, vec![None, Some(1.0), Some(2.0), Some(4.0)]);
    }
}
