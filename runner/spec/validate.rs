//! Range and consistency checks serde cannot express. Each problem names the dotted key path of
//! the offending value so that it can be pointed at in the file.

use super::schema::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, path: &[&str], message: impl Into<String>, help: Option<&str>) {
        self.problems.push(Problem {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            help: help.map(String::from),
        });
    }

    fn fail_at(
        &mut self,
        path: &[&str],
        index: usize,
        message: impl Into<String>,
        help: Option<&str>,
    ) {
        let mut p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        p.push(index.to_string());
        self.problems.push(Problem {
            path: p,
            message: message.into(),
            help: help.map(String::from),
        });
    }

    fn non_empty<T>(&mut self, path: &[&str], list: &[T]) {
        if list.is_empty() {
            self.fail(
                path,
                format!("`{}` is empty", path.join(".")),
                Some("give at least one value"),
            );
        }
    }

    fn finite(&mut self, path: &[&str], v: f64) -> bool {
        if !v.is_finite() {
            self.fail(
                path,
                format!("`{}` must be a finite number, found {v}", path.join(".")),
                None,
            );
        }
        v.is_finite()
    }
}

/// `data.source` and each `probe.evaluate_on[i]`: a folder source's path and lengths.
fn check_source(c: &mut Checker, prefix: &[&str], src: &DataSource) {
    let at = |key: &'static str| -> Vec<&str> { [prefix, &[key]].concat() };
    if src.path.trim().is_empty() {
        c.fail(
            &at("path"),
            format!("`{}.path` is empty", prefix.join(".")),
            Some("the folder holding the audio files and the labels CSV"),
        );
    }
    if c.finite(&at("clip_seconds"), src.clip_seconds)
        && !(src.clip_seconds > 0.0 && src.clip_seconds <= 600.0)
    {
        c.fail(
            &at("clip_seconds"),
            format!(
                "`{}.clip_seconds` must be in (0, 600], found {}",
                prefix.join("."),
                src.clip_seconds
            ),
            Some("the paper's clips are 4 s"),
        );
    }
    if let Some(h) = src.hop_seconds
        && c.finite(&at("hop_seconds"), h)
        && h <= 0.0
    {
        c.fail(
            &at("hop_seconds"),
            format!(
                "`{}.hop_seconds` must be positive, found {h}",
                prefix.join(".")
            ),
            Some("leave it out for one clip per file"),
        );
    }
}

/// True for a name that can be a concept: ASCII letters, digits, `_` and `-`, starting with a
/// letter, at most 64 bytes. It names store labels, node ids (`dataset[<name>]`) and report
/// folders, and appears in targets (`<name>:<class>`) and CSV headers.
fn safe_concept_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|ch: char| ch.is_ascii_alphabetic())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

