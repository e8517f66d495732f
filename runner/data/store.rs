//! The rendering pipeline and the on-disk dataset.
//!
//! Layout of a dataset directory (all files written temp + rename; `manifest.json` last, so a
//! directory with a manifest is complete):
//! - `audio_32k.f32`: every kept clip's 32 kHz mono samples, little-endian f32, concatenated;
//! - `audio_44k.f32` (when `native`): the 44.1 kHz stereo renders, interleaved L/R f32;
//! - `clips.json`: per clip its labels and (offset, len) into the blobs, in samples/frames;
//! - `labels.csv`: the same labels as a table;
//! - `manifest.json`: config, renderer (SoundFont path + blake3, or built-in), counts.

use super::concepts::{Concept, Enumeration, enumerate};
use super::select::select;
use super::{DataError, DatasetConfig, MODEL_RATE, Progress, Renderer, RendererInfo, SAMPLE_RATE};
use crate::audio::{mix_mono, resample::resample};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipRecord {
    /// Row index in the full enumeration (SynTheory's order).
    pub index: usize,
    pub concept: Concept,
    pub class: String,
    pub program: u8,
    pub instrument: String,
    pub fields: BTreeMap<String, String>,
    pub offset_32k: u64,
    pub len_32k: u64,
    pub offset_44k: u64,
    pub frames_44k: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub config: DatasetConfig,
    pub concept: Concept,
    pub renderer: RendererInfo,
    pub native_rate: u32,
    pub model_rate: u32,
    pub resampler: String,
    /// Clips in the full enumeration of the concept.
    pub enumerated: usize,
    pub rendered: usize,
    pub silent_dropped: usize,
    pub kept: usize,
    pub per_class: BTreeMap<String, usize>,
}

/// One rendered clip handed to a sink.
pub struct Rendered {
    pub index: usize,
    /// Interleaved stereo at 44.1 kHz.
    pub stereo: Vec<f32>,
    pub mono_32k: Vec<f32>,
}

pub const RESAMPLER: &str = "rubato FftFixedInOut 44100->32000, BlackmanHarris2-windowed sinc anti-alias filter (1764 taps), group delay removed; mono = mean of L and R";

/// What [`render_selected`] returns: (concept, enumeration, rendered count, silent count, kept per
/// class).
pub type Selection = (Concept, Enumeration, usize, usize, BTreeMap<String, usize>);

/// Renders the clips selected by `cfg` in parallel batches and hands every non-silent one to
/// `sink` in selection order. Returns (enumeration, rendered count, silent count, kept per class).
pub fn render_selected(
    cfg: &DatasetConfig,
    renderer: &Renderer,
    progress: Progress,
    sink: &mut dyn FnMut(&Enumeration, Rendered) -> Result<(), DataError>,
) -> Result<Selection, DataError> {
    // Built-ins only: a user concept has no generator (docs/design.md §5).
    let concept = Concept::builtin(&cfg.concept)
        .ok_or_else(|| DataError::UnknownConcept(cfg.concept.clone()))?;
    let e = enumerate(concept, cfg.seed);
    let sel = select(cfg, concept, &e)?;
    let total: usize = sel
        .classes
        .iter()
        .map(|(_, c)| sel.per_class.unwrap_or(c.len()))
        .sum();
    let batch = (rayon::current_num_threads() * 16).max(16);
    let (mut rendered, mut silent, mut done) = (0, 0, 0);
    let mut kept = BTreeMap::new();
    for (class, cands) in &sel.classes {
        let want = sel.per_class.unwrap_or(cands.len());
        let mut have = 0;
        let mut next = 0;
        while have < want && next < cands.len() {
            let take = (want - have).min(batch);
            let ids = &cands[next..(next + take).min(cands.len())];
            next += ids.len();
            let out = render_batch(&e, renderer, ids)?;
            rendered += ids.len();
            for r in out {
                if r.stereo.iter().all(|&v| v == 0.0) {
                    silent += 1;
                    continue;
                }
                have += 1;
                done += 1;
                sink(&e, r)?;
            }
            progress(done, total);
        }
        if sel.per_class.is_some() && have < want {
            return Err(DataError::TooManySilent {
                class: class.clone(),
                kept: have,
                wanted: want,
            });
        }
        kept.insert(class.clone(), have);
    }
    Ok((concept, e, rendered, silent, kept))
}

