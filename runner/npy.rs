//! A bounded `.npy` reader. candle's `Tensor::read_npy` allocates what the header claims before
//! reading a byte of data, so a header claiming shape (1e11, 1024) aborts the process on a
//! 409 TB allocation. Here every size is checked against the file's length before anything is
//! allocated, and every malformation is an error naming the file (docs/contracts.md, "Files rfmx
//! reads").

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

/// numpy itself refuses headers over 10 000 bytes unless told otherwise; 64 KiB leaves room.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Ranks beyond this are not arrays anything here writes or reads.
pub const MAX_RANK: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct NpyError {
    pub path: PathBuf,
    pub msg: String,
}

/// What an `.npy` header declares.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

/// Reads `path` as a little-endian, C-order `.npy` array.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|e| NpyError {
        path: path.to_path_buf(),
        msg: format!("cannot read: {e}"),
    })?;
    parse_npy(&bytes).map_err(|msg| NpyError {
        path: path.to_path_buf(),
        msg,
    })
}

/// Parses a whole `.npy` file held in memory; the message says what is wrong (no path: the
/// caller names the file).
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, String> {
    let h = parse_header(bytes)?;
    let data = &bytes[h.data_offset..];
    let elems = h
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows the element count", h.shape))?;
    let want = elems
        .checked_mul(h.dtype.size_in_bytes())
        .ok_or_else(|| format!("shape {:?} overflows the byte count", h.shape))?;
    if want != data.len() {
        return Err(format!(
            "header claims shape {:?} of {:?} ({want} bytes of data) but the file holds {} bytes \
             after its {}-byte header",
            h.shape,
            h.dtype,
            data.len(),
            h.data_offset
        ));
    }
    Tensor::from_raw_buffer(data, h.dtype, &h.shape, &Device::Cpu)
        .map_err(|e| format!("cannot build the array: {e}"))
}

/// Parses the magic, version, header length and the header dict.
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic)".into());
    }
    // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
    let start = match bytes[MAGIC.len()] {
        1 => MAGIC.len() + 4,
        2 | 3 => MAGIC.len() + 6,
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if bytes.len() < start {
        return Err("truncated before the header length".into());
    }
    let header_len = bytes[MAGIC.len() + 2..start]
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
        ));
    }
    let data_offset = start + header_len;
    if data_offset > bytes.len() {
        return Err(format!(
            "header length {header_len} runs past the end of the {}-byte file",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(&bytes[start..data_offset])
        .map_err(|_| "header is not UTF-8 text".to_string())?;
    let (dtype, shape) = parse_dict(text)?;
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset,
    })
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`: the three keys numpy writes,
/// each required.
fn parse_dict(text: &str) -> Result<(DType, Vec<usize>), String> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.trim_end().strip_suffix('}'))
        .ok_or_else(|| format!("header {:?} is not a dict", short(text)))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    // Split on commas outside the shape's parentheses.
    let mut depth = 0i32;
    let mut parts = vec![];
    let mut from = 0;
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[from..i]);
                from = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!(
                "header {:?} has unbalanced parentheses",
                short(text)
            ));
        }
    }
    parts.push(&body[from..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("header entry {:?} is not key: value", short(part)))?;
        let k = k.trim().trim_matches(|c| c == '\'' || c == '"');
        let v = v.trim();
        match k {
            "descr" => descr = Some(parse_descr(v.trim_matches(|c| c == '\'' || c == '"'))?),
            "fortran_order" => {
                fortran = Some(match v {
                    "False" => false,
                    "True" => true,
                    _ => return Err(format!("fortran_order {:?} is not True/False", short(v))),
                })
            }
            "shape" => shape = Some(parse_shape(v)?),
            _ => return Err(format!("unknown header key {:?}", short(k))),
        }
    }
    let dtype = descr.ok_or("header has no 'descr'")?;
    if fortran.ok_or("header has no 'fortran_order'")? {
        return Err("fortran_order True is not supported (save a C-order array)".into());
    }
    let shape = shape.ok_or("header has no 'shape'")?;
    Ok((dtype, shape))
}

fn parse_descr(d: &str) -> Result<DType, String> {
    let (order, code) = match d.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
        _ => ('=', d),
    };
    if order == '>' && !matches!(code, "u1" | "b1") {
        return Err(format!("big-endian dtype {d:?} is not supported"));
    }
    Ok(match code {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" | "b1" => DType::U8,
        "u4" => DType::U32,
        _ => return Err(format!("unsupported dtype {:?}", short(d))),
    })
}

fn parse_shape(v: &str) -> Result<Vec<usize>, String> {
    let inner = v
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("shape {:?} is not a tuple", short(v)))?;
    let dims: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if dims.len() > MAX_RANK {
        return Err(format!(
            "shape has {} dimensions (at most {MAX_RANK})",
            dims.len()
        ));
    }
    dims.iter()
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("shape entry {:?} is not a non-negative integer", short(s)))
        })
        .collect()
}

/// Quotes at most 60 characters of hostile text.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_what_candle_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let t =
            Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
        t.write_npy(&p).unwrap();
        let back = read_npy(&p).unwrap();
        assert_eq!(back.dims(), &[2, 3]);
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn a_huge_claimed_shape_is_an_error_not_an_allocation() {
        let b = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 1024), }",
            &[0; 16],
        );
        let e = parse_npy(&b).unwrap_err();
        assert!(e.contains("409600000000000 bytes of data"), "{e}");
        assert!(e.contains("holds 16 bytes"), "{e}");
    }

    #[test]
    fn overflowing_shapes_and_bad_headers_are_errors() {
        let cases = [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 2), }",
                "overflows",
            ),
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                "unsupported dtype",
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                "big-endian",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                "fortran_order",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                "non-negative",
            ),
            ("{'descr': '<f4', 'fortran_order': False, }", "no 'shape'"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ((1,), }",
                "parentheses",
            ),
            ("'descr': '<f4'", "not a dict"),
        ];
        for (h, want) in cases {
            let e = parse_npy(&npy(h, &[0; 4])).unwrap_err();
            assert!(e.contains(want), "{h}: {e}");
        }
        assert!(parse_npy(b"\x93NUMPY\x01").unwrap_err().contains("magic"));
        assert!(
            parse_npy(b"\x93NUMPY\x09\x00\x00\x00")
                .unwrap_err()
                .contains("version 9")
        );
        let mut long = b"\x93NUMPY\x01\x00".to_vec();
        long.extend_from_slice(&500u16.to_le_bytes());
        assert!(parse_npy(&long).unwrap_err().contains("runs past the end"));
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_npy(&v2).unwrap_err().contains("limit"));
    }

    #[test]
    fn the_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.npy");
        std::fs::write(
            &p,
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 1024), }",
                &[],
            ),
        )
        .unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
    }
}