/// `[data.define.<name>]` (docs/design.md §5): each user concept's name and classes, and user
/// concepts named in `data.concepts` only with a folder source (no generator renders them).
fn check_define(c: &mut Checker, d: &DataSpec) {
    for (name, def) in &d.define {
        let at = ["data", "define", name.as_str()];
        if Concept::builtin(name).is_some() {
            c.fail(
                &at,
                format!("`{name}` is a built-in concept; a defined concept needs its own name"),
                Some("rename it (e.g. `my_keys`); built-ins need no definition"),
            );
        } else if !safe_concept_name(name) {
            c.fail(
                &at,
                format!(
                    "concept name `{name}` must start with a letter and hold only ASCII letters, digits, `_` and `-` (at most 64)"
                ),
                Some("e.g. `mood` or `instrument_family`"),
            );
        }
        let classes = ["data", "define", name.as_str(), "classes"];
        match def.classes.len() {
            0 => c.fail(
                &classes,
                format!("`data.define.{name}.classes` is empty"),
                Some("list the concept's classes, e.g. classes = [\"calm\", \"tense\"]"),
            ),
            1 => c.fail(
                &classes,
                format!(
                    "`data.define.{name}.classes` has one class; a probe separates at least two"
                ),
                None,
            ),
            _ => {}
        }
        for (i, class) in def.classes.iter().enumerate() {
            if def.classes[..i].contains(class) {
                c.fail_at(
                    &classes,
                    i,
                    format!("class `{class}` of `{name}` is listed twice"),
                    None,
                );
            } else if class.trim().is_empty() || class.trim() != class || class.contains('+') {
                // CSV labels are trimmed and targets split at `+`: such a class could never match.
                c.fail_at(
                    &classes,
                    i,
                    format!(
                        "class `{class}` of `{name}` must be non-empty, without surrounding spaces or `+`"
                    ),
                    None,
                );
            }
        }
    }
    if d.source.is_none() {
        for (i, concept) in d.concepts.iter().enumerate() {
            if concept.is_user() {
                let hint = format!(
                    "set data.source = {{ kind = \"folder\", path = \"...\" }}, a folder whose labels CSV has a `{concept}` column"
                );
                c.fail_at(
                    &["data", "concepts"],
                    i,
                    format!(
                        "`{concept}` is a defined concept: it has no generator, so its clips must come from a folder"
                    ),
                    Some(&hint),
                );
            }
        }
    }
}

/// `[executor.slurm]`: throttle, and each `resources.<kind>` table names a node kind.
fn check_slurm(c: &mut Checker, s: &SlurmSpec) {
    if s.array_throttle == Some(0) {
        c.fail(
            &["executor", "slurm", "array_throttle"],
            "`executor.slurm.array_throttle` must be at least 1",
            Some("leave it out for no limit"),
        );
    }
    for (kind, r) in &s.resources {
        let at = |key: &'static str| ["executor", "slurm", "resources", kind.as_str(), key];
        if !NODE_KINDS.contains(&kind.as_str()) {
            let hint = super::error::did_you_mean(kind, &NODE_KINDS)
                .map(|k| format!("did you mean `{k}`?"));
            c.fail(
                &["executor", "slurm", "resources", kind],
                super::error::unknown_name_message("node kind", kind, &NODE_KINDS),
                hint.as_deref(),
            );
        }
        if r.cpus == Some(0) {
            c.fail(
                &at("cpus"),
                format!("`executor.slurm.resources.{kind}.cpus` must be at least 1"),
                None,
            );
        }
        if r.group == Some(0) {
            c.fail(
                &at("group"),
                format!("`executor.slurm.resources.{kind}.group` must be at least 1"),
                Some("1 = one node per job (the default)"),
            );
        }
    }
}

