//! Folder datasets (docs/design.md §5): a user's own audio files with a labels CSV, turned into
//! the same on-disk dataset as a SynTheory render (`data::Manifest`, docs/contracts.md), so that
//! activations, probes and directions treat them alike.
//!
//! Two halves: [`read_labels`] validates the CSV against the folder and the concepts' class lists
//! and probes every file's header (planning and `rfmx check`, so bad input is exit 2 before any
//! node runs); [`build`] decodes, mixes to mono, resamples to 32 kHz and cuts/pads or windows
//! each file (the node, through temp files renamed at the end: never a half-built dataset).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use super::concepts::Concept;
use super::store::{Blob, ClipRecord, Dataset, Manifest};
use super::{DataError, DatasetConfig, MODEL_RATE, Progress, RendererInfo};
use crate::audio::decode::{self, is_audio_file};
use crate::spec::error::did_you_mean;

/// The CSV's first column: each file's path relative to the folder.
pub const FILE_COLUMN: &str = "file";

/// At most this many problems are listed in one error (the count of the rest follows).
const MAX_PROBLEMS: usize = 12;

/// A validated labels CSV: per data row its 1-based line, file and one label per concept column
/// (empty = not labelled for that concept).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderLabels {
    pub folder: PathBuf,
    pub csv: PathBuf,
    pub columns: Vec<Concept>,
    pub rows: Vec<LabelRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    pub line: usize,
    pub file: String,
    pub labels: Vec<String>,
}

impl FolderLabels {
    /// (file, class) of every row labelled for `concept`, in CSV order.
    pub fn rows_of(&self, concept: Concept) -> Vec<(String, String)> {
        let Some(col) = self.columns.iter().position(|c| *c == concept) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter(|r| !r.labels[col].is_empty())
            .map(|r| (r.file.clone(), r.labels[col].clone()))
            .collect()
    }

    /// The classes of `concept` that some row names, in the concept's order.
    pub fn classes_of(&self, concept: Concept) -> Vec<String> {
        let present: BTreeSet<String> = self.rows_of(concept).into_iter().map(|r| r.1).collect();
        concept
            .classes()
            .into_iter()
            .filter(|c| present.contains(c))
            .collect()
    }
}

/// Splits CSV text into records of fields with the 1-based line each record starts on
/// (RFC 4180: `"` quotes, `""` escapes, quoted fields may hold commas and newlines).
/// Problems found while validating, each with the CSV line (when one applies).
struct Problems {
    csv: PathBuf,
    list: Vec<String>,
}

impl Problems {
    fn at(&mut self, line: usize, message: impl std::fmt::Display) {
        self.list
            .push(format!("{}:{line}: {message}", self.csv.display()));
    }
    fn file(&mut self, message: impl std::fmt::Display) {
        self.list.push(message.to_string());
    }
    fn finish(&mut self) -> Result<(), DataError> {
        if self.list.is_empty() {
            return Ok(());
        }
        let n = self.list.len();
        let mut shown: Vec<String> = std::mem::take(&mut self.list)
            .into_iter()
            .take(MAX_PROBLEMS)
            .collect();
        if n > MAX_PROBLEMS {
            shown.push(format!("... and {} more", n - MAX_PROBLEMS));
        }
        Err(DataError::Folder {
            csv: self.csv.clone(),
            problems: shown,
        })
    }
}

/// Checks one label of `concept` and returns the class it names.
fn check_label(concept: Concept, label: &str) -> Result<String, String> {
    let classes = concept.classes();
    if classes.iter().any(|c| c == label) {
        return Ok(label.to_string());
    }
    if concept == Concept::Tempos {
        // A regression concept takes numbers: whole BPM inside the concept's range.
        return match label.parse::<f64>() {
            Ok(v) if v.is_finite() && v.fract() == 0.0 && classes.contains(&format!("{v}")) => {
                Ok(format!("{v}"))
            }
            Ok(v) if v.fract() != 0.0 => {
                Err(format!("tempo `{label}` must be a whole number of BPM"))
            }
            Ok(_) => Err(format!(
                "tempo `{label}` is outside the tempos concept's BPM {}..={}",
                classes[0],
                classes[classes.len() - 1]
            )),
            Err(_) => Err(format!("tempo `{label}` is not a number (BPM)")),
        };
    }
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let hint = did_you_mean(label, &names)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    let shown = if names.len() > 12 {
        format!(
            "{} classes, {} … {}",
            names.len(),
            names[0],
            names[names.len() - 1]
        )
    } else {
        names.join(", ")
    };
    Err(format!(
        "`{label}` is not a class of concept {concept} ({shown}){hint}"
    ))
}

