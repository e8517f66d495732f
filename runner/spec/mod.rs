//! The spec: schema, layering, validation, sweep expansion and span-carrying errors.
//!
//! Layering (figment), lowest first: `defaults.toml` (embedded; the one documented place for
//! defaults) < the spec file < `RFMX_<SECTION>__<KEY>=value` environment variables < `--set
//! section.key=value` arguments. Then each point of `[sweep]` is merged on top and the result is
//! deserialised into [`Spec`] and validated. Every error is mapped back to where the offending
//! value came from: a span in the file, or the `--set`/env argument that set it.
//!
//! Consumers (stages) read [`ResolvedSpec::spec`]: one fully resolved sweep point.

pub mod error;
pub mod schema;
pub mod spans;
pub mod sweep;
pub mod validate;

use std::path::Path;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use miette::{NamedSource, SourceSpan};

pub use error::{Origin, SpecDiagnostic, SpecError};
pub use schema::*;
use spans::SpanMap;

/// The embedded defaults, documented in place.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Sections whose defaults apply as a group when any one of them is named.
const PIPELINE_SECTIONS: [&str; 6] = ["model", "data", "extract", "probe", "steer", "evaluate"];

/// One sweep point of a spec, fully layered and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSpec {
    pub spec: Spec,
    /// The sweep assignment of this point (empty without a sweep).
    pub point: Vec<(String, serde_json::Value)>,
    /// `key=value,...`, empty without a sweep; used to disambiguate node ids.
    pub label: String,
}

/// A loaded spec: the layered base and its sweep points.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The source name shown in messages (the path as given).
    pub source_name: String,
    pub base: Spec,
    pub points: Vec<ResolvedSpec>,
}

impl LoadedSpec {
    pub fn experiment(&self) -> &str {
        &self.base.experiment.name
    }

    /// The resolved spec as a node's params may hash it: without `[executor]` (how nodes run never
    /// changes what they compute) and without the path as typed or the build's version, so that
    /// keys depend on neither (docs/design.md §3).
    pub fn keyed_toml(&self) -> String {
        let mut value = match toml::Value::try_from(&self.base) {
            Ok(v) => v,
            Err(e) => return format!("# cannot serialise: {e}\n"),
        };
        if let Some(t) = value.as_table_mut() {
            t.remove("executor");
            // How many generations share a forward pass changes no result (docs/design.md §9).
            if let Some(steer) = t.get_mut("steer").and_then(toml::Value::as_table_mut) {
                steer.remove("batch");
            }
        }
        let body =
            toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"));
        let points = self.points_comment();
        format!(
            "# Resolved spec (defaults < file < env < --set; [executor] and steer.batch left out), {} sweep point(s).\n{points}\n{body}",
            self.points.len()
        )
    }

    fn points_comment(&self) -> String {
        self.points
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.label.is_empty())
            .map(|(i, p)| format!("#   point {}: {}\n", i + 1, p.label))
            .collect()
    }

    /// The user concepts (`[data.define]`) of the base and of every sweep point, each once.
    pub fn user_concepts(&self) -> Vec<UserConcept> {
        let mut all: Vec<UserConcept> = Vec::new();
        let specs = std::iter::once(&self.base).chain(self.points.iter().map(|p| &p.spec));
        for d in specs
            .filter_map(|s| s.data.as_ref())
            .flat_map(DataSpec::user_concepts)
        {
            if !all.contains(&d) {
                all.push(d);
            }
        }
        all
    }

    /// The resolved spec as TOML (after layering; the sweep table lists the points' axes).
    pub fn resolved_toml(&self) -> String {
        let body = toml::to_string_pretty(&self.base)
            .unwrap_or_else(|e| format!("# cannot serialise: {e}\n"));
        let points = self.points_comment();
        format!(
            "# Resolved from {} by rfmx {} (defaults < file < env < --set), {} sweep point(s).\n{points}\n{body}",
            self.source_name,
            env!("CARGO_PKG_VERSION"),
            self.points.len()
        )
    }
}

/// `RFMX_<SECTION>__<KEY>` variables of the process environment (others, like `RFMX_HOME`, are not
/// spec overrides).
pub fn env_overrides() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RFMX_") && k.contains("__"))
        .collect();
    v.sort();
    v
}

