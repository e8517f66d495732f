//! Closed-loop search for a steering target's operating point (docs/design.md §10): the
//! settings (η, and optionally the gate p and exponential κ) that maximise an evaluation metric
//! under constraints. This module is pure: given the evaluated trials so far it says what to
//! evaluate next and which trial is chosen, so the same results always give the same next points
//! (the live plan re-derives every round from the store, which makes a search resumable after a
//! kill at any round). The stage that turns trials into generation and evaluation nodes is
//! `crate::stages::search`.
//!
//! - `bisect` (η only): assumes the constraints hold up to some η and fail above it (FD and MMD
//!   grow with η), evaluates the range's top (and bottom, when above 0), then halves the interval
//!   between the highest feasible and the lowest infeasible η until the budget is spent.
//! - `halving` (successive halving, Jamieson & Talwalkar 2016): n settings from a seeded Latin
//!   hypercube over the ranges on few samples; each next rung keeps the better half on twice the
//!   samples, the last rung on `[steer] samples`.
//!
//! Ranking: a setting that meets every constraint beats one that does not; among feasible ones the
//! objective decides, among infeasible ones the smaller total relative excess. Ties keep the
//! earlier trial. A Gaussian-process (`bayes`) strategy is not built: no maintained Rust GP crate
//! in the dependency set fits, and a hand-written one would need its own reference checks.

pub mod constraint;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::spec::schema::{SearchStrategy, SearchVariables};
pub use constraint::Constraint;

/// One setting of the searched variables (the fixed ones filled in from `[steer]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub eta: f64,
    pub gate: f64,
    /// κ of exponential layer weighting (None with other layer strategies).
    pub kappa: Option<f64>,
}

/// An evaluated setting: its round, sample count and finite metric values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub round: u32,
    pub setting: Setting,
    /// Generations per prompt behind the metrics.
    pub samples: u32,
    pub metrics: BTreeMap<String, f64>,
}

/// What a search is: the spec's `[search]` resolved for one target and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub objective: String,
    pub maximise: bool,
    pub constraints: Vec<Constraint>,
    pub variables: SearchVariables,
    pub strategy: SearchStrategy,
    pub budget: u32,
    /// `[steer] samples`: what the chosen setting is evaluated on.
    pub samples: u32,
    /// The values of the variables not searched.
    pub fixed: Setting,
    /// Seeds the Latin hypercube (the experiment seed mixed with the target and schedule).
    pub seed: u64,
}

/// The search's next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Evaluate these settings on this many samples each (one round).
    Evaluate(Vec<(Setting, u32)>),
    Done,
}

/// A trial measured against the constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub feasible: bool,
    /// Sum of the constraints' relative excess (infinite when one could not be checked).
    pub violation: f64,
    pub objective: Option<f64>,
    /// One line per violated constraint.
    pub violated: Vec<String>,
}

/// Smallest sample count a screening rung uses: FD and MMD need two rows a side.
const MIN_SAMPLES: u32 = 2;

