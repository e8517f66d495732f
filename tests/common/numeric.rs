//! Tensor comparisons of the numeric parity tests, in f32 whatever the tensors' dtype.

use candle_core::{DType, Tensor};

/// max |t|.
pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.abs())
        .and_then(|t| t.max_all())
        .and_then(|t| t.to_scalar())
        .unwrap()
}

/// max |a − b| (same shape).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (
        a.to_dtype(DType::F32).unwrap(),
        b.to_dtype(DType::F32).unwrap(),
    );
    max_abs(&(a - b).unwrap())
}

/// max |got − want| / max |want|.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    let scale = max_abs(want);
    assert!(scale > 0.0, "the reference is all zeros");
    max_abs_diff(got, want) / scale
}