/// A CSV path must stay inside the folder: relative, no `..`, not empty.
fn safe_relative(file: &str) -> Result<PathBuf, String> {
    let p = Path::new(file);
    if file.trim().is_empty() {
        return Err("the file name is empty".into());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "`{file}` must be a path relative to the folder, without `..`"
        ));
    }
    Ok(p.to_path_buf())
}

/// Reads and validates `csv` against `folder` for `concepts` (each must be a column): the header,
/// every row (file exists, is listed once, labels are classes), every audio file of the folder is
/// listed, and every listed file's header is readable with a sample rate and channels. All
/// problems are reported together, each naming the file and CSV line.
pub fn read_labels(
    folder: &Path,
    csv: &Path,
    concepts: &[Concept],
) -> Result<FolderLabels, DataError> {
    let mut p = Problems {
        csv: csv.to_path_buf(),
        list: Vec::new(),
    };
    if !folder.is_dir() {
        p.file(format!(
            "`{}` is not a directory (the folder of data.source, probe.evaluate_on or evaluate.judge_on; relative paths are relative to the spec file)",
            folder.display()
        ));
        p.finish()?;
    }
    let text = std::fs::read(csv).map_err(|source| DataError::Io {
        path: csv.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(text).map_err(|e| DataError::Format {
        path: csv.to_path_buf(),
        reason: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let records = crate::stimuli::csv::parse_with_lines(text).map_err(|(line, reason)| {
        DataError::Folder {
            csv: csv.to_path_buf(),
            problems: vec![format!("{}:{line}: {reason}", csv.display())],
        }
    })?;
    let Some(((hline, header), rows)) = records.split_first() else {
        return Err(DataError::Folder {
            csv: csv.to_path_buf(),
            problems: vec![format!(
                "{}: empty; expected a header `file,<concept>,...` and one row per audio file",
                csv.display()
            )],
        });
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    if header.first().map(String::as_str) != Some(FILE_COLUMN) {
        p.at(
            *hline,
            format!(
                "the header must start with `{FILE_COLUMN}`, found `{}` (expected `file,<concept>,...`, e.g. `file,keys,tempos`)",
                header.join(",")
            ),
        );
    }
    let mut columns: Vec<Concept> = Vec::new();
    // A column is a built-in concept or a user concept of `concepts` (the spec's definition,
    // docs/design.md §5); a user concept's name means nothing without the spec declaring it.
    let known = |name: &str| {
        Concept::builtin(name).or_else(|| concepts.iter().copied().find(|c| c.name() == name))
    };
    let mut names: Vec<&str> = Concept::NAMES.to_vec();
    names.extend(concepts.iter().filter(|c| c.is_user()).map(|c| c.name()));
    for name in header.iter().skip(1) {
        match known(name) {
            Some(c) if columns.contains(&c) => p.at(
                *hline,
                format!("column `{name}` appears twice in the header"),
            ),
            Some(c) => columns.push(c),
            None => {
                let hint = did_you_mean(name, &names)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| {
                        format!(
                            "; to use a concept of your own, declare it in the spec with `[data.define.{name}] classes = [...]` and list it in data.concepts"
                        )
                    });
                p.at(
                    *hline,
                    format!(
                        "header column `{name}` is not a concept (one of {}){hint}",
                        names.join(", ")
                    ),
                );
            }
        }
    }
    for c in concepts {
        if !columns.contains(c) && header.first().map(String::as_str) == Some(FILE_COLUMN) {
            p.at(
                *hline,
                format!("data.concepts names `{c}` but the header has no `{c}` column"),
            );
        }
    }
    if !p.list.is_empty() {
        p.finish()?;
    }
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut out = Vec::new();
    for (line, fields) in rows {
        let line = *line;
        if fields.len() != header.len() {
            p.at(
                line,
                format!(
                    "{} field(s), the header has {} ({})",
                    fields.len(),
                    header.len(),
                    header.join(",")
                ),
            );
            continue;
        }
        let file = fields[0].trim();
        let rel = match safe_relative(file) {
            Ok(r) => r,
            Err(m) => {
                p.at(line, m);
                continue;
            }
        };
        let norm: PathBuf = rel.components().collect();
        if let Some(first) = seen.insert(norm.clone(), line) {
            p.at(
                line,
                format!("`{file}` is listed again (first on line {first}): duplicate row"),
            );
            continue;
        }
        let mut labels = Vec::with_capacity(columns.len());
        for (c, raw) in columns.iter().zip(&fields[1..]) {
            let raw = raw.trim();
            if raw.is_empty() {
                labels.push(String::new());
                continue;
            }
            match check_label(*c, raw) {
                Ok(class) => labels.push(class),
                Err(m) => {
                    p.at(line, format!("`{file}`, column `{c}`: {m}"));
                    labels.push(String::new());
                }
            }
        }
        let path = folder.join(&norm);
        if !path.is_file() {
            p.at(
                line,
                format!("`{file}` does not exist in {}", folder.display()),
            );
        } else if let Err(e) = decode::probe(&path) {
            p.at(line, e);
        }
        out.push(LabelRow {
            line,
            file: norm.to_string_lossy().into_owned(),
            labels,
        });
    }
    let mut unlisted: Vec<String> = walkdir::WalkDir::new(folder)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && is_audio_file(e.path()))
        .filter_map(|e| e.path().strip_prefix(folder).ok().map(Path::to_path_buf))
        .filter(|rel| !seen.contains_key(rel))
        .map(|rel| rel.to_string_lossy().into_owned())
        .collect();
    unlisted.sort();
    for f in unlisted {
        p.file(format!(
            "{}: audio file `{f}` is not listed in {} (add a row, or move it out of the folder)",
            folder.display(),
            csv.display()
        ));
    }
    for c in concepts {
        let col = columns.iter().position(|x| x == c).expect("checked above");
        let classes: BTreeSet<&str> = out
            .iter()
            .map(|r| r.labels[col].as_str())
            .filter(|l| !l.is_empty())
            .collect();
        if classes.len() < 2 && p.list.is_empty() {
            p.file(format!(
                "{}: concept `{c}` has {} labelled class(es); a probe needs at least two",
                csv.display(),
                classes.len()
            ));
        }
    }
    p.finish()?;
    Ok(FolderLabels {
        folder: folder.to_path_buf(),
        csv: csv.to_path_buf(),
        columns,
        rows: out,
    })
}

/// How a folder dataset cuts its files, and which rows it holds (the dataset node's params).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub concept: String,
    /// Clip length in seconds: shorter files are zero-padded, longer ones cut (or windowed).
    pub clip_seconds: f64,
    /// None: one clip from each file's start; Some(h): windows of `clip_seconds` every `h` s.
    pub hop_seconds: Option<f64>,
    /// (file relative to the folder, class) in CSV order.
    pub rows: Vec<(String, String)>,
    /// The fingerprint of the files (their names and blake3), as the node's key holds it.
    pub fingerprint: String,
}

/// The clips of one decoded file at 32 kHz: (start second, samples), each `clip` long.
fn windows(mono: &[f32], clip: usize, hop: Option<usize>) -> Vec<(usize, Vec<f32>)> {
    let cut = |start: usize| {
        let mut v = mono[start.min(mono.len())..(start + clip).min(mono.len())].to_vec();
        v.resize(clip, 0.0);
        (start, v)
    };
    match hop {
        Some(h) if mono.len() > clip => (0..=(mono.len() - clip) / h).map(|i| cut(i * h)).collect(),
        _ => vec![cut(0)],
    }
}

pub const FOLDER_RESAMPLER: &str = "symphonia decode; mono = mean of the channels; rubato FftFixedInOut to 32000 Hz (BlackmanHarris2-windowed sinc, group delay removed)";

/// Builds the folder dataset of `cfg` into `dir` from the files under `folder`. Files are decoded
/// in parallel; every output is written to a temp file and renamed at the end, and any error
/// (an unreadable file, a file that changed) leaves no dataset behind.
pub fn build(
    cfg: &FolderConfig,
    folder: &Path,
    dir: &Path,
    progress: Progress,
) -> Result<Dataset, DataError> {
    // A user concept is in scope here: the node's `concept_defs` (exec::node).
    let concept = Concept::parse(&cfg.concept)
        .ok_or_else(|| DataError::UnknownConcept(cfg.concept.clone()))?;
    if !(cfg.clip_seconds.is_finite() && cfg.clip_seconds > 0.0) {
        return Err(DataError::Render(format!(
            "data.source.clip_seconds must be positive, found {}",
            cfg.clip_seconds
        )));
    }
    let clip = (cfg.clip_seconds * MODEL_RATE as f64).round() as usize;
    let hop = match cfg.hop_seconds {
        None => None,
        Some(h) if h.is_finite() && h > 0.0 => {
            Some(((h * MODEL_RATE as f64).round() as usize).max(1))
        }
        Some(h) => {
            return Err(DataError::Render(format!(
                "data.source.hop_seconds must be positive, found {h}"
            )));
        }
    };
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut blob = Blob::create(dir.join("audio_32k.f32"))?;
    let result = (|| {
        let mut records = Vec::new();
        let mut silent = 0;
        let mut per_class: BTreeMap<String, usize> = BTreeMap::new();
        let chunk = (rayon::current_num_threads() * 4).max(4);
        let total = cfg.rows.len();
        for (c, rows) in cfg.rows.chunks(chunk).enumerate() {
            let decoded: Vec<(u32, usize, Vec<f32>)> = rows
                .par_iter()
                .map(|(file, _)| {
                    let d = decode::decode(&folder.join(file))?;
                    let mono =
                        crate::audio::resample::resample(&d.mono(), d.sample_rate, MODEL_RATE)?;
                    Ok((d.sample_rate, d.channels.len(), mono))
                })
                .collect::<Result<_, DataError>>()?;
            for (i, ((file, class), (rate, channels, mono))) in rows.iter().zip(decoded).enumerate()
            {
                let row = c * chunk + i;
                for (start, samples) in windows(&mono, clip, hop) {
                    if samples.iter().all(|&v| v == 0.0) {
                        silent += 1;
                        continue;
                    }
                    let mut fields = BTreeMap::new();
                    fields.insert("file".to_string(), file.clone());
                    fields.insert("sample_rate".to_string(), rate.to_string());
                    fields.insert("channels".to_string(), channels.to_string());
                    fields.insert(
                        "start_seconds".to_string(),
                        format!("{:.6}", start as f64 / MODEL_RATE as f64),
                    );
                    let offset = blob.append(&samples)?;
                    *per_class.entry(class.clone()).or_default() += 1;
                    records.push(ClipRecord {
                        index: row,
                        concept,
                        class: class.clone(),
                        program: 0,
                        instrument: file.clone(),
                        fields,
                        offset_32k: offset,
                        len_32k: samples.len() as u64,
                        offset_44k: 0,
                        frames_44k: 0,
                    });
                }
            }
            progress((c * chunk + rows.len()).min(total), total);
        }
        Ok::<_, DataError>((records, silent, per_class))
    })();
    let (records, silent, per_class) = match result {
        Ok(v) => v,
        Err(e) => {
            blob.abort();
            return Err(e);
        }
    };
    blob.commit()?;
    let mut config = DatasetConfig::new(&cfg.concept);
    config.native = false;
    let manifest = Manifest {
        config,
        concept,
        renderer: RendererInfo::Folder {
            files: cfg.rows.len(),
            fingerprint: cfg.fingerprint.clone(),
        },
        native_rate: 0,
        model_rate: MODEL_RATE,
        resampler: FOLDER_RESAMPLER.into(),
        enumerated: cfg.rows.len(),
        rendered: records.len() + silent,
        silent_dropped: silent,
        kept: records.len(),
        per_class,
    };
    super::store::write_dataset(dir, manifest, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_keep_their_lines_quotes_and_embedded_commas() {
        let parse = crate::stimuli::csv::parse_with_lines;
        let r = parse(
            "file,keys\n\"a, b.wav\",C major\r\n\n\"x\"\"y.wav\",\"A\nminor\"\nlast.wav,D minor",
        )
        .unwrap();
        assert_eq!(r[0], (1, vec!["file".to_string(), "keys".to_string()]));
        assert_eq!(
            r[1],
            (2, vec!["a, b.wav".to_string(), "C major".to_string()])
        );
        assert_eq!(
            r[2],
            (4, vec!["x\"y.wav".to_string(), "A\nminor".to_string()])
        );
        assert_eq!(r[3].0, 6);
        assert!(
            parse("file\n\"open")
                .unwrap_err()
                .1
                .contains("unterminated")
        );
    }

    #[test]
    fn windows_cut_pad_and_hop() {
        let x: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        let w = windows(&x, 4, None);
        assert_eq!(w, vec![(0, vec![1.0, 2.0, 3.0, 4.0])]);
        let w = windows(&x[..2], 4, Some(2));
        assert_eq!(w, vec![(0, vec![1.0, 2.0, 0.0, 0.0])]);
        let w = windows(&x, 4, Some(3));
        let starts: Vec<usize> = w.iter().map(|x| x.0).collect();
        assert_eq!(starts, vec![0, 3, 6]);
        assert_eq!(w[2].1, vec![7.0, 8.0, 9.0, 10.0]);
    }

    #[test]
    fn labels_are_checked_against_the_class_list_with_a_hint() {
        assert_eq!(check_label(Concept::Notes, "C#").unwrap(), "C#");
        let e = check_label(Concept::Chords, "majr").unwrap_err();
        assert!(e.contains("did you mean `major`"), "{e}");
        assert_eq!(check_label(Concept::Tempos, "120.0").unwrap(), "120");
        assert!(
            check_label(Concept::Tempos, "fast")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            check_label(Concept::Tempos, "400")
                .unwrap_err()
                .contains("outside")
        );
        assert!(safe_relative("../x.wav").is_err());
        assert!(safe_relative("/etc/x.wav").is_err());
        assert!(safe_relative("sub/x.wav").is_ok());
    }
}
