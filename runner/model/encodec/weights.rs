//! Weight loading: HF checkpoints store EnCodec convolutions weight-normed, either as
//! `weight_g`/`weight_v` (older `torch.nn.utils.weight_norm`, the Hub files) or as
//! `parametrizations.weight.original0`/`original1` (newer `save_pretrained`). Both are folded here into a
//! plain `weight`, so the network itself only ever sees one layout.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::EncodecError;

const LAYOUTS: [(&str, &str); 2] = [
    (
        "parametrizations.weight.original0",
        "parametrizations.weight.original1",
    ),
    ("weight_g", "weight_v"),
];

/// `g * v / ||v||`, the norm taken over every dim but 0 (torch's `weight_norm(dim=0)`).
pub fn fold(g: &Tensor, v: &Tensor) -> Result<Tensor, EncodecError> {
    let dims: Vec<usize> = (1..v.rank()).collect();
    let norm = v.sqr()?.sum_keepdim(dims)?.sqrt()?;
    Ok(v.broadcast_mul(&g.broadcast_div(&norm)?)?)
}

/// Replaces every weight-norm pair in `tensors` (any prefix, either layout) by its folded `weight`.
/// A half pair is an error: silently using `v` alone would give a plausible but wrong model.
pub fn fold_weight_norm(
    mut tensors: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, EncodecError> {
    for (g_suffix, v_suffix) in LAYOUTS {
        let prefixes: Vec<String> = tensors
            .keys()
            .filter_map(|k| k.strip_suffix(g_suffix).map(str::to_owned))
            .collect();
        for prefix in prefixes {
            let g = tensors.remove(&format!("{prefix}{g_suffix}"));
            let v = tensors.remove(&format!("{prefix}{v_suffix}"));
            let (Some(g), Some(v)) = (g, v) else {
                return Err(EncodecError::Weights(format!(
                    "{prefix}{g_suffix} has no {v_suffix} partner"
                )));
            };
            let name = format!("{prefix}weight");
            if tensors.contains_key(&name) {
                return Err(EncodecError::Weights(format!(
                    "{name} is stored both plain and weight-normed"
                )));
            }
            tensors.insert(name, fold(&g, &v)?);
        }
        if let Some(orphan) = tensors.keys().find(|k| k.ends_with(v_suffix)) {
            return Err(EncodecError::Weights(format!(
                "{orphan} has no {g_suffix} partner"
            )));
        }
    }
    Ok(tensors)
}

/// Reads `dir/model.safetensors` as f32 with weight norm folded.
pub fn load_safetensors_dir(
    dir: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, EncodecError> {
    let path = dir.join("model.safetensors");
    if !path.is_file() {
        return Err(EncodecError::Weights(format!(
            "{} not found",
            path.display()
        )));
    }
    let raw = candle_core::safetensors::load(&path, device)?;
    let raw = raw
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
    fold_weight_norm(raw)
}