/// Loads and validates the spec at `path` with `--set` arguments and env overrides.
pub fn load(
    path: &Path,
    sets: &[String],
    env: &[(String, String)],
) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "spec".into());
    let mut loaded = load_str(&path.display().to_string(), &stem, &text, sets, env)?;
    // Folder datasets are named relative to the spec file (docs/design.md §5), so a spec and its
    // audio move together and check from any working directory.
    let dir = path.parent().unwrap_or(Path::new(""));
    for spec in
        std::iter::once(&mut loaded.base).chain(loaded.points.iter_mut().map(|p| &mut p.spec))
    {
        let data = spec.data.iter_mut().filter_map(|d| d.source.as_mut());
        let eval = spec.probe.iter_mut().flat_map(|p| p.evaluate_on.iter_mut());
        let judge = spec.evaluate.iter_mut().filter_map(|e| e.judge_on.as_mut());
        for src in data.chain(eval).chain(judge) {
            if Path::new(&src.path).is_relative() {
                src.path = dir.join(&src.path).display().to_string();
            }
        }
    }
    Ok(loaded)
}

/// One figment layer, named so that errors can tell where a value came from.
struct Layer {
    name: String,
    origin: Origin,
    dict: Dict,
    /// For a sweep point: (axis key, index) of each assignment.
    sweep: Vec<(String, usize)>,
    /// For `--set`/env: the argument text and the byte range of its value in it.
    arg: Option<(String, std::ops::Range<usize>)>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn to_dict(v: &toml::Table) -> Dict {
    match Value::serialize(v) {
        Ok(Value::Dict(_, d)) => d,
        _ => Dict::new(),
    }
}

/// Splits `a."b.c".d` into segments.
fn split_key(key: &str) -> Result<Vec<String>, String> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in key.chars() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => segs.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    segs.push(cur);
    if quoted {
        return Err("unbalanced quote in key".into());
    }
    if segs.iter().any(|s| s.trim().is_empty()) {
        return Err("empty segment in dotted key".into());
    }
    Ok(segs.into_iter().map(|s| s.trim().to_string()).collect())
}