/// Checks one fully layered spec (a sweep point or the base).
pub fn validate(spec: &Spec) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let name = &spec.experiment.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
    {
        c.fail(
            &["experiment", "name"],
            format!("experiment name `{name}` must be non-empty and use only letters, digits, `_`, `-`, `.`"),
            Some("it names files: the cache index, run logs and reports/<name>/"),
        );
    } else if let Some(why) = crate::fsx::component_problem(name) {
        // `..` would publish the report into the working directory itself (docs/contracts.md, "Names").
        c.fail(
            &["experiment", "name"],
            format!("experiment name `{name}` {why}"),
            Some("it names the folder reports/<name>/: use e.g. `chords-1`"),
        );
    }
    if spec.executor.jobs == Some(0) {
        c.fail(
            &["executor", "jobs"],
            "`executor.jobs` must be at least 1",
            None,
        );
    }
    if spec.executor.slurm.cpus == 0 {
        c.fail(
            &["executor", "slurm", "cpus"],
            "`executor.slurm.cpus` must be at least 1",
            None,
        );
    }
    check_slurm(&mut c, &spec.executor.slurm);
    if let Some(m) = &spec.model {
        let d = m.device.as_str();
        let ok = matches!(d, "auto" | "cpu" | "cuda" | "metal")
            || d.strip_prefix("cuda:")
                .is_some_and(|n| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()));
        if !ok {
            c.fail(
                &["model", "device"],
                format!("unknown device `{d}`"),
                Some("use auto, cpu, cuda, cuda:N or metal"),
            );
        }
        if m.name.is_empty() {
            c.fail(
                &["model", "name"],
                "`model.name` is empty",
                Some("e.g. \"facebook/musicgen-small\" or \"tiny\""),
            );
        }
    }
    if let Some(d) = &spec.data {
        c.non_empty(&["data", "concepts"], &d.concepts);
        for (i, concept) in d.concepts.iter().enumerate() {
            if d.concepts[..i].contains(concept) {
                c.fail_at(
                    &["data", "concepts"],
                    i,
                    format!("concept `{concept}` is listed twice"),
                    None,
                );
            }
        }
        if let AllOr::Some(list) = &d.instruments {
            c.non_empty(&["data", "instruments"], list);
            for (i, p) in list.iter().enumerate() {
                if *p > 127 {
                    c.fail_at(
                        &["data", "instruments"],
                        i,
                        format!("GM program {p} is outside 0..=127"),
                        None,
                    );
                }
            }
        }
        if let Some(src) = &d.source {
            check_source(&mut c, &["data", "source"], src);
        }
        check_define(&mut c, d);
        if d.per_class == AllOr::Some(0) {
            c.fail(
                &["data", "per_class"],
                "`data.per_class` must be at least 1",
                Some("or \"all\""),
            );
        } else if let AllOr::Some(n @ 1..=3) = d.per_class
            && spec.probe.is_some()
        {
            // Probes cut every class 70/15/15 (docs/design.md §3): below 4 clips a class has no
            // validation row and every probe node would fail after extraction.
            c.fail(
                &["data", "per_class"],
                format!(
                    "`data.per_class = {n}` leaves the probes no validation rows: each class is \
                     split 70/15/15, which needs at least 4 clips per class"
                ),
                Some("set per_class = 4 or more (or \"all\")"),
            );
        }
    }
    if let Some(e) = &spec.extract
        && let AllOr::Some(layers) = &e.layers
    {
        c.non_empty(&["extract", "layers"], layers);
    }
    if let Some(p) = &spec.probe {
        for (i, src) in p.evaluate_on.iter().enumerate() {
            let i = i.to_string();
            check_source(&mut c, &["probe", "evaluate_on", &i], src);
        }
        if p.iterations == 0 {
            c.fail(
                &["probe", "iterations"],
                "`probe.iterations` must be at least 1",
                None,
            );
        }
        if p.trials == 0 {
            c.fail(
                &["probe", "trials"],
                "`probe.trials` must be at least 1",
                None,
            );
        }
        if p.directions_k == 0 {
            c.fail(
                &["probe", "directions_k"],
                "`probe.directions_k` must be at least 1",
                Some("steering uses the first direction; the authors keep 12"),
            );
        }
        if let (
            JudgeLayer::Layer(l),
            Some(ExtractSpec {
                layers: AllOr::Some(layers),
                ..
            }),
        ) = (p.judge_layer, &spec.extract)
            && !layers.contains(&l)
        {
            c.fail(
                &["probe", "judge_layer"],
                format!("judge layer {l} is not one of the extracted layers {layers:?}"),
                Some("add it to extract.layers, or use \"best\""),
            );
        }
    }
    if let Some(s) = &spec.steer {
        validate_steer(&mut c, s, spec.data.as_ref(), spec.probe.is_some());
    }
    if let Some(e) = &spec.evaluate {
        c.non_empty(&["evaluate", "metrics"], &e.metrics);
        if let Some(src) = &e.judge_on {
            check_source(&mut c, &["evaluate", "judge_on"], src);
            if spec.probe.is_none() {
                c.fail(
                    &["evaluate", "judge_on"],
                    "`evaluate.judge_on` fits the judge probes on a folder, but the spec has no [probe] section",
                    Some("add [probe] (its kind, iterations and layers are the judge's too)"),
                );
            }
        }
    }
    if let Some(search) = &spec.search {
        validate_search(&mut c, search, spec);
    }
    if let Some(t) = &spec.toy {
        c.non_empty(&["toy", "values"], &t.values);
        if t.sleep_ms > 600_000 {
            c.fail(
                &["toy", "sleep_ms"],
                "`toy.sleep_ms` is over 10 minutes",
                None,
            );
        }
        if t.rounds > 100 {
            c.fail(&["toy", "rounds"], "`toy.rounds` is over 100", None);
        }
    }
    for (key, values) in &spec.sweep {
        if values.is_empty() {
            c.fail(
                &["sweep", key],
                format!("sweep axis `{key}` has no values"),
                Some("give at least one value"),
            );
        }
        if key.is_empty() || key.split('.').any(str::is_empty) {
            c.fail(
                &["sweep", key],
                format!("sweep key `{key}` is not a dotted key path"),
                Some("e.g. \"extract.pooling\""),
            );
        }
        if key == "sweep" || key.starts_with("sweep.") || key == "experiment.name" {
            c.fail(&["sweep", key], format!("`{key}` cannot be swept"), None);
        }
        if key == "report" || key.starts_with("report.") {
            c.fail(
                &["sweep", key],
                format!("`{key}` cannot be swept"),
                Some("a spec has one report: set it in [report]"),
            );
        }
    }
    c.problems
}

