//! The weight files of a `save_pretrained` snapshot: `model.safetensors`, sharded safetensors
//! (`model.safetensors.index.json`), `pytorch_model.bin` (read with candle's pickle reader) or sharded
//! `.bin` (`pytorch_model.bin.index.json`). Safetensors win when a snapshot has both.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::error::ModelError;

/// The formats in the order they are looked for.
const LAYOUTS: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// The weight files of `dir`, shards in name order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    for name in LAYOUTS {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        if !name.ends_with(".index.json") {
            return Ok(vec![path]);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::snapshot(&path, format!("not a shard index: {e}")))?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::snapshot(&path, "shard index has no `weight_map` object"))?;
        let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        if shards.is_empty() {
            return Err(ModelError::snapshot(&path, "shard index lists no shard"));
        }
        let mut files = Vec::with_capacity(shards.len());
        for s in shards {
            // Shards live beside the index; a name that climbs out of the snapshot is refused.
            if s.contains('/') || s.contains('\\') || s == ".." {
                return Err(ModelError::snapshot(&path, format!("bad shard name {s:?}")));
            }
            let f = dir.join(s);
            if !f.is_file() {
                return Err(ModelError::snapshot(
                    &path,
                    format!("shard {s} is missing (incomplete download?)"),
                ));
            }
            files.push(f);
        }
        return Ok(files);
    }
    Err(ModelError::snapshot(
        dir,
        format!("no weights: looked for {}", LAYOUTS.join(", ")),
    ))
}

/// Every tensor of `files` on the CPU in its stored dtype. A name in two shards is an error.
pub fn load_tensors(files: &[PathBuf]) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::new();
    for f in files {
        let is_bin = f.extension().is_some_and(|e| e == "bin");
        let tensors: Vec<(String, Tensor)> = if is_bin {
            candle_core::pickle::read_all(f)
                .map_err(|e| ModelError::snapshot(f, format!("reading PyTorch weights: {e}")))?
        } else {
            candle_core::safetensors::load(f, &Device::Cpu)
                .map_err(|e| ModelError::snapshot(f, format!("reading safetensors: {e}")))?
                .into_iter()
                .collect()
        };
        for (name, t) in tensors {
            if out.insert(name.clone(), t).is_some() {
                return Err(ModelError::snapshot(
                    f,
                    format!("tensor {name} appears in more than one weight file"),
                ));
            }
        }
    }
    Ok(out)
}

/// The tensors under `prefix.` with the prefix removed.
pub fn strip_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix(&p).map(|rest| (rest.to_string(), t.clone())))
        .collect()
}