/// A TOML value (`[0.2, 0.4]`, `3`, `"x"`, `{ k = 1 }`), or else the raw text as a string.
fn parse_value(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

fn nest(path: &[String], value: toml::Value) -> toml::Table {
    let mut v = value;
    for seg in path.iter().rev() {
        let mut t = toml::Table::new();
        t.insert(seg.clone(), v);
        v = toml::Value::Table(t);
    }
    match v {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    }
}

fn set_layer(arg: &str) -> Result<Layer, SpecError> {
    let bad = |reason: &str| SpecError::BadSet {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected key=value, e.g. steer.eta=[0.2,0.4]"))?;
    let path = split_key(key.trim()).map_err(|r| bad(&r))?;
    let start = key.len() + 1;
    Ok(Layer {
        name: format!("--set {arg}"),
        origin: Origin::Set(arg.to_string()),
        dict: to_dict(&nest(&path, parse_value(value.trim()))),
        sweep: Vec::new(),
        arg: Some((format!("--set {arg}"), start + 6..arg.len() + 6)),
    })
}

fn env_layer(name: &str, value: &str) -> Option<Layer> {
    let rest = name.strip_prefix("RFMX_")?;
    let path: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return None;
    }
    let shown = format!("{name}={value}");
    Some(Layer {
        name: format!("env {name}"),
        origin: Origin::Env(name.to_string()),
        dict: to_dict(&nest(&path, parse_value(value.trim()))),
        sweep: Vec::new(),
        arg: Some((shown.clone(), name.len() + 1..shown.len())),
    })
}

/// Loads a spec from text (`source_name` is shown in messages; `stem` is the default experiment
/// name). Never panics: every problem becomes a diagnostic.
pub fn load_str(
    source_name: &str,
    stem: &str,
    text: &str,
    sets: &[String],
    env: &[(String, String)],
) -> Result<LoadedSpec, SpecError> {
    let ctx = Ctx {
        source_name,
        text,
        spans: SpanMap::default(),
    };
    let spans = match SpanMap::parse(text) {
        Ok(s) => s,
        Err((message, span)) => {
            return Err(SpecError::Invalid {
                path: source_name.into(),
                diagnostics: vec![ctx.file_diag(message, None, span, "here")],
            });
        }
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            return Err(SpecError::Invalid {
                path: source_name.into(),
                diagnostics: vec![ctx.file_diag(e.message().to_string(), None, e.span(), "here")],
            });
        }
    };
    let ctx = Ctx { spans, ..ctx };

    let mut user_layers = vec![Layer {
        name: "spec file".into(),
        origin: Origin::File,
        dict: to_dict(&table),
        sweep: Vec::new(),
        arg: None,
    }];
    user_layers.extend(env.iter().filter_map(|(k, v)| env_layer(k, v)));
    for arg in sets {
        user_layers.push(set_layer(arg)?);
    }

    // Which sections are present decides which defaults apply (see defaults.toml).
    let mut present: Vec<String> = user_layers
        .iter()
        .flat_map(|l| l.dict.keys().cloned())
        .collect();
    if let Some(toml::Value::Table(sw)) = table.get("sweep") {
        present.extend(
            sw.keys()
                .filter_map(|k| k.split('.').next().map(String::from)),
        );
    }
    let defaults: toml::Table = DEFAULTS_TOML
        .parse()
        .expect("embedded defaults.toml parses");
    let mut default_table = toml::Table::new();
    for (section, value) in defaults {
        let wanted = match section.as_str() {
            "experiment" | "executor" => true,
            s if PIPELINE_SECTIONS.contains(&s) => present
                .iter()
                .any(|p| PIPELINE_SECTIONS.contains(&p.as_str())),
            s => present.iter().any(|p| p == s),
        };
        if wanted {
            default_table.insert(section, value);
        }
    }
    if let Some(toml::Value::Table(exp)) = default_table.get_mut("experiment") {
        exp.insert("name".into(), toml::Value::String(stem.to_string()));
    }
    let mut layers = vec![Layer {
        name: "defaults".into(),
        origin: Origin::Defaults,
        dict: to_dict(&default_table),
        sweep: Vec::new(),
        arg: None,
    }];
    layers.extend(user_layers);

    replace_atomic_tables(&mut layers);
    let figment = figment_of(&layers);

    let mut diags = Vec::new();
    let base = match ctx.extract(&figment, &layers, &mut diags) {
        Some(b) => b,
        None => {
            return Err(SpecError::Invalid {
                path: source_name.into(),
                diagnostics: diags,
            });
        }
    };
    if !diags.is_empty() {
        return Err(SpecError::Invalid {
            path: source_name.into(),
            diagnostics: diags,
        });
    }

    let mut points = Vec::new();
    for point in sweep::expand(&base.sweep) {
        let mut t = toml::Table::new();
        let mut ok = true;
        for (key, _, value) in &point {
            let Ok(path) = split_key(key) else {
                ok = false;
                break;
            };
            let v: toml::Value = match toml::Value::try_from(value) {
                Ok(v) => v,
                Err(_) => {
                    ok = false;
                    break;
                }
            };
            merge_into(&mut t, &path, v);
        }
        if !ok {
            continue; // reported by validation of the base (bad sweep key)
        }
        let layer = Layer {
            name: format!("sweep point {}", sweep::label(&point)),
            origin: Origin::Sweep(sweep::label(&point)),
            dict: to_dict(&t),
            sweep: point.iter().map(|(k, i, _)| (k.clone(), *i)).collect(),
            arg: None,
        };
        let mut all = layers.iter().map(clone_layer).collect::<Vec<_>>();
        all.push(layer);
        replace_atomic_tables(&mut all);
        let fig = figment_of(&all);
        let before = diags.len();
        if let Some(spec) = ctx.extract(&fig, &all, &mut diags)
            && diags.len() == before
        {
            points.push(ResolvedSpec {
                spec,
                point: point
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.clone()))
                    .collect(),
                label: sweep::label(&point),
            });
        }
    }
    if !diags.is_empty() {
        dedup(&mut diags);
        return Err(SpecError::Invalid {
            path: source_name.into(),
            diagnostics: diags,
        });
    }
    Ok(LoadedSpec {
        source_name: source_name.into(),
        base,
        points,
    })
}

