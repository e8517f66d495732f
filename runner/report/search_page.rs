//! The report's search page (docs/design.md §10): per search, the trials in the order
//! they were evaluated with the objective (and the running best feasible value), the
//! objective-against-cost front with the chosen setting marked, and a table of every trial with
//! its metrics and CIs.

use serde::Serialize;

use super::collect::ReportData;
use super::plots::{Chart, Point, Series};
use super::render::{Figure, Figures, num};
use crate::eval::stats::MetricEntry;
use crate::stages::search::{SearchResult, TrialResult};

#[derive(Serialize)]
pub(super) struct SearchBlock {
    pub anchor: String,
    pub title: String,
    pub node: String,
    pub summary: String,
    pub figures: Vec<Figure>,
    /// Metric columns: the objective, then each constraint's metric.
    pub columns: Vec<String>,
    pub rows: Vec<SearchRow>,
}

#[derive(Serialize)]
pub(super) struct SearchRow {
    pub class: &'static str,
    pub round: u32,
    pub eta: String,
    pub gate: String,
    pub kappa: String,
    pub samples: u32,
    /// (value, CI) per column.
    pub cells: Vec<(String, String)>,
    pub verdict: String,
}

fn entry(m: Option<&MetricEntry>) -> (Option<f64>, Option<(f64, f64)>) {
    m.and_then(MetricEntry::finite)
        .map_or((None, None), |(v, ci)| (Some(v), ci))
}

fn cell(m: Option<&MetricEntry>) -> (String, String) {
    match (m, entry(m)) {
        (_, (Some(v), ci)) => (
            num(v),
            ci.map_or_else(String::new, |(a, b)| format!("[{}, {}]", num(a), num(b))),
        ),
        (Some(MetricEntry::Unavailable { unavailable }), _) => {
            ("–".into(), format!("unavailable: {unavailable}"))
        }
        _ => ("–".into(), String::new()),
    }
}

fn point(t: &TrialResult, x: f64, metric: &str) -> Option<Point> {
    let (v, ci) = entry(t.metrics.get(metric));
    v.map(|y| (x, y, ci))
}

fn describe(r: &SearchResult) -> String {
    let direction = if r.maximise { "maximise" } else { "minimise" };
    let constraints = if r.constraints.is_empty() {
        "no constraints".to_string()
    } else {
        format!("subject to {}", r.constraints.join(", "))
    };
    let chosen = match r.chosen.map(|i| &r.trials[i]) {
        Some(t) => format!(
            "chosen: η = {}, gate = {}{} ({} = {}) — constraints {}.",
            t.setting.eta,
            t.setting.gate,
            t.setting
                .kappa
                .map_or_else(String::new, |k| format!(", κ = {k}")),
            r.objective,
            t.assessment.objective.map_or_else(|| "–".into(), num),
            if r.constraints_held {
                "held"
            } else {
                "violated by every setting on the full sample set: the least violating is shown"
            }
        ),
        None => "nothing was evaluated.".into(),
    };
    let rounds = r.trials.iter().map(|t| t.round).max().unwrap_or(0);
    format!(
        "{} search ({} evaluation(s) of a budget of {}, {rounds} round(s)): {direction} {} {constraints}; {chosen}",
        serde_json::to_value(r.strategy)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        r.trials.len(),
        r.budget,
        r.objective,
    )
}