/// Values are rounded to 6 decimals so that ids and keys read as the numbers a person would
/// write (0.3, not 0.30000000000000004) and midpoints land on the grid a sweep would use.
pub fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl Problem {
    /// How a trial fares against the constraints (`baseline`: the metrics at η = 0).
    pub fn assess(&self, baseline: &BTreeMap<String, f64>, t: &Trial) -> Assessment {
        let mut violation = 0.0;
        let mut violated = Vec::new();
        for c in &self.constraints {
            let value = t.metrics.get(&c.metric).copied();
            match c.excess(value, baseline.get(&c.metric).copied()) {
                Some(0.0) => {}
                Some(e) => {
                    violation += e;
                    violated.push(format!("{} (value {})", c.text, fmt(value)));
                }
                None => {
                    violation = f64::INFINITY;
                    violated.push(format!("{} (not measured)", c.text));
                }
            }
        }
        Assessment {
            feasible: violated.is_empty(),
            violation,
            objective: t
                .metrics
                .get(&self.objective)
                .copied()
                .filter(|v| v.is_finite()),
            violated,
        }
    }

    /// Orders trials best first (see the module docs); stable in the trials' order.
    fn rank(&self, baseline: &BTreeMap<String, f64>, trials: &[&Trial]) -> Vec<usize> {
        let keyed: Vec<(bool, f64)> = trials
            .iter()
            .map(|t| {
                let a = self.assess(baseline, t);
                let score = if a.feasible {
                    match a.objective {
                        Some(v) if self.maximise => v,
                        Some(v) => -v,
                        None => f64::NEG_INFINITY,
                    }
                } else {
                    -a.violation
                };
                (a.feasible, score)
            })
            .collect();
        let mut order: Vec<usize> = (0..trials.len()).collect();
        order.sort_by(|&a, &b| {
            keyed[b]
                .0
                .cmp(&keyed[a].0)
                .then(
                    keyed[b]
                        .1
                        .partial_cmp(&keyed[a].1)
                        .unwrap_or(Ordering::Equal),
                )
                .then(a.cmp(&b))
        });
        order
    }

    /// The chosen trial: the best among those on the most samples (the last rung; every trial
    /// for bisect). None before anything was evaluated.
    pub fn choose(&self, baseline: &BTreeMap<String, f64>, trials: &[Trial]) -> Option<usize> {
        let top = trials.iter().map(|t| t.samples).max()?;
        let idx: Vec<usize> = (0..trials.len())
            .filter(|&i| trials[i].samples == top)
            .collect();
        let refs: Vec<&Trial> = idx.iter().map(|&i| &trials[i]).collect();
        self.rank(baseline, &refs).first().map(|&r| idx[r])
    }

    /// The most rounds this search can take (what `rfmx plan` prints as "≤ N").
    pub fn max_rounds(&self) -> u32 {
        match self.strategy {
            SearchStrategy::Bisect => {
                let [lo, _] = self.eta_range();
                self.budget.saturating_sub(u32::from(lo > 0.0)).max(1)
            }
            SearchStrategy::Halving => self.rungs().0.len() as u32,
        }
    }

    fn eta_range(&self) -> [f64; 2] {
        self.variables
            .eta
            .unwrap_or([self.fixed.eta, self.fixed.eta])
    }

    /// Successive halving's plan: the sample count of each rung and the first rung's size.
    fn rungs(&self) -> (Vec<u32>, usize) {
        let full = self.samples.max(1);
        // Sample counts halve from the top rung down to MIN_SAMPLES.
        let mut levels = vec![full];
        while levels[0] / 2 >= MIN_SAMPLES {
            levels.insert(0, levels[0] / 2);
        }
        let budget = self.budget.max(1) as usize;
        let cost = |n: usize, r: usize| (0..r).map(|k| n.div_ceil(1 << k)).sum::<usize>();
        for r in (1..=levels.len()).rev() {
            let mut n = 0;
            while cost(n + 1, r) <= budget {
                n += 1;
            }
            // Each rung must halve something: the last rung keeps at least one setting.
            if n >= 1 << (r - 1) {
                return (levels[levels.len() - r..].to_vec(), n);
            }
        }
        (vec![full], budget)
    }

    /// The first rung's settings: a Latin hypercube on n evenly spaced levels per variable
    /// (ends included, so a grid sweep's η values are hit), η in order, the others permuted.
    fn hypercube(&self, n: usize) -> Vec<Setting> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let levels = |range: Option<[f64; 2]>, rng: &mut ChaCha8Rng, permute: bool| {
            range.map(|[lo, hi]| {
                let mut v: Vec<f64> = (0..n)
                    .map(|i| {
                        let f = if n == 1 {
                            1.0
                        } else {
                            i as f64 / (n - 1) as f64
                        };
                        round6(lo + f * (hi - lo))
                    })
                    .collect();
                if permute {
                    v.shuffle(rng);
                }
                v
            })
        };
        let eta = levels(self.variables.eta, &mut rng, false);
        let gate = levels(self.variables.gate, &mut rng, true);
        let kappa = levels(self.variables.kappa, &mut rng, true);
        let mut out: Vec<Setting> = Vec::new();
        for i in 0..n {
            let s = Setting {
                eta: eta.as_ref().map_or(self.fixed.eta, |v| v[i]),
                gate: gate.as_ref().map_or(self.fixed.gate, |v| v[i]),
                kappa: kappa.as_ref().map(|v| v[i]).or(self.fixed.kappa),
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// What to evaluate after `trials` (every round so far; `baseline`: the metrics at η = 0).
    pub fn next(&self, baseline: &BTreeMap<String, f64>, trials: &[Trial]) -> Next {
        match self.strategy {
            SearchStrategy::Bisect => self.next_bisect(baseline, trials),
            SearchStrategy::Halving => self.next_halving(baseline, trials),
        }
    }

    fn at_eta(&self, eta: f64) -> Setting {
        Setting {
            eta: round6(eta),
            ..self.fixed
        }
    }

    fn next_bisect(&self, baseline: &BTreeMap<String, f64>, trials: &[Trial]) -> Next {
        let [lo, hi] = self.eta_range();
        if trials.is_empty() {
            let mut first = vec![(self.at_eta(hi), self.samples)];
            if lo > 0.0 && lo < hi {
                first.insert(0, (self.at_eta(lo), self.samples));
            }
            return Next::Evaluate(first);
        }
        if trials.len() >= self.budget as usize {
            return Next::Done;
        }
        let feasible = |t: &Trial| self.assess(baseline, t).feasible;
        // η = 0 is the baseline itself: the bottom of a range starting there is feasible when
        // the baseline meets the constraints.
        let base_ok = lo <= 0.0 && {
            let b = Trial {
                round: 0,
                setting: self.at_eta(0.0),
                samples: self.samples,
                metrics: baseline.clone(),
            };
            feasible(&b)
        };
        let (ok, not_ok): (Vec<&Trial>, Vec<&Trial>) = trials.iter().partition(|t| feasible(t));
        let low = ok
            .iter()
            .map(|t| t.setting.eta)
            .chain(base_ok.then_some(0.0))
            .fold(f64::NEG_INFINITY, f64::max);
        if low == f64::NEG_INFINITY {
            return Next::Done; // nothing in the range meets the constraints
        }
        let high = not_ok
            .iter()
            .map(|t| t.setting.eta)
            .filter(|&eta| eta > low)
            .fold(f64::INFINITY, f64::min);
        if high == f64::INFINITY || high - low <= (hi - lo).abs() * 1e-3 {
            return Next::Done;
        }
        let mid = self.at_eta((low + high) / 2.0);
        if trials.iter().any(|t| t.setting == mid) {
            return Next::Done;
        }
        Next::Evaluate(vec![(mid, self.samples)])
    }

    fn next_halving(&self, baseline: &BTreeMap<String, f64>, trials: &[Trial]) -> Next {
        let (samples, n0) = self.rungs();
        let Some(last) = trials.iter().map(|t| t.round).max() else {
            let first = self.hypercube(n0);
            return Next::Evaluate(first.into_iter().map(|s| (s, samples[0])).collect());
        };
        let rung = last as usize; // rounds are 1-based: round r ran rung r - 1
        if rung >= samples.len() {
            return Next::Done;
        }
        let current: Vec<&Trial> = trials.iter().filter(|t| t.round == last).collect();
        let keep = n0.div_ceil(1 << rung).min(current.len());
        let order = self.rank(baseline, &current);
        Next::Evaluate(
            order[..keep]
                .iter()
                .map(|&i| (current[i].setting, samples[rung]))
                .collect(),
        )
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "missing".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(strategy: SearchStrategy, budget: u32, vars: SearchVariables) -> Problem {
        Problem {
            objective: "score".into(),
            maximise: true,
            constraints: vec![constraint::parse("cost <= 1.0").unwrap()],
            variables: vars,
            strategy,
            budget,
            samples: 8,
            fixed: Setting {
                eta: 0.0,
                gate: 1.0,
                kappa: Some(0.95),
            },
            seed: 7,
        }
    }

    /// A known landscape: the score rises with η and falls away from gate 0.6; the cost
    /// crosses 1 at η = 0.37, so the constrained optimum is η ≈ 0.37, gate = 0.6.
    fn measure(s: &Setting, samples: u32) -> BTreeMap<String, f64> {
        let noise = 0.02 / f64::from(samples); // fewer samples, more (deterministic) noise
        let jitter = ((s.eta * 97.0 + s.gate * 13.0).sin()) * noise;
        BTreeMap::from([
            ("score".to_string(), s.eta - (s.gate - 0.6).powi(2) + jitter),
            ("cost".to_string(), s.eta / 0.37),
        ])
    }

    /// Runs a search to the end against `measure`; returns the trials and the rounds used.
    fn run(p: &Problem) -> (Vec<Trial>, u32) {
        let baseline = measure(&p.fixed, p.samples);
        let mut trials = Vec::new();
        let mut round = 0;
        while let Next::Evaluate(points) = p.next(&baseline, &trials) {
            round += 1;
            assert!(round <= p.max_rounds(), "more rounds than announced");
            for (s, n) in points {
                trials.push(Trial {
                    round,
                    setting: s,
                    samples: n,
                    metrics: measure(&s, n),
                });
            }
        }
        (trials, round)
    }

    #[test]
    fn bisect_finds_the_largest_feasible_eta_within_budget() {
        let vars = SearchVariables {
            eta: Some([0.0, 1.0]),
            ..Default::default()
        };
        let p = problem(SearchStrategy::Bisect, 8, vars);
        let (trials, rounds) = run(&p);
        assert_eq!(
            trials.len(),
            8,
            "spends the budget: the interval never closes"
        );
        assert_eq!(rounds, 8);
        let base = measure(&p.fixed, p.samples);
        let best = &trials[p.choose(&base, &trials).unwrap()];
        assert!(p.assess(&base, best).feasible);
        // 8 halvings of [0, 1] bracket 0.37 within 1/128.
        assert!(
            (0.37 - best.setting.eta) < 1.0 / 128.0 && best.setting.eta <= 0.37,
            "chose {}",
            best.setting.eta
        );
        // Deterministic: the same results, the same points.
        assert_eq!(run(&p).0, trials);
    }

    #[test]
    fn bisect_stops_at_once_when_the_top_is_feasible_or_the_bottom_is_not() {
        let vars = SearchVariables {
            eta: Some([0.0, 0.3]),
            ..Default::default()
        };
        let (trials, rounds) = run(&problem(SearchStrategy::Bisect, 8, vars));
        assert_eq!((trials.len(), rounds), (1, 1));
        assert_eq!(trials[0].setting.eta, 0.3);
        let vars = SearchVariables {
            eta: Some([0.5, 0.9]),
            ..Default::default()
        };
        let p = problem(SearchStrategy::Bisect, 8, vars);
        let (trials, _) = run(&p);
        assert_eq!(trials.len(), 2, "both ends, then nothing is feasible");
        let base = measure(&p.fixed, p.samples);
        let chosen = &trials[p.choose(&base, &trials).unwrap()];
        assert!(!p.assess(&base, chosen).feasible);
        assert_eq!(chosen.setting.eta, 0.5, "the least violation");
    }

    #[test]
    fn halving_keeps_the_budget_and_finds_the_constrained_optimum() {
        let vars = SearchVariables {
            eta: Some([0.0, 1.0]),
            gate: Some([0.2, 1.0]),
            kappa: None,
        };
        let p = problem(SearchStrategy::Halving, 24, vars);
        let (samples, n0) = p.rungs();
        assert_eq!(samples, vec![2, 4, 8]);
        assert_eq!(n0, 13, "13 + 7 + 4 = 24");
        let (trials, rounds) = run(&p);
        assert_eq!(rounds, 3);
        assert!(trials.len() <= 24, "{} evaluations", trials.len());
        // Each rung keeps the better half of the previous one, on twice the samples.
        for r in 2..=3 {
            let prev: Vec<_> = trials.iter().filter(|t| t.round == r - 1).collect();
            let cur: Vec<_> = trials.iter().filter(|t| t.round == r).collect();
            assert_eq!(cur.len(), prev.len().div_ceil(2));
            assert!(
                cur.iter()
                    .all(|t| prev.iter().any(|q| q.setting == t.setting))
            );
            assert!(cur.iter().all(|t| t.samples == samples[r as usize - 1]));
        }
        let base = measure(&p.fixed, p.samples);
        let i = p.choose(&base, &trials).unwrap();
        let best = &trials[i];
        assert_eq!(best.round, 3);
        assert!(p.assess(&base, best).feasible);
        // The best feasible setting of the first rung's grid: no feasible first-rung setting
        // scores higher on the noiseless landscape.
        let truth = |s: &Setting| s.eta - (s.gate - 0.6).powi(2);
        let grid_best = trials
            .iter()
            .filter(|t| t.round == 1 && t.setting.eta <= 0.37)
            .map(|t| truth(&t.setting))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            truth(&best.setting) >= grid_best - 0.02,
            "chose {:?}",
            best.setting
        );
        assert_eq!(run(&p).0, trials, "deterministic");
        // Another seed, another hypercube.
        let other = Problem {
            seed: 8,
            ..p.clone()
        };
        assert_ne!(run(&other).0[..13], trials[..13]);
    }

    #[test]
    fn halving_with_few_samples_or_a_tiny_budget_still_plans_sensibly() {
        let vars = SearchVariables {
            eta: Some([0.0, 0.6]),
            ..Default::default()
        };
        let mut p = problem(SearchStrategy::Halving, 3, vars);
        p.samples = 4;
        // 3 evaluations cannot afford two rungs of ≥ 2 settings: 2 + 1.
        assert_eq!(p.rungs(), (vec![2, 4], 2));
        p.budget = 1;
        assert_eq!(p.rungs(), (vec![4], 1));
        p.samples = 1;
        p.budget = 7;
        assert_eq!(p.rungs(), (vec![1], 7));
        let (trials, rounds) = run(&p);
        assert_eq!((trials.len(), rounds), (7, 1));
        let etas: Vec<f64> = trials.iter().map(|t| t.setting.eta).collect();
        assert_eq!(
            etas,
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "grid-aligned levels"
        );
    }

    #[test]
    fn an_unmeasured_objective_or_constraint_ranks_last() {
        let p = problem(
            SearchStrategy::Bisect,
            4,
            SearchVariables {
                eta: Some([0.0, 1.0]),
                ..Default::default()
            },
        );
        let base = BTreeMap::new();
        let t = |eta: f64, m: &[(&str, f64)]| Trial {
            round: 1,
            setting: Setting {
                eta,
                gate: 1.0,
                kappa: None,
            },
            samples: 8,
            metrics: m.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let trials = vec![
            t(0.1, &[("score", 5.0)]),                // cost not measured: infeasible
            t(0.2, &[("cost", 2.0), ("score", 9.0)]), // violates by 100 %
            t(0.3, &[("cost", 0.5)]),                 // feasible, no objective
            t(0.4, &[("cost", 0.5), ("score", 1.0)]), // feasible
        ];
        let a = p.assess(&base, &trials[0]);
        assert!(!a.feasible && a.violation.is_infinite());
        assert_eq!(p.choose(&base, &trials), Some(3));
        let refs: Vec<&Trial> = trials.iter().collect();
        assert_eq!(p.rank(&base, &refs), vec![3, 2, 1, 0]);
    }
}
