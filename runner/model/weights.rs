//! The weight files of a `save_pretrained` snapshot: `model.safetensors`, sharded safetensors
//! (`model.safetensors.index.json`), `pytorch_model.bin` (read with the bounded reader of [`super::torch_bin`]) or sharded
//! `.bin` (`pytorch_model.bin.index.json`). Safetensors win when a snapshot has both.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

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
        let text = crate::fsx::read_text_limited(&path, crate::fsx::TEXT_LIMIT)
            .map_err(|e| ModelError::io(&path, e))?;
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

/// Every tensor of `files` on the CPU in its stored dtype (see [`load_tensors_as`]).
pub fn load_tensors(files: &[PathBuf]) -> Result<HashMap<String, Tensor>, ModelError> {
    load_tensors_as(files, &|_| None)
}

/// Every tensor of `files` on the CPU, in the dtype `dtype_of(name)` picks (`None`: as stored).
/// A name in two shards is an error.
///
/// Safetensors files are memory-mapped and each tensor is copied once, straight from the mapping
/// into its own buffer (tensors in parallel); the mapped pages are released as soon as they are
/// copied, so the process holds about one copy of the weights at any time instead of the file
/// read into memory plus the tensors made from it (4.6 GB peak for musicgen-small's 2.3 GB before).
/// A dtype conversion happens per tensor, so a half-precision load never holds the f32 weights.
pub fn load_tensors_as(
    files: &[PathBuf],
    dtype_of: &(dyn Fn(&str) -> Option<DType> + Sync),
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::new();
    for f in files {
        let is_bin = f.extension().is_some_and(|e| e == "bin");
        let tensors: Vec<(String, Tensor)> = if is_bin {
            super::torch_bin::read_file(f)
                .map_err(|e| ModelError::snapshot(f, format!("reading PyTorch weights: {e}")))?
                .into_iter()
                .map(|(name, t)| {
                    let t = match dtype_of(&name) {
                        Some(d) => t.to_dtype(d)?,
                        None => t,
                    };
                    Ok((name, t))
                })
                .collect::<Result<_, candle_core::Error>>()?
        } else {
            load_safetensors(f, dtype_of)?
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

fn load_safetensors(
    path: &Path,
    dtype_of: &(dyn Fn(&str) -> Option<DType> + Sync),
) -> Result<Vec<(String, Tensor)>, ModelError> {
    use rayon::prelude::*;
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the mapping is read-only and lives only inside this function; every tensor is copied
    // out of it (or read with pread) before it is unmapped. A file truncated by another process
    // meanwhile would fault (SIGBUS), as with any mmap-based loader (transformers' included).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| ModelError::snapshot(path, format!("reading safetensors: {e}")))?;
    let base = map.as_ptr() as usize;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    views
        .into_par_iter()
        .map(|(name, view)| {
            let offset = view.data().as_ptr() as usize - base;
            let t = read_tensor(&file, offset, &view)
                .and_then(|t| match dtype_of(&name) {
                    Some(d) => t.to_dtype(d),
                    None => Ok(t),
                })
                .map_err(|e| ModelError::snapshot(path, format!("tensor {name}: {e}")))?;
            Ok((name, t))
        })
        .collect()
}

/// One tensor of a safetensors file. The common dtypes are read with `pread` straight from the
/// page cache into the tensor's own buffer, asked to be backed by huge pages: copying out of
/// the mapping instead spent most of a musicgen-small load (2.4 s of 2.36 GB) in page faults,
/// 4 KiB at a time for the file pages and again for the new buffer. Other dtypes (and big-endian
/// machines, where the bytes need swapping) go through candle's conversion from the mapping.
fn read_tensor(
    file: &std::fs::File,
    offset: usize,
    view: &safetensors::tensor::TensorView<'_>,
) -> candle_core::Result<Tensor> {
    use candle_core::safetensors::Load;
    use safetensors::Dtype as S;
    #[cfg(all(unix, target_endian = "little"))]
    {
        use candle_core::WithDType;
        fn read<T: WithDType>(
            file: &std::fs::File,
            offset: usize,
            shape: &[usize],
        ) -> candle_core::Result<Tensor> {
            let n = shape.iter().product();
            Tensor::from_vec(read_vec::<T>(file, offset, n)?, shape, &Device::Cpu)
        }
        let shape = view.shape();
        match view.dtype() {
            S::F32 => return read::<f32>(file, offset, shape),
            S::F16 => return read::<half::f16>(file, offset, shape),
            S::BF16 => return read::<half::bf16>(file, offset, shape),
            S::F64 => return read::<f64>(file, offset, shape),
            S::I64 => return read::<i64>(file, offset, shape),
            S::U32 => return read::<u32>(file, offset, shape),
            S::U8 => return read::<u8>(file, offset, shape),
            _ => {}
        }
    }
    let _ = (file, offset);
    view.load(&Device::Cpu)
}

/// `n` values of `T` from `offset` of `file` (little-endian bytes), into a buffer that nothing
/// touched before: the kernel zero-fills its pages on the read's first write, 2 MiB at a time
/// where transparent huge pages are on.
#[cfg(unix)]
fn read_vec<T: Copy>(file: &std::fs::File, offset: usize, n: usize) -> candle_core::Result<Vec<T>> {
    let bytes = n * std::mem::size_of::<T>();
    let mut v: Vec<T> = Vec::with_capacity(n);
    let ptr = v.as_mut_ptr() as *mut u8;
    #[cfg(target_os = "linux")]
    advise_huge(ptr, bytes);
    // libc's pread rather than `FileExt::read_exact_at`, which takes an initialised `&mut [u8]`:
    // zeroing every buffer first would write the weights' size once more.
    let mut done = 0;
    while done < bytes {
        // SAFETY: `ptr + done .. ptr + bytes` lies inside `v`'s allocation (capacity n); pread
        // writes at most `bytes - done` bytes there and no reference to the uninitialised memory
        // exists meanwhile.
        let got = unsafe {
            libc::pread(
                std::os::unix::io::AsRawFd::as_raw_fd(file),
                ptr.add(done) as *mut libc::c_void,
                bytes - done,
                (offset + done) as libc::off_t,
            )
        };
        match got {
            0 => {
                return Err(candle_core::Error::Msg(format!(
                    "the file ends {} bytes into a tensor of {bytes}",
                    done
                )));
            }
            g if g < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(candle_core::Error::Msg(format!("reading a tensor: {e}")));
                }
            }
            g => done += g as usize,
        }
    }
    // SAFETY: all `n` values' bytes were written above, and every bit pattern is a valid `T` for
    // the plain number types this is called with.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// Asks for transparent huge pages over the whole 2 MiB pages inside `ptr .. ptr + len` (a hint:
/// it fails harmlessly where THP is off).
#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE changes
        // how its pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// The tensors under `prefix.` with the prefix removed.
pub fn strip_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix(&p).map(|rest| (rest.to_string(), t.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype the pread path reads, at offsets that are not multiples of their size (a 3-element
    /// u8 tensor first), comes back equal to what was saved; a truncated file is an error.
    #[test]
    fn safetensors_of_every_dtype_load_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let f = Tensor::arange(0f32, 300., &dev)
            .unwrap()
            .reshape((3, 100))
            .unwrap();
        let saved: HashMap<String, Tensor> = [
            ("a.u8", Tensor::new(&[1u8, 2, 3], &dev).unwrap()),
            ("b.f32", (f.clone() * 0.37).unwrap()),
            ("c.f16", f.to_dtype(DType::F16).unwrap()),
            ("d.bf16", f.to_dtype(DType::BF16).unwrap()),
            ("e.f64", (f.to_dtype(DType::F64).unwrap() / 7.0).unwrap()),
            ("f.i64", Tensor::new(&[-5i64, 9, 1 << 40], &dev).unwrap()),
            ("g.u32", Tensor::new(&[7u32, u32::MAX], &dev).unwrap()),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
        let path = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&saved, &path).unwrap();
        let got = load_tensors(std::slice::from_ref(&path)).unwrap();
        assert_eq!(got.len(), saved.len());
        for (k, want) in &saved {
            let t = &got[k];
            assert_eq!(t.dtype(), want.dtype(), "{k}");
            assert_eq!(t.dims(), want.dims(), "{k}");
            let diff = (t.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(diff, 0.0, "{k}");
        }
        // Asked dtypes convert per tensor.
        let half = load_tensors_as(std::slice::from_ref(&path), &|n: &str| {
            n.ends_with("f32").then_some(DType::BF16)
        })
        .unwrap();
        assert_eq!(half["b.f32"].dtype(), DType::BF16);
        // A file cut short: refused with the file's name, no panic.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let err = load_tensors(&[cut]).unwrap_err().to_string();
        assert!(err.contains("cut.safetensors"), "{err}");
    }
}