fn render_batch(
    e: &Enumeration,
    renderer: &Renderer,
    ids: &[usize],
) -> Result<Vec<Rendered>, DataError> {
    let mut sources: Vec<usize> = ids.iter().map(|&i| e.clips[i].source).collect();
    sources.sort();
    sources.dedup();
    let audio: HashMap<usize, (Vec<f32>, Vec<f32>)> = sources
        .par_iter()
        .map(|&s| renderer.render(&e.sources[s]).map(|a| (s, a)))
        .collect::<Result<_, _>>()?;
    ids.par_iter()
        .map(|&i| {
            let c = &e.clips[i];
            let (l, r) = &audio[&c.source];
            let start = c.crop_start.unwrap_or(0);
            let n = e.clip_samples(i);
            let (l, r) = (&l[start..start + n], &r[start..start + n]);
            let stereo = l.iter().zip(r).flat_map(|(a, b)| [*a, *b]).collect();
            let mono_32k = resample(&mix_mono(l, r), SAMPLE_RATE, MODEL_RATE)?;
            Ok(Rendered {
                index: i,
                stereo,
                mono_32k,
            })
        })
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An f32 blob written to a temp sibling and renamed into place by `commit`.
pub(super) struct Blob {
    tmp: PathBuf,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    len: u64,
}

impl Blob {
    pub(super) fn create(path: PathBuf) -> Result<Blob, DataError> {
        let tmp = crate::fsx::temp_sibling(&path);
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        Ok(Blob {
            tmp,
            path,
            file: std::io::BufWriter::new(file),
            len: 0,
        })
    }
    pub(super) fn append(&mut self, x: &[f32]) -> Result<u64, DataError> {
        let at = self.len;
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file.write_all(&bytes).map_err(io(&self.tmp))?;
        self.len += x.len() as u64;
        Ok(at)
    }
    /// Drops the temp file (a failed build leaves nothing behind).
    pub(super) fn abort(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.tmp);
    }
    pub(super) fn commit(self) -> Result<(), DataError> {
        let f = self.file.into_inner().map_err(|e| DataError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))
    }
}

/// Labels of clip `i` as a record (offsets filled by the caller).
pub fn record(e: &Enumeration, i: usize) -> ClipRecord {
    let c = &e.clips[i];
    ClipRecord {
        index: i,
        concept: c.concept,
        class: c.class.clone(),
        program: c.program,
        instrument: c.instrument.clone(),
        fields: c
            .fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        offset_32k: 0,
        len_32k: 0,
        offset_44k: 0,
        frames_44k: 0,
    }
}