const FEEDBACK_HINT: &str = "e.g. { kind = \"feedback\", setpoint = 0.8, gain = 0.5, max = 1.0 }";

fn schedule_problem(c: &mut Checker, i: usize, msg: impl Into<String>, hint: &str) {
    c.fail_at(&["steer", "schedule"], i, msg, Some(hint));
}

fn validate_steer(c: &mut Checker, s: &SteerSpec, data: Option<&DataSpec>, probes: bool) {
    c.non_empty(&["steer", "targets"], &s.targets);
    // Targets of a switched-off `[steer]` plan nothing; a probe-only spec keeps the default.
    if let Some(d) = data.filter(|d| s.enabled && !d.concepts.is_empty()) {
        for (i, t) in s.targets.iter().enumerate() {
            if let Some(term) = t
                .terms
                .iter()
                .find(|term| !d.concepts.contains(&term.concept))
            {
                c.fail_at(
                    &["steer", "targets"],
                    i,
                    format!(
                        "target `{t}` steers `{}`, which is not in data.concepts",
                        term.concept
                    ),
                    Some("add the concept to data.concepts so that its directions are fitted"),
                );
            }
        }
    }
    match &s.layers {
        LayerStrategy::TopK { k } if *k == 0 => {
            c.fail(&["steer", "layers", "k"], "top_k needs k >= 1", None);
        }
        LayerStrategy::Exponential { w0, kappa } => {
            if c.finite(&["steer", "layers", "w0"], *w0) && *w0 <= 0.0 {
                c.fail(
                    &["steer", "layers", "w0"],
                    format!("w0 must be > 0, found {w0}"),
                    None,
                );
            }
            if c.finite(&["steer", "layers", "kappa"], *kappa) && *kappa <= 0.0 {
                c.fail(
                    &["steer", "layers", "kappa"],
                    format!("kappa must be > 0, found {kappa}"),
                    Some("the authors use 0.95"),
                );
            }
        }
        _ => {}
    }
    c.non_empty(&["steer", "schedule"], &s.schedule);
    for (i, sch) in s.schedule.iter().enumerate() {
        if let Schedule::Feedback(f) = sch {
            let bad = if ![f.setpoint, f.gain, f.max, f.kp, f.start]
                .iter()
                .all(|v| v.is_finite())
            {
                Some("feedback numbers must be finite")
            } else if f.gain < 0.0 || f.kp < 0.0 {
                Some("feedback gains must be >= 0")
            } else if f.max <= 0.0 {
                Some("feedback `max` must be > 0")
            } else if !(0.0..=f.max).contains(&f.start) {
                Some("feedback `start` must lie in [0, max]")
            } else if f.window == Some(0) {
                Some("feedback `window` must be >= 1 step")
            } else if !probes {
                Some(
                    "a feedback schedule needs a [probe] section: its judge scores the activations",
                )
            } else {
                None
            };
            if let Some(msg) = bad {
                schedule_problem(c, i, msg, FEEDBACK_HINT);
            }
        }
        if let Schedule::Piecewise { points } = sch {
            let bad = if points.len() < 2 {
                Some("a piecewise schedule needs at least 2 points".to_string())
            } else if points.iter().flatten().any(|v| !v.is_finite()) {
                Some("piecewise points must be finite".to_string())
            } else if points.iter().any(|p| !(0.0..=1.0).contains(&p[0])) {
                Some("piecewise t values must lie in [0, 1]".to_string())
            } else if points.windows(2).any(|w| w[1][0] <= w[0][0]) {
                Some("piecewise t values must be strictly increasing".to_string())
            } else {
                None
            };
            if let Some(msg) = bad {
                schedule_problem(c, i, msg, "points = [[t, value], ...] with t from 0 to 1");
            }
        }
    }
    if c.finite(&["steer", "gate"], s.gate) && !(0.0..=1.0).contains(&s.gate) {
        c.fail(
            &["steer", "gate"],
            format!("gate is a probability, found {}", s.gate),
            Some("use a value in [0, 1]; 1.0 = always on"),
        );
    }
    c.non_empty(&["steer", "eta"], &s.eta);
    for (i, eta) in s.eta.iter().enumerate() {
        if !eta.is_finite() || *eta < 0.0 {
            c.fail_at(
                &["steer", "eta"],
                i,
                format!("eta must be a finite number >= 0, found {eta}"),
                Some("the paper sweeps 0.15 to 0.60"),
            );
        }
    }
    c.non_empty(&["steer", "prompts"], &s.prompts);
    if c.finite(&["steer", "seconds"], s.seconds) && s.seconds <= 0.0 {
        c.fail(
            &["steer", "seconds"],
            format!("seconds must be > 0, found {}", s.seconds),
            None,
        );
    }
    if s.samples == 0 {
        c.fail(
            &["steer", "samples"],
            "`steer.samples` must be at least 1",
            None,
        );
    }
    if s.batch == super::schema::BatchSize::Rows(0) {
        c.fail(
            &["steer", "batch"],
            "`steer.batch` must be at least 1 (or \"auto\")",
            Some("1 generates one clip at a time"),
        );
    }
    if c.finite(&["steer", "cfg"], s.cfg) && s.cfg <= 0.0 {
        c.fail(
            &["steer", "cfg"],
            format!("cfg must be > 0, found {}", s.cfg),
            Some("MusicGen's default is 3.0"),
        );
    }
    if c.finite(&["steer", "exp_down_ratio"], s.exp_down_ratio)
        && !(s.exp_down_ratio > 0.0 && s.exp_down_ratio <= 1.0)
    {
        c.fail(
            &["steer", "exp_down_ratio"],
            format!(
                "exp_down_ratio must be in (0, 1], found {}",
                s.exp_down_ratio
            ),
            Some("the authors use 0.998"),
        );
    }
    for (key, v) in [
        ("exp_down_steps", s.exp_down_steps),
        ("logistic_width", s.logistic_width),
    ] {
        if c.finite(&["steer", key], v) && v <= 0.0 {
            c.fail(
                &["steer", key],
                format!("{key} must be > 0, found {v}"),
                None,
            );
        }
    }
}

