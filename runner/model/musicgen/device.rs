//! Device and dtype selection from the spec strings `auto | cpu | cuda[:N] | metal`.

use candle_core::{DType, Device};

use super::error::{MusicgenError, Result};

/// What `device = "auto"` resolves to on this machine, in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoDevice {
    /// CUDA ordinal 0: the first device `CUDA_VISIBLE_DEVICES` lets this process see (the CUDA
    /// runtime renumbers the visible devices from 0, so a Slurm job's `--gres=gpu:1` device is
    /// always 0 whatever its physical index).
    Cuda,
    Metal,
    Cpu,
}

/// `auto`'s choice (docs/design.md §2, Slurm): CUDA when built in and a GPU is visible, else
/// Metal when present, else the CPU. A GPU is visible unless `CUDA_VISIBLE_DEVICES` is set to
/// nothing (empty, `-1`, Slurm's `NoDevFiles`), or unless the process runs in a Slurm job
/// (`in_slurm_job`) and the variable is unset: Slurm sets it for every job it gave GPUs, so a
/// job without it was given none and must not take a GPU its node happens to expose.
pub fn auto_device(
    cuda_built: bool,
    metal: bool,
    cuda_visible_devices: Option<&str>,
    in_slurm_job: bool,
) -> AutoDevice {
    let gpu_visible = match cuda_visible_devices.map(str::trim) {
        Some(v) => !(v.is_empty() || v == "-1" || v.eq_ignore_ascii_case("NoDevFiles")),
        None => !in_slurm_job,
    };
    if cuda_built && gpu_visible {
        AutoDevice::Cuda
    } else if metal {
        AutoDevice::Metal
    } else {
        AutoDevice::Cpu
    }
}

/// [`auto_device`] from this build and this process's environment.
pub fn auto_device_here() -> AutoDevice {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    auto_device(
        candle_core::utils::cuda_is_available(),
        candle_core::utils::metal_is_available(),
        visible.as_deref(),
        std::env::var_os("SLURM_JOB_ID").is_some(),
    )
}

/// Parses a device spec. `auto` is [`auto_device_here`].
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |reason: String| MusicgenError::Device {
        spec: spec.to_string(),
        reason,
    };
    let s = spec.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => match auto_device_here() {
            AutoDevice::Cuda => Device::new_cuda(0).map_err(|e| err(e.to_string())),
            AutoDevice::Metal => Device::new_metal(0).map_err(|e| err(e.to_string())),
            AutoDevice::Cpu => Ok(Device::Cpu),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_a_gpu_only_where_one_is_visible_to_this_process() {
        use AutoDevice::*;
        // Outside Slurm: unset = every GPU visible; a list = its first device (CUDA's ordinal 0).
        assert_eq!(auto_device(true, false, None, false), Cuda);
        assert_eq!(auto_device(true, false, Some("3"), false), Cuda);
        assert_eq!(auto_device(true, false, Some("2,5"), true), Cuda);
        // Hidden: empty, -1, Slurm's NoDevFiles.
        for hidden in ["", " ", "-1", "NoDevFiles"] {
            assert_eq!(
                auto_device(true, false, Some(hidden), false),
                Cpu,
                "{hidden:?}"
            );
            assert_eq!(
                auto_device(true, true, Some(hidden), true),
                Metal,
                "{hidden:?}"
            );
        }
        // A Slurm job given no GPU has no CUDA_VISIBLE_DEVICES: the CPU.
        assert_eq!(auto_device(true, false, None, true), Cpu);
        // Not built with CUDA: never CUDA, whatever the variable says.
        assert_eq!(auto_device(false, false, Some("0"), true), Cpu);
        assert_eq!(auto_device(false, true, Some("0"), false), Metal);
    }
}
