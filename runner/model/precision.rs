//! The precision the MusicGen decoder runs in (`[model] dtype`, docs/design.md §cache keys).

use candle_core::DType;
use serde::{Deserialize, Serialize};

/// A resolved model precision. Node params carry it only when it is not f32, so that the keys
/// of specs written before `[model] dtype` existed do not change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// For `skip_serializing_if`: f32 is the implicit precision of every key.
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// `dtype = "auto"` for a `[model] device`: bf16 where the model runs on CUDA (candle's bf16
    /// kernels; half the memory and tensor-core matmuls), f32 on the CPU and Metal, where bf16
    /// is emulated and slower. Resolved when the plan is made, so the key names the precision
    /// the node will run in whatever machine later runs it.
    pub fn auto_for(device: &str) -> Precision {
        let d = device.trim().to_ascii_lowercase();
        let cuda =
            d.starts_with("cuda") || (d == "auto" && candle_core::utils::cuda_is_available());
        if cuda {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_is_skipped_and_others_serialise_lowercase() {
        #[derive(Serialize)]
        struct P {
            #[serde(skip_serializing_if = "Precision::is_f32")]
            dtype: Precision,
        }
        let s = |d| serde_json::to_string(&P { dtype: d }).unwrap();
        assert_eq!(s(Precision::F32), "{}");
        assert_eq!(s(Precision::Bf16), r#"{"dtype":"bf16"}"#);
        assert_eq!(s(Precision::F16), r#"{"dtype":"f16"}"#);
        assert_eq!(Precision::auto_for("cpu"), Precision::F32);
        assert_eq!(Precision::auto_for("cuda:1"), Precision::Bf16);
        assert_eq!(Precision::auto_for("metal"), Precision::F32);
    }
}