/// Tables that are one value (a tagged choice), replaced whole by a later layer instead of merged
/// key by key (merging `{ strategy = "top_k", k = 4 }` over the default exponential table would
/// leave a stray `kappa`).
const ATOMIC_TABLES: [[&str; 2]; 1] = [["steer", "layers"]];

fn replace_atomic_tables(layers: &mut [Layer]) {
    for path in ATOMIC_TABLES {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if let Some(last) = layers.iter().rposition(|l| dict_has(&l.dict, &path)) {
            for l in &mut layers[..last] {
                if let Some(Value::Dict(_, section)) = l.dict.get_mut(&path[0]) {
                    section.remove(&path[1]);
                }
            }
        }
    }
}

fn figment_of(layers: &[Layer]) -> Figment {
    layers
        .iter()
        .fold(Figment::new(), |f, l| f.merge(clone_layer(l)))
}

fn clone_layer(l: &Layer) -> Layer {
    Layer {
        name: l.name.clone(),
        origin: l.origin.clone(),
        dict: l.dict.clone(),
        sweep: l.sweep.clone(),
        arg: l.arg.clone(),
    }
}

fn merge_into(t: &mut toml::Table, path: &[String], v: toml::Value) {
    if path.len() == 1 {
        t.insert(path[0].clone(), v);
        return;
    }
    let entry = t
        .entry(path[0].clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(inner) = entry {
        merge_into(inner, &path[1..], v);
    }
}

fn dedup(diags: &mut Vec<SpecDiagnostic>) {
    let mut seen = std::collections::HashSet::new();
    // The same problem at several sweep points is reported once (for the first point).
    diags.retain(|d| {
        let message = d
            .message
            .split(" (at sweep point")
            .next()
            .unwrap_or_default()
            .to_string();
        seen.insert((message, d.span.map(|s| (s.offset(), s.len()))))
    });
}

struct Ctx<'a> {
    source_name: &'a str,
    text: &'a str,
    spans: SpanMap,
}