/// CSV of records; `file` column first when given.
pub fn labels_csv(records: &[ClipRecord], files: Option<&[String]>) -> String {
    let keys: Vec<&String> = records
        .first()
        .map(|r| r.fields.keys().collect())
        .unwrap_or_default();
    let mut out = String::new();
    if files.is_some() {
        out.push_str("file,");
    }
    out.push_str("index,concept,class,program,instrument");
    for k in &keys {
        out.push(',');
        out.push_str(k);
    }
    out.push('\n');
    for (n, r) in records.iter().enumerate() {
        let mut row: Vec<String> = Vec::new();
        if let Some(f) = files {
            row.push(f[n].clone());
        }
        row.extend([
            r.index.to_string(),
            r.concept.to_string(),
            r.class.clone(),
            r.program.to_string(),
            r.instrument.clone(),
        ]);
        row.extend(
            keys.iter()
                .map(|k| r.fields.get(*k).cloned().unwrap_or_default()),
        );
        out.push_str(
            &row.iter()
                .map(|v| csv_field(v))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Builds the dataset described by `cfg` into `dir` (created if needed).
pub fn build(cfg: &DatasetConfig, dir: &Path, progress: Progress) -> Result<Dataset, DataError> {
    let renderer = cfg.renderer()?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut b32 = Blob::create(dir.join("audio_32k.f32"))?;
    let mut b44 = if cfg.native {
        Some(Blob::create(dir.join("audio_44k.f32"))?)
    } else {
        None
    };
    let mut records = Vec::new();
    let result = render_selected(cfg, &renderer, progress, &mut |e, r| {
        let mut rec = record(e, r.index);
        rec.offset_32k = b32.append(&r.mono_32k)?;
        rec.len_32k = r.mono_32k.len() as u64;
        if let Some(b) = b44.as_mut() {
            rec.offset_44k = b.append(&r.stereo)? / 2;
            rec.frames_44k = r.stereo.len() as u64 / 2;
        }
        records.push(rec);
        Ok(())
    });
    let (concept, e, rendered, silent, kept) = match result {
        Ok(v) => v,
        Err(err) => {
            b32.abort();
            if let Some(b) = b44 {
                b.abort();
            }
            return Err(err);
        }
    };
    b32.commit()?;
    if let Some(b) = b44 {
        b.commit()?;
    }
    let manifest = Manifest {
        config: cfg.clone(),
        concept,
        renderer: renderer.info(),
        native_rate: SAMPLE_RATE,
        model_rate: MODEL_RATE,
        resampler: RESAMPLER.into(),
        enumerated: e.clips.len(),
        rendered,
        silent_dropped: silent,
        kept: records.len(),
        per_class: kept,
    };
    write_dataset(dir, manifest, records)
}

/// Writes `clips.json`, `labels.csv` and last `manifest.json` (each temp + rename, so a directory
/// with a manifest is complete) and returns the dataset.
pub(super) fn write_dataset(
    dir: &Path,
    manifest: Manifest,
    records: Vec<ClipRecord>,
) -> Result<Dataset, DataError> {
    let write = |name: &str, bytes: &[u8]| {
        crate::fsx::write_atomic(&dir.join(name), bytes).map_err(io(&dir.join(name)))
    };
    write(
        "clips.json",
        &serde_json::to_vec(&records).expect("serialisable"),
    )?;
    write("labels.csv", labels_csv(&records, None).as_bytes())?;
    write(
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest).expect("serialisable"),
    )?;
    Ok(Dataset {
        dir: dir.to_path_buf(),
        manifest,
        clips: records,
    })
}

/// A built dataset on disk.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub clips: Vec<ClipRecord>,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, DataError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|source| DataError::Io { path: p, source })
        };
        let fmt = |name: &str, e: serde_json::Error| DataError::Format {
            path: dir.join(name),
            reason: e.to_string(),
        };
        let manifest =
            serde_json::from_slice(&read("manifest.json")?).map_err(|e| fmt("manifest.json", e))?;
        let clips =
            serde_json::from_slice(&read("clips.json")?).map_err(|e| fmt("clips.json", e))?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            clips,
        })
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Clip `i` at 32 kHz mono.
    pub fn audio_32k(&self, i: usize) -> Result<Vec<f32>, DataError> {
        let c = &self.clips[i];
        read_f32(&self.dir.join("audio_32k.f32"), c.offset_32k, c.len_32k)
    }

    /// Clip `i` at 44.1 kHz, interleaved stereo (only when built with `native`).
    pub fn audio_44k(&self, i: usize) -> Result<Vec<f32>, DataError> {
        let c = &self.clips[i];
        read_f32(
            &self.dir.join("audio_44k.f32"),
            c.offset_44k * 2,
            c.frames_44k * 2,
        )
    }
}

fn read_f32(path: &Path, offset: u64, len: u64) -> Result<Vec<f32>, DataError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(offset * 4)).map_err(io(path))?;
    let mut bytes = vec![0u8; len as usize * 4];
    f.read_exact(&mut bytes).map_err(io(path))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
