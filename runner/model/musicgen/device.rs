//! Device and dtype selection from the spec strings `auto | cpu | cuda[:N] | metal`.

use candle_core::{DType, Device};

use super::error::{MusicgenError, Result};

/// Parses a device spec. `auto` prefers CUDA, then Metal (when compiled in and present), else CPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |reason: String| MusicgenError::Device {
        spec: spec.to_string(),
        reason,
    };
    let s = spec.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).map_err(|e| err(e.to_string()))
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0).map_err(|e| err(e.to_string()))
            } else {
                Ok(Device::Cpu)
            }
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(err("rfmx was built without the `metal` feature".into()));
            }
            Device::new_metal(0).map_err(|e| err(e.to_string()))
        }
        _ => {
            let Some(rest) = s.strip_prefix("cuda") else {
                return Err(err("expected auto, cpu, cuda, cuda:N or metal".into()));
            };
            let ordinal = match rest {
                "" => 0,
                _ => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| err("expected cuda:N with N a GPU index".into()))?,
            };
            if !cfg!(feature = "cuda") {
                return Err(err("rfmx was built without the `cuda` feature".into()));
            }
            Device::new_cuda(ordinal).map_err(|e| err(e.to_string()))
        }
    }
}

/// Parses `auto | f32 | f16 | bf16`; `auto` is f32 on CPU (parity precision) and bf16 on GPUs.
/// Half precision on CPU is refused: candle's CPU kernels are slow and inexact there.
pub fn parse_dtype(spec: &str, device: &Device) -> Result<DType> {
    let err = |reason: &str| MusicgenError::Device {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let d = match spec.trim().to_ascii_lowercase().as_str() {
        "auto" if device.is_cpu() => DType::F32,
        "auto" => DType::BF16,
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => return Err(err("expected auto, f32, f16 or bf16")),
    };
    if device.is_cpu() && d != DType::F32 {
        return Err(err("only f32 is supported on the CPU"));
    }
    Ok(d)
}