impl Ctx<'_> {
    fn file_diag(
        &self,
        message: String,
        help: Option<String>,
        span: Option<std::ops::Range<usize>>,
        label: &str,
    ) -> SpecDiagnostic {
        SpecDiagnostic::in_file(self.source_name, self.text, span, message, help, label)
    }

    /// Extracts a [`Spec`] and validates it; problems are appended to `diags`.
    fn extract(
        &self,
        figment: &Figment,
        layers: &[Layer],
        diags: &mut Vec<SpecDiagnostic>,
    ) -> Option<Spec> {
        // User concepts first, so that `data.concepts` and `[steer] targets` can name them
        // (docs/design.md §5); a malformed `[data.define]` is reported by the full extraction.
        let define = figment
            .extract_inner::<std::collections::BTreeMap<String, schema::ConceptDef>>("data.define")
            .unwrap_or_default();
        let users = schema::user_concepts_of(&define);
        let extracted = crate::data::concepts::with_scope(&users, || {
            figment.extract::<Spec>().map_err(Box::new)
        });
        match extracted.map_err(|e| *e) {
            Ok(spec) => {
                for p in validate::validate(&spec) {
                    diags.push(self.locate(figment, layers, &p.path, None, p.message, p.help));
                }
                Some(spec)
            }
            Err(errors) => {
                for e in errors {
                    let mut help = None;
                    let (unknown, message) = match &e.kind {
                        figment::error::Kind::UnknownField(f, expected) => {
                            let parent = match e.path.split_last() {
                                Some((last, rest)) if last == f => rest,
                                _ => &e.path[..],
                            };
                            let place = if parent.is_empty() {
                                "the spec".to_string()
                            } else {
                                format!("`[{}]`", parent.join("."))
                            };
                            let msg = error::unknown_name_message("key", f, expected);
                            let msg =
                                msg.replacen(", expected", &format!(" in {place}, expected"), 1);
                            if parent.len() < e.path.len() {
                                (Some(String::new()), msg)
                            } else {
                                (Some(f.clone()), msg)
                            }
                        }
                        figment::error::Kind::UnknownVariant(v, expected) => {
                            help = error::did_you_mean(v, expected)
                                .map(|c| format!("did you mean `{c}`?"));
                            if help.is_none() && e.path.first().is_some_and(|p| p == "data") {
                                // A concept of the user's own (docs/design.md §5).
                                help = Some(format!(
                                    "to use a concept of your own, declare it: `[data.define.{v}] classes = [...]` (folder datasets)"
                                ));
                            }
                            let list: Vec<String> =
                                expected.iter().map(|c| format!("`{c}`")).collect();
                            (
                                None,
                                format!(
                                    "unknown value `{v}` for `{}`, expected one of {}",
                                    e.path.join("."),
                                    list.join(", ")
                                ),
                            )
                        }
                        figment::error::Kind::MissingField(f) => {
                            (None, format!("missing key `{f}` in `{}`", e.path.join(".")))
                        }
                        k => (None, k.to_string()),
                    };
                    let from = e.metadata.as_ref().map(|m| m.name.to_string());
                    diags.push(self.locate_from(
                        figment,
                        layers,
                        &e.path,
                        unknown.as_deref(),
                        from,
                        message,
                        help,
                    ));
                }
                None
            }
        }
    }

    fn locate(
        &self,
        figment: &Figment,
        layers: &[Layer],
        path: &[String],
        unknown: Option<&str>,
        message: String,
        help: Option<String>,
    ) -> SpecDiagnostic {
        self.locate_from(figment, layers, path, unknown, None, message, help)
    }

    /// Maps a key path to the layer that provided its value and to a span there.
    #[allow(clippy::too_many_arguments)]
    fn locate_from(
        &self,
        figment: &Figment,
        layers: &[Layer],
        path: &[String],
        unknown: Option<&str>,
        from: Option<String>,
        message: String,
        help: Option<String>,
    ) -> SpecDiagnostic {
        let mut full: Vec<String> = path.to_vec();
        if let Some(u) = unknown.filter(|u| !u.is_empty()) {
            full.push(u.to_string());
        }
        // Which layer set this value: the last layer that has the path (or its longest prefix).
        let layer = layers
            .iter()
            .rev()
            .find(|l| dict_has(&l.dict, &full))
            .or_else(|| {
                (1..=path.len()).rev().find_map(|n| {
                    let key = path[..n].join(".");
                    if path[..n].iter().any(|s| s.contains('.')) {
                        return None;
                    }
                    let md = figment.find_metadata(&key)?;
                    layers.iter().find(|l| l.name == md.name)
                })
            })
            .or_else(|| {
                from.as_ref()
                    .and_then(|n| layers.iter().find(|l| &l.name == n))
            });
        let label = if unknown.is_some() {
            "unknown key"
        } else {
            "this value"
        };
        let Some(layer) = layer else {
            return self.file_span_diag(&full, unknown.is_some(), message, help, label);
        };
        match &layer.origin {
            Origin::File => self.file_span_diag(&full, unknown.is_some(), message, help, label),
            Origin::Defaults => {
                let mut d = self.file_span_diag(&full, unknown.is_some(), message, help, label);
                d.message = format!(
                    "{} (`{}` has its default value here: set it in the spec)",
                    d.message,
                    path.join(".")
                );
                d.origin = Origin::Defaults;
                d
            }
            Origin::Set(_) | Origin::Env(_) => {
                let (shown, range) = layer.arg.clone().unwrap_or_default();
                let what = match &layer.origin {
                    Origin::Set(a) => {
                        format!("the value comes from `--set {a}`, not from the spec file")
                    }
                    Origin::Env(n) => format!(
                        "the value comes from the environment variable `{n}`, not from the spec file"
                    ),
                    _ => unreachable!(),
                };
                let hint = help.or_else(|| error::hint_from_message(&message));
                SpecDiagnostic {
                    help: Some(match hint {
                        Some(h) => format!("{h} ({what})"),
                        None => what,
                    }),
                    message,
                    src: NamedSource::new(layer.name.clone(), shown),
                    span: Some(SourceSpan::from(range)),
                    label: label.into(),
                    line: None,
                    column: None,
                    origin: layer.origin.clone(),
                }
            }
            Origin::Sweep(point) => {
                // Point at the sweep axis that set this key.
                let joined = full.join(".");
                let axis = layer
                    .sweep
                    .iter()
                    .find(|(k, _)| joined == *k || joined.starts_with(&format!("{k}.")));
                let (span, lbl) = match axis {
                    Some((k, i)) if unknown.is_none() => (
                        self.spans
                            .get(&["sweep".to_string(), k.clone(), i.to_string()])
                            .map(|e| e.value.clone()),
                        "this sweep value",
                    ),
                    Some((k, _)) => (
                        self.spans
                            .get(&["sweep".to_string(), k.clone()])
                            .and_then(|e| e.key.clone()),
                        "this sweep key",
                    ),
                    None => (
                        self.spans
                            .get(&["sweep".to_string()])
                            .and_then(|e| e.key.clone()),
                        "in this sweep",
                    ),
                };
                let mut d = self.file_diag(
                    format!("{message} (at sweep point {point})"),
                    help,
                    span,
                    lbl,
                );
                d.origin = layer.origin.clone();
                d
            }
        }
    }

    fn file_span_diag(
        &self,
        full: &[String],
        unknown: bool,
        message: String,
        help: Option<String>,
        label: &str,
    ) -> SpecDiagnostic {
        let span = self.spans.longest_prefix(full).map(|(n, e)| {
            if unknown && n == full.len() {
                e.key.clone().unwrap_or(e.value.clone())
            } else if n == full.len() {
                e.value.clone()
            } else {
                e.key.clone().unwrap_or(e.value.clone())
            }
        });
        self.file_diag(message, help, span, label)
    }
}