/// The `metrics.json` entries an `[evaluate]` produces (per-term entries are checked by prefix).
fn produced_metrics(e: &EvaluateSpec) -> Vec<String> {
    let mut names = Vec::new();
    for m in &e.metrics {
        let name = serde_json::to_value(m)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let captured = (*m == Metric::ProbeAccuracy).then(|| format!("{name}_captured"));
        names.push(name);
        names.extend(captured);
    }
    names
}

fn validate_search(c: &mut Checker, s: &SearchSpec, spec: &Spec) {
    let steering = spec.steer.as_ref().is_some_and(|st| st.enabled);
    if !steering {
        c.fail(
            &["search"],
            "[search] needs an enabled [steer] section: it searches steering settings",
            Some("add [steer] with targets, schedule and prompts"),
        );
    }
    let produced = spec
        .evaluate
        .as_ref()
        .map(produced_metrics)
        .unwrap_or_default();
    let known = |name: &str| {
        produced.iter().any(|p| {
            name == p
                || name
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(':') && p.starts_with("probe_accuracy"))
        })
    };
    let help = format!("the [evaluate] metrics give: {}", produced.join(", "));
    if !known(&s.objective) {
        c.fail(
            &["search", "objective"],
            format!(
                "objective `{}` is not a metric [evaluate] produces",
                s.objective
            ),
            Some(&help),
        );
    }
    for (i, text) in s.constraints.iter().enumerate() {
        match crate::search::constraint::parse(text) {
            Ok(con) if !known(&con.metric) => c.fail_at(
                &["search", "constraints"],
                i,
                format!(
                    "constraint `{text}`: `{}` is not a metric [evaluate] produces",
                    con.metric
                ),
                Some(&help),
            ),
            Ok(_) => {}
            Err(e) => c.fail_at(
                &["search", "constraints"],
                i,
                format!("constraint `{text}`: {e}"),
                Some("e.g. \"fd <= 2.0\", \"clap >= baseline - 0.02\", \"mmd <= 1.5 * baseline\""),
            ),
        }
    }
    let v = &s.variables;
    if v.eta.is_none() {
        c.fail(
            &["search", "variables"],
            "`search.variables` has no `eta` range",
            Some("e.g. variables = { eta = [0.0, 1.0] }"),
        );
    }
    for (name, range, lo_min, hi_max) in [
        ("eta", v.eta, f64::NEG_INFINITY, f64::INFINITY),
        ("gate", v.gate, 0.0, 1.0),
        ("kappa", v.kappa, 0.0, f64::INFINITY),
    ] {
        let Some([lo, hi]) = range else { continue };
        let at = ["search", "variables", name];
        if !(c.finite(&at, lo) && c.finite(&at, hi)) {
            continue;
        }
        if lo > hi {
            c.fail(
                &at,
                format!("`{name}` range [{lo}, {hi}] is reversed"),
                Some("write [low, high]"),
            );
        } else if lo < lo_min || (name != "eta" && lo <= lo_min) || hi > hi_max {
            c.fail(
                &at,
                format!(
                    "`{name}` range [{lo}, {hi}] is outside {}",
                    match name {
                        "gate" => "(0, 1]",
                        _ => "(0, ∞)",
                    }
                ),
                None,
            );
        }
    }
    if v.kappa.is_some()
        && !matches!(
            spec.steer.as_ref().map(|st| &st.layers),
            Some(LayerStrategy::Exponential { .. })
        )
    {
        c.fail(
            &["search", "variables", "kappa"],
            "`kappa` is searched but [steer] layers is not exponential",
            Some("set steer.layers = { strategy = \"exponential\", w0 = 1.0, kappa = 0.95 }"),
        );
    }
    if s.strategy == SearchStrategy::Bisect && (v.gate.is_some() || v.kappa.is_some()) {
        c.fail(
            &["search", "strategy"],
            "bisect searches `eta` only",
            Some("use strategy = \"halving\" to search gate or kappa too"),
        );
    }
    if s.budget == 0 || s.budget > 10_000 {
        c.fail(
            &["search", "budget"],
            format!("`search.budget` must be in 1..=10000, found {}", s.budget),
            None,
        );
    }
}
