//! Span-carrying spec errors, rendered by miette with the file, line, column, a caret and a hint.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};
use thiserror::Error;

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The spec file (span points into it).
    File,
    /// A `--set key=value` argument (the source shown is the argument).
    Set(String),
    /// An `RFMX_SECTION__KEY` environment variable (the source shown is `NAME=value`).
    Env(String),
    /// A point of the `[sweep]` table (span points at the sweep value in the file).
    Sweep(String),
    /// The embedded defaults (a bug in rfmx, never the user's).
    Defaults,
}

/// One problem in a spec.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(rfmx::spec))]
pub struct SpecDiagnostic {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
    /// 1-based line and column in the spec file, when the problem is located there.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub origin: Origin,
}

impl SpecDiagnostic {
    /// A problem at `span` of the file `name` whose text is `text` (line and column from the span;
    /// without a hint, the typo hint of an "unknown ..." message).
    pub fn in_file(
        name: &str,
        text: &str,
        span: Option<std::ops::Range<usize>>,
        message: String,
        help: Option<String>,
        label: &str,
    ) -> SpecDiagnostic {
        let (line, column) = match &span {
            Some(r) => {
                let (l, c) = line_col(text, r.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        SpecDiagnostic {
            help: help.or_else(|| hint_from_message(&message)),
            message,
            src: NamedSource::new(name, text.to_string()),
            span: span.map(|r| SourceSpan::from(r.start..r.end.max(r.start))),
            label: label.into(),
            line,
            column,
            origin: Origin::File,
        }
    }

    /// Rendered without colour at a fixed width, with the file, line, column, caret and hint.
    pub fn render(&self, width: usize) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(width)
            .with_links(false);
        let mut out = String::new();
        if handler.render_report(&mut out, self).is_err() {
            out = self.message.clone();
        }
        out
    }
}

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("cannot read spec `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("spec `{path}` is invalid ({} problem(s))", diagnostics.len())]
    Invalid {
        path: String,
        diagnostics: Vec<SpecDiagnostic>,
    },
    #[error("bad --set argument `{arg}`: {reason}")]
    BadSet { arg: String, reason: String },
}

impl SpecError {
    /// Renders every diagnostic without colour at a fixed width (stable for snapshots and logs).
    pub fn render(&self, width: usize) -> String {
        match self {
            SpecError::Invalid { diagnostics, .. } => {
                let mut out = String::new();
                for d in diagnostics {
                    out.push_str(&d.render(width));
                    out.push('\n');
                }
                out
            }
            other => format!("Error: {other}\n"),
        }
    }

    /// The 1-based spec-file lines of the problems (for tests and machine consumers).
    pub fn lines(&self) -> Vec<usize> {
        match self {
            SpecError::Invalid { diagnostics, .. } => {
                diagnostics.iter().filter_map(|d| d.line).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "unknown concept `nots`, expected one of `notes`, ..." — the backticked format that
/// `hint_from_message` reads back.
pub fn unknown_name_message(what: &str, name: &str, candidates: &[&str]) -> String {
    let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
    format!(
        "unknown {what} `{name}`, expected one of {}",
        list.join(", ")
    )
}

/// For serde-style "unknown field/variant `x`, expected `a` or `b`" messages: the typo hint.
pub fn hint_from_message(message: &str) -> Option<String> {
    if !message.starts_with("unknown ") {
        return None;
    }
    let ticks: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (name, candidates) = ticks.split_first()?;
    did_you_mean(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_hints() {
        assert_eq!(
            did_you_mean("kapa", &["w0", "kappa", "strategy"]),
            Some("kappa")
        );
        assert_eq!(did_you_mean("zzzzzz", &["w0", "kappa"]), None);
        assert_eq!(
            hint_from_message("unknown field `etaa`, expected one of `eta`, `gate`").as_deref(),
            Some("did you mean `eta`?")
        );
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }
}