fn dict_has(dict: &Dict, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match dict.get(first) {
        None => false,
        Some(_) if rest.is_empty() => true,
        Some(Value::Dict(_, d)) => dict_has(d, rest),
        Some(Value::Array(_, items)) => rest[0]
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .is_some_and(|v| {
                rest.len() == 1 || matches!(v, Value::Dict(_, d) if dict_has(d, &rest[1..]))
            }),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[model]\nname = \"tiny\"\n[steer]\neta = [0.1]\ngate = 0.5\n";

    fn load(text: &str, sets: &[&str], env: &[(&str, &str)]) -> Result<LoadedSpec, SpecError> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_str("t.toml", "t", text, &sets, &env)
    }

    fn steer(s: &LoadedSpec) -> &SteerSpec {
        s.base.steer.as_ref().unwrap()
    }

    #[test]
    fn layering_precedence_is_defaults_file_env_set() {
        let s = load(FILE, &[], &[]).unwrap();
        assert_eq!(steer(&s).eta, vec![0.1]);
        assert_eq!(steer(&s).cfg, 3.0, "default");
        let s = load(
            FILE,
            &[],
            &[("RFMX_STEER__ETA", "[0.2, 0.3]"), ("RFMX_STEER__CFG", "4")],
        )
        .unwrap();
        assert_eq!(steer(&s).eta, vec![0.2, 0.3], "env beats file");
        assert_eq!(steer(&s).cfg, 4.0, "env beats defaults");
        assert_eq!(steer(&s).gate, 0.5, "file kept where env is silent");
        let s = load(FILE, &["steer.eta=[0.4]"], &[("RFMX_STEER__ETA", "[0.2]")]).unwrap();
        assert_eq!(steer(&s).eta, vec![0.4], "--set beats env");
        let s = load(FILE, &["steer.eta=[0.4]", "steer.eta=[0.5]"], &[]).unwrap();
        assert_eq!(steer(&s).eta, vec![0.5], "the last --set wins");
    }

    #[test]
    fn a_tagged_table_is_replaced_not_merged() {
        let s = load(FILE, &["steer.layers={ strategy = \"top_k\", k = 4 }"], &[]).unwrap();
        assert_eq!(steer(&s).layers, LayerStrategy::TopK { k: 4 });
    }

    #[test]
    fn keyed_toml_leaves_out_the_executor_and_the_path() {
        let a = load(FILE, &[], &[]).unwrap();
        let b = load(
            FILE,
            &[
                "executor.jobs=1",
                "executor.slurm.mem=\"1G\"",
                "executor.kind=\"slurm\"",
                "steer.batch=1",
            ],
            &[],
        )
        .unwrap();
        let mut c = a.clone();
        c.source_name = "./elsewhere/t.toml".into();
        assert_ne!(a.resolved_toml(), b.resolved_toml());
        assert_eq!(a.keyed_toml(), b.keyed_toml());
        assert_eq!(a.keyed_toml(), c.keyed_toml());
        assert!(
            !a.keyed_toml().lines().any(|l| l.starts_with("[executor")),
            "{}",
            a.keyed_toml()
        );
        let d = load(FILE, &["experiment.seed=7"], &[]).unwrap();
        assert_ne!(
            a.keyed_toml(),
            d.keyed_toml(),
            "results-changing settings stay"
        );
    }

    #[test]
    fn defaults_apply_only_to_named_sections() {
        let s = load("[toy]\nvalues = [1]\n", &[], &[]).unwrap();
        assert!(s.base.model.is_none() && s.base.steer.is_none());
        assert_eq!(s.base.experiment.name, "t");
        assert_eq!(s.base.toy.as_ref().unwrap().sleep_ms, 0);
        let s = load("[probe]\nkind = \"linear\"\n", &[], &[]).unwrap();
        assert!(s.base.model.is_some() && s.base.steer.is_some() && s.base.toy.is_none());
        assert_eq!(s.base.probe.as_ref().unwrap().kind, ProbeKind::Linear);
    }

    #[test]
    fn report_audio_defaults_to_what_defaults_toml_says() {
        use schema::{ReportAudio, ReportSpec};
        // Absent: no section (the resolved TOML of older specs is unchanged), the default applies.
        let s = load(FILE, &[], &[]).unwrap();
        assert_eq!(s.base.report, None);
        assert!(!s.keyed_toml().contains("[report]"));
        // Named: the defaults file fills it, with the value `ReportAudio::default()` stands for.
        let s = load(&format!("{FILE}[report]\n"), &[], &[]).unwrap();
        assert_eq!(s.base.report, Some(ReportSpec::default()));
        let s = load(FILE, &["report.audio=\"wav\""], &[]).unwrap();
        assert_eq!(s.base.report.unwrap().audio, ReportAudio::Wav);
        assert!(load(FILE, &["report.audio=\"mp3\""], &[]).is_err());
        let swept = format!("{FILE}[sweep]\n\"report.audio\" = [\"wav\", \"vorbis\"]\n");
        assert!(load(&swept, &[], &[]).is_err());
    }

    #[test]
    fn sweep_points_are_resolved_specs() {
        let text = format!(
            "{FILE}[sweep]\n\"extract.pooling\" = [\"mean\", \"last\"]\n\"steer.gate\" = [0.1, 0.2, 0.3]\n"
        );
        let s = load(&text, &[], &[]).unwrap();
        assert_eq!(s.points.len(), 6);
        let p = &s.points[4];
        assert_eq!(p.label, "extract.pooling=last,steer.gate=0.2");
        assert_eq!(p.spec.extract.as_ref().unwrap().pooling, Pooling::Last);
        assert_eq!(p.spec.steer.as_ref().unwrap().gate, 0.2);
        let s = load(&text, &["sweep.\"steer.gate\"=[0.9]"], &[]).unwrap();
        assert_eq!(s.points.len(), 2, "--set can replace a sweep axis");
    }

    #[test]
    fn the_resolved_spec_reloads_to_the_same_spec() {
        let text = format!(
            "{FILE}[steer.layers]\nstrategy = \"all\"\n[sweep]\n\"steer.gate\" = [0.1, 0.2]\n"
        );
        let s = load(&text, &["steer.schedule=[\"sine\", { kind = \"piecewise\", points = [[0.0, 0.0], [1.0, 2.0]] }]"], &[]).unwrap();
        let again = load(&s.resolved_toml(), &[], &[]).unwrap();
        assert_eq!(again.base, s.base);
        assert_eq!(again.points, s.points);
    }

    #[test]
    fn overrides_that_are_not_key_value_are_usage_errors() {
        assert!(matches!(
            load(FILE, &["steer.eta"], &[]),
            Err(SpecError::BadSet { .. })
        ));
        assert!(matches!(
            load(FILE, &["a..b=1"], &[]),
            Err(SpecError::BadSet { .. })
        ));
    }
}
