//! The listening-test spec (`specs/listening_test.toml`): its own small schema, parsed with
//! unknown keys rejected.
//!
//! ```toml
//! [test]                       # name, seed, subjects, clips_per_cell, clip_seconds, loudness
//! [[targets]]                  # id = "notes:C", label = "the note C"
//! [[questions]]                # id, text ("{label}", "{target}", "{concept}", "{class}" expand)
//! [[conditions]]               # id, description, source = "files" | "generations", ...
//! ```
//! An overall-quality question (id `quality`) is always asked; the spec may reword it by
//! declaring a question with that id.

use super::{Result, StimuliError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListeningSpec {
    pub test: TestSpec,
    pub targets: Vec<TargetSpec>,
    #[serde(default)]
    pub questions: Vec<QuestionSpec>,
    pub conditions: Vec<ConditionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Output goes to `reports/<name>/`.
    pub name: String,
    /// Seeds the blinded ids and the presentation orders.
    pub seed: u64,
    pub subjects: usize,
    #[serde(default = "one")]
    pub clips_per_cell: usize,
    pub clip_seconds: f64,
    /// Start of the excerpt in each source clip (seconds).
    #[serde(default)]
    pub offset_seconds: f64,
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    #[serde(default = "default_lufs")]
    pub target_lufs: f64,
    #[serde(default = "default_tp")]
    pub true_peak_dbtp: f64,
    #[serde(default = "default_fade")]
    pub fade_ms: f64,
    /// Shown at the top of the rating page.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Let one source clip feed several stimuli (refused by default: a subject would hear the same
    /// clip twice, and analysis would count identical audio as independent ratings). The repeats
    /// are then recorded in the private key.
    #[serde(default)]
    pub allow_repeats: bool,
}

fn one() -> usize {
    1
}
fn default_rate() -> u32 {
    32_000
}
fn default_lufs() -> f64 {
    -23.0
}
fn default_tp() -> f64 {
    -1.0
}
fn default_fade() -> f64 {
    20.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// `concept:class`, as in `steer.targets`.
    pub id: String,
    /// How the question names it ("the note C"); defaults to the id.
    #[serde(default)]
    pub label: Option<String>,
}

impl TargetSpec {
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
    pub fn concept(&self) -> &str {
        self.id.split_once(':').map_or(self.id.as_str(), |(c, _)| c)
    }
    pub fn class(&self) -> &str {
        self.id.split_once(':').map_or(self.id.as_str(), |(_, c)| c)
    }
    /// Expands `{target}`, `{label}`, `{concept}`, `{class}` in a template.
    pub fn expand(&self, template: &str) -> String {
        template
            .replace("{target}", &self.id)
            .replace("{label}", self.label())
            .replace("{concept}", self.concept())
            .replace("{class}", self.class())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionSpec {
    pub id: String,
    pub text: String,
    #[serde(default = "low")]
    pub low: String,
    #[serde(default = "high")]
    pub high: String,
}

fn low() -> String {
    "not at all".into()
}
fn high() -> String {
    "perfectly".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub source: SourceKind,
    /// `files`: WAV paths per target id (relative paths are relative to the spec's directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Vec<PathBuf>>,
    /// `generations`: the experiment whose `generation[...]` nodes supply the audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// `generations`: the store root (default `$RFMX_HOME`, else `.rfmx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// `generations`: `meta.json` fields a node must match; string values expand `{target}`,
    /// `{label}`, `{concept}`, `{class}`; numbers match within 1e-9; a list matches any of its
    /// values; a table keyed by target id gives each target its own value (e.g. its own seeds, so
    /// that a condition that does not depend on the target still takes distinct clips per target).
    #[serde(rename = "match", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matches: BTreeMap<String, serde_json::Value>,
}

/// Where a condition's audio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// WAV files given by path.
    Files,
    /// `generation[...]` nodes of an experiment in the rfmx store (docs/contracts.md: `audio.wav` +
    /// `meta.json`).
    Generations,
}

/// The always-asked overall-quality question.
pub fn quality_question() -> QuestionSpec {
    QuestionSpec {
        id: "quality".into(),
        text: "Overall audio quality".into(),
        low: "bad".into(),
        high: "excellent".into(),
    }
}

impl ListeningSpec {
    /// Questions as asked: the spec's, plus `quality` unless the spec rewords it.
    pub fn all_questions(&self) -> Vec<QuestionSpec> {
        let mut q = self.questions.clone();
        if !q.iter().any(|x| x.id == "quality") {
            q.push(quality_question());
        }
        q
    }

    /// Reads and validates a spec; relative file paths become relative to the spec's directory.
    pub fn load(path: &Path) -> Result<ListeningSpec> {
        let text = crate::fsx::read_text_limited(path, crate::fsx::TEXT_LIMIT)
            .map_err(super::io_err(path))?;
        let err = |msg: String| StimuliError::Spec {
            path: path.to_path_buf(),
            msg,
        };
        let mut spec: ListeningSpec = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for c in &mut spec.conditions {
            for paths in c.files.values_mut() {
                for p in paths.iter_mut() {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
            }
            if let Some(s) = &mut c.store
                && s.is_relative()
            {
                *s = base.join(&*s);
            }
        }
        if let Some((at, msg, help)) = spec.name_problem() {
            let span = crate::spec::spans::SpanMap::parse(&text)
                .ok()
                .and_then(|m| m.get(&at).map(|e| e.value.clone()));
            let d = crate::spec::error::SpecDiagnostic::in_file(
                &path.display().to_string(),
                &text,
                span,
                msg,
                Some(help.into()),
                "this name",
            );
            return Err(StimuliError::Located(Box::new(d)));
        }
        spec.validate().map_err(err)?;
        Ok(spec)
    }

    /// The first name that cannot be what it names, as (key path in the file, message, hint):
    /// `test.name` is the folder `reports/<name>/` (docs/contracts.md, "Names"); condition and
    /// question ids are columns and keys of the results, kept to letters, digits and `_`.
    fn name_problem(&self) -> Option<(Vec<String>, String, &'static str)> {
        let at = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let name = &self.test.name;
        let folder_hint = "it names the folder reports/<name>/: use e.g. `notes-lt1`";
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Some((
                at(&["test", "name"]),
                format!("test.name `{name}` must be non-empty ASCII letters, digits, '_' or '-'"),
                folder_hint,
            ));
        }
        if let Some(why) = crate::fsx::component_problem(name) {
            return Some((
                at(&["test", "name"]),
                format!("test.name `{name}` {why}"),
                folder_hint,
            ));
        }
        let ids = self
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| ("conditions", "condition", i, &c.id))
            .chain(
                self.questions
                    .iter()
                    .enumerate()
                    .map(|(i, q)| ("questions", "question", i, &q.id)),
            );
        for (table, what, i, id) in ids {
            if !simple_id(id) {
                return Some((
                    vec![table.into(), i.to_string(), "id".into()],
                    format!("{what} id `{id}` must be ASCII letters, digits or '_'"),
                    "ids are columns and keys of the results files: use e.g. `steered_1`",
                ));
            }
        }
        None
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.test;
        if let Some((_, msg, _)) = self.name_problem() {
            return Err(msg);
        }
        if t.subjects == 0 {
            return Err("test.subjects must be at least 1".into());
        }
        if t.clips_per_cell == 0 {
            return Err("test.clips_per_cell must be at least 1".into());
        }
        if !(t.clip_seconds > 0.0 && t.clip_seconds <= 60.0) {
            return Err(format!(
                "test.clip_seconds = {} must be in (0, 60]",
                t.clip_seconds
            ));
        }
        if !(t.offset_seconds >= 0.0 && t.offset_seconds.is_finite()) {
            return Err("test.offset_seconds must be >= 0".into());
        }
        if !(8_000..=192_000).contains(&t.sample_rate) {
            return Err(format!(
                "test.sample_rate = {} must be in 8000..=192000",
                t.sample_rate
            ));
        }
        if !(-70.0..=0.0).contains(&t.target_lufs) {
            return Err(format!(
                "test.target_lufs = {} must be in [-70, 0]",
                t.target_lufs
            ));
        }
        if !(-20.0..=0.0).contains(&t.true_peak_dbtp) {
            return Err(format!(
                "test.true_peak_dbtp = {} must be in [-20, 0]",
                t.true_peak_dbtp
            ));
        }
        if !(0.0..=t.clip_seconds * 250.0).contains(&t.fade_ms) {
            return Err(format!(
                "test.fade_ms = {} must be in [0, a quarter of the clip]",
                t.fade_ms
            ));
        }
        if self.targets.is_empty() {
            return Err("at least one [[targets]] is required".into());
        }
        if self.conditions.len() < 2 {
            return Err("at least two [[conditions]] are required to compare".into());
        }
        unique("targets", self.targets.iter().map(|x| x.id.as_str()))?;
        unique("conditions", self.conditions.iter().map(|x| x.id.as_str()))?;
        unique("questions", self.questions.iter().map(|x| x.id.as_str()))?;
        for c in &self.conditions {
            match c.source {
                SourceKind::Files => {
                    if c.experiment.is_some() || c.store.is_some() || !c.matches.is_empty() {
                        return Err(format!(
                            "condition `{}`: `experiment`, `store` and `match` belong to source = \"generations\"",
                            c.id
                        ));
                    }
                }
                SourceKind::Generations => {
                    if c.experiment.is_none() {
                        return Err(format!(
                            "condition `{}`: source = \"generations\" needs `experiment`",
                            c.id
                        ));
                    }
                    if !c.files.is_empty() {
                        return Err(format!(
                            "condition `{}`: `files` belongs to source = \"files\"",
                            c.id
                        ));
                    }
                }
            }
            {
                let known: BTreeSet<&str> = self.targets.iter().map(|t| t.id.as_str()).collect();
                for (field, v) in &c.matches {
                    if let serde_json::Value::Object(per_target) = v {
                        let listed = |k: &str| per_target.contains_key(k);
                        if let Some(t) = known.iter().find(|t| !listed(t)) {
                            return Err(format!(
                                "condition `{}`: match.{field} has no value for target `{t}` \
                                 (a table in `match` is keyed by target id)",
                                c.id
                            ));
                        }
                        if let Some(k) = per_target.keys().find(|k| !known.contains(k.as_str())) {
                            return Err(format!(
                                "condition `{}`: match.{field} names `{k}`, which is not a declared \
                                 target (targets: {})",
                                c.id,
                                known.iter().copied().collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                }
                for k in c.files.keys() {
                    if !known.contains(k.as_str()) {
                        return Err(format!(
                            "condition `{}`: files for `{k}`, which is not a declared target (targets: {})",
                            c.id,
                            known.iter().copied().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn simple_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> std::result::Result<(), String> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(format!("duplicate id `{id}` in [[{what}]]"));
        }
    }
    Ok(())
}
