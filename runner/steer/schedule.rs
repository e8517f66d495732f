//! Steering schedules φ(t) over generation steps (docs/design.md §3).
//!
//! Every schedule is parameterised by the run's step count `T` (the authors hard-code T = 1500):
//! - constant: 1
//! - linear_up: t/T;  linear_down: 1 − t/T
//! - exp_down: r^t with `r = r₁₅₀₀^(1500/T)` (r₁₅₀₀ = 0.998): the decay the authors get over 1500
//!   steps, spread over `T` steps, so φ(T) = 0.998^1500 ≈ 0.0497 whatever the run length
//! - logistic_up: 1/(1 + e^(−(t − T/2)/(T·w))) with w = 2/15
//! - sine: ½(1 + sin(2πt/T))
//! - piecewise: linear interpolation through `(t/T, value)` points, held constant outside them.
//! - feedback: set step by step during generation by a controller (`crate::steer::feedback`).
//!
//! The constants live in [`ScheduleConstants`] (defaults = the paper's; set in the spec's `[steer]`).

use crate::spec::schema::Schedule;

/// The schedules' free constants (docs/design.md §3 values by default; `[steer] exp_down_ratio`,
/// `exp_down_steps`, `logistic_width` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleConstants {
    /// exp_down's per-step ratio at the reference length.
    pub exp_ratio: f64,
    /// The length at which `exp_ratio` applies (the authors' T = 1500).
    pub exp_reference_steps: f64,
    /// logistic_up's width as a fraction of T (2/15).
    pub logistic_width: f64,
}

impl ScheduleConstants {
    pub fn from_spec(s: &crate::spec::schema::SteerSpec) -> Self {
        Self {
            exp_ratio: s.exp_down_ratio,
            exp_reference_steps: s.exp_down_steps,
            logistic_width: s.logistic_width,
        }
    }
}

impl Default for ScheduleConstants {
    fn default() -> Self {
        Self {
            exp_ratio: 0.998,
            exp_reference_steps: 1500.0,
            logistic_width: 2.0 / 15.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("a schedule needs at least one step")]
    NoSteps,
    #[error("piecewise schedule: {0}")]
    Piecewise(String),
}

/// φ(t) for t = 0..steps-1.
pub fn phi(
    schedule: &Schedule,
    steps: usize,
    c: &ScheduleConstants,
) -> Result<Vec<f64>, ScheduleError> {
    if steps == 0 {
        return Err(ScheduleError::NoSteps);
    }
    if let Schedule::Piecewise { points } = schedule {
        check_points(points)?;
    }
    Ok((0..steps).map(|t| phi_at(schedule, t, steps, c)).collect())
}

fn check_points(points: &[[f64; 2]]) -> Result<(), ScheduleError> {
    if points.is_empty() {
        return Err(ScheduleError::Piecewise("no points".into()));
    }
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ScheduleError::Piecewise("a point is not finite".into()));
    }
    if points.windows(2).any(|w| w[1][0] <= w[0][0]) {
        return Err(ScheduleError::Piecewise(
            "point times must be strictly increasing".into(),
        ));
    }
    Ok(())
}

/// φ(t) at one step of a `steps`-step run (piecewise points must be valid: see [`phi`]).
pub fn phi_at(schedule: &Schedule, t: usize, steps: usize, c: &ScheduleConstants) -> f64 {
    let big_t = steps as f64;
    let t = t as f64;
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::LinearUp => t / big_t,
        Schedule::LinearDown => 1.0 - t / big_t,
        Schedule::ExpDown => {
            let r = c.exp_ratio.powf(c.exp_reference_steps / big_t);
            r.powf(t)
        }
        Schedule::LogisticUp => {
            1.0 / (1.0 + (-(t - big_t / 2.0) / (big_t * c.logistic_width)).exp())
        }
        Schedule::Sine => 0.5 * (1.0 + (2.0 * std::f64::consts::PI * t / big_t).sin()),
        Schedule::Piecewise { points } => piecewise(points, t / big_t),
        // The controller sets every step's value during generation (`crate::steer::feedback`);
        // before it has seen anything, φ is the start value.
        Schedule::Feedback(f) => f.initial(),
    }
}

fn piecewise(points: &[[f64; 2]], x: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if x <= first[0] {
        return first[1];
    }
    if x >= last[0] {
        return last[1];
    }
    for w in points.windows(2) {
        let ([x0, y0], [x1, y1]) = (w[0], w[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    last[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn closed_forms_at_chosen_steps() {
        let c = ScheduleConstants::default();
        let t_big = 200;
        let at = |s: &Schedule, t| phi_at(s, t, t_big, &c);
        close(at(&Schedule::Constant, 17), 1.0);
        close(at(&Schedule::LinearUp, 50), 0.25);
        close(at(&Schedule::LinearDown, 50), 0.75);
        close(at(&Schedule::LinearUp, 0), 0.0);
        // exp_down: r = 0.998^(1500/200) = 0.998^7.5; at t = 100: 0.998^750
        close(at(&Schedule::ExpDown, 100), 0.998f64.powf(750.0));
        close(at(&Schedule::ExpDown, 0), 1.0);
        // logistic_up: midpoint 0.5; at t = T/2 + T·2/15 (= 126.67, use 130): 1/(1+e^-(30/26.67))
        close(at(&Schedule::LogisticUp, 100), 0.5);
        close(
            at(&Schedule::LogisticUp, 130),
            1.0 / (1.0 + (-30.0f64 / (200.0 * 2.0 / 15.0)).exp()),
        );
        // sine: ½(1 + sin(2π·50/200)) = 1 at a quarter period, ½ at the start, 0 at 3/4.
        close(at(&Schedule::Sine, 50), 1.0);
        close(at(&Schedule::Sine, 0), 0.5);
        close(at(&Schedule::Sine, 150), 0.0);
        // At the authors' length, exp_down is exactly 0.998^t.
        close(
            phi_at(&Schedule::ExpDown, 700, 1500, &c),
            0.998f64.powi(700),
        );
    }

    #[test]
    fn piecewise_interpolates_and_holds_ends() {
        let c = ScheduleConstants::default();
        let s = Schedule::Piecewise {
            points: vec![[0.2, 0.0], [0.5, 1.0], [1.0, 0.5]],
        };
        let v = phi(&s, 100, &c).unwrap();
        close(v[0], 0.0);
        close(v[10], 0.0);
        close(v[35], 0.5);
        close(v[50], 1.0);
        close(v[75], 0.75);
        assert_eq!(v.len(), 100);
        let bad = Schedule::Piecewise {
            points: vec![[0.5, 0.0], [0.5, 1.0]],
        };
        assert!(matches!(
            phi(&bad, 10, &c),
            Err(ScheduleError::Piecewise(_))
        ));
        assert_eq!(phi(&Schedule::Constant, 0, &c), Err(ScheduleError::NoSteps));
    }
}