/// One block per finished search, with its two figures.
pub(super) fn blocks(
    d: &ReportData,
    figs: &Figures,
) -> Result<Vec<SearchBlock>, super::ReportError> {
    let mut out = Vec::new();
    for (k, (node, r)) in d.searches.iter().enumerate() {
        let title = format!("{} · {}", r.target, r.schedule);
        let stem = format!("search-{k}");
        let mut figures = Vec::new();
        let by_order: Vec<Point> = r
            .trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| point(t, (i + 1) as f64, &r.objective))
            .collect();
        let mut best = Vec::new();
        let mut so_far: Option<f64> = None;
        for (i, t) in r.trials.iter().enumerate() {
            if let (true, Some(v)) = (t.assessment.feasible, t.assessment.objective) {
                so_far = Some(match so_far {
                    Some(b) if r.maximise => b.max(v),
                    Some(b) => b.min(v),
                    None => v,
                });
            }
            if let Some(b) = so_far {
                best.push(((i + 1) as f64, b, None));
            }
        }
        let trace = Chart {
            title: format!("search trace: {title}"),
            x_label: "evaluation (in the order the rounds planned them)".into(),
            y_label: format!("{} (objective)", r.objective),
            series: vec![
                Series {
                    label: "objective of each evaluated setting (95% CI)".into(),
                    points: by_order,
                },
                Series {
                    label: "best setting meeting the constraints so far".into(),
                    points: best,
                },
            ],
            marks: vec![],
            marks_label: String::new(),
            y_range: None,
            integer_x: true,
        };
        figures.push(figs.add(
            &trace,
            &format!("{stem}-trace"),
            format!("objective against evaluation number for {title}"),
            format!(
                "Every evaluation of the {title} search in order, and the best value meeting the constraints so far."
            ),
        )?);
        let cost = r
            .constraints
            .first()
            .and_then(|c| crate::search::constraint::parse(c).ok())
            .map(|c| c.metric);
        if let Some(cost) = cost {
            let pts = |feasible: bool| -> Vec<Point> {
                r.trials
                    .iter()
                    .filter(|t| t.assessment.feasible == feasible)
                    .filter_map(|t| {
                        let (x, _) = entry(t.metrics.get(&cost));
                        x.and_then(|x| point(t, x, &r.objective))
                    })
                    .collect()
            };
            let chosen: Vec<Point> = r
                .chosen
                .map(|i| &r.trials[i])
                .and_then(|t| {
                    entry(t.metrics.get(&cost))
                        .0
                        .and_then(|x| point(t, x, &r.objective))
                })
                .into_iter()
                .collect();
            let front = Chart {
                title: format!("objective against {cost}: {title}"),
                x_label: format!("{cost} (cost; the first constraint's metric)"),
                y_label: format!("{} (objective)", r.objective),
                series: vec![
                    Series {
                        label: "settings meeting every constraint".into(),
                        points: pts(true),
                    },
                    Series {
                        label: "settings violating a constraint".into(),
                        points: pts(false),
                    },
                    Series {
                        label: "chosen setting".into(),
                        points: chosen,
                    },
                ],
                marks: vec![],
                marks_label: String::new(),
                y_range: None,
                integer_x: false,
            };
            figures.push(figs.add(
                &front,
                &format!("{stem}-front"),
                format!("objective against {cost} for {title}, the chosen setting marked"),
                format!(
                    "Each evaluated setting of the {title} search placed by its cost ({cost}) and objective; the chosen one is its own series."
                ),
            )?);
        }
        let mut columns = vec![r.objective.clone()];
        for c in &r.constraints {
            if let Ok(c) = crate::search::constraint::parse(c)
                && !columns.contains(&c.metric)
            {
                columns.push(c.metric);
            }
        }
        let rows = r
            .trials
            .iter()
            .enumerate()
            .map(|(i, t)| SearchRow {
                class: if Some(i) == r.chosen {
                    "chosen"
                } else if t.assessment.feasible {
                    ""
                } else {
                    "infeasible"
                },
                round: t.round,
                eta: num(t.setting.eta),
                gate: num(t.setting.gate),
                kappa: t.setting.kappa.map_or_else(|| "–".into(), num),
                samples: t.samples,
                cells: columns.iter().map(|m| cell(t.metrics.get(m))).collect(),
                verdict: format!(
                    "{}{}",
                    if Some(i) == r.chosen { "chosen: " } else { "" },
                    if t.assessment.feasible {
                        "meets the constraints".to_string()
                    } else {
                        format!("violates {}", t.assessment.violated.join("; "))
                    }
                ),
            })
            .collect();
        out.push(SearchBlock {
            anchor: format!("search-{k}"),
            title,
            node: node.clone(),
            summary: describe(r),
            figures,
            columns,
            rows,
        });
    }
    Ok(out)
}
