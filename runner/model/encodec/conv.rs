//! EnCodec's convolutions and reflect padding on the CPU: convolutions as one GEMM per kernel tap,
//! reading the input in place.
//!
//! candle's CPU `conv1d` first materialises the im2col matrix (`[B, L_out, C_in * K]`: 100 MB for
//! one 4 s clip at the first residual block, 1.6 GB for a batch of 16) and its `conv_transpose1d`
//! mixes up batch items when B > 1 (tests/codec_seeded.rs `codec_batch_matches_single_items`).
//! Here `y[o, t] = b[o] + sum_k W_k[o, :] . x[:, t * stride + k * dilation]` is K accumulating
//! GEMMs on the probes' runtime-dispatched kernels ([`crate::probe::gemm`], AVX-512 where the CPU
//! has it; they take arbitrary strides, so tap `k`'s input is a strided view of `x` and nothing is
//! copied), and the transposed convolution is the same with a strided output.
//! Sums run in a different order than torch's, so values match to float rounding (the parity
//! tests' tolerances), not bit for bit. Other devices and dtypes use candle's kernels.

use candle_core::{DType, Device, Tensor};

use super::EncodecError;
use crate::model::kernels::{cpu_f32, with_data};
use crate::probe::gemm::{Tri, View};

type Result<T> = std::result::Result<T, EncodecError>;

/// `dst += lhs · rhs` for an m×n strided `dst` (pointer, row stride, column stride), on the
/// probe kernels' instruction set chosen at run time (AVX-512 where it pays; see
/// [`crate::probe::gemm`]): the `gemm` crate has only AVX2 kernels, and EnCodec's convolutions
/// are most of encode and decode.
///
/// # Safety
/// Every element the views and `dst` address must be in bounds, and `dst` must not overlap them.
unsafe fn gemm_acc(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: View<f32>,
    rhs: View<f32>,
    threads: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        crate::probe::gemm::gemm_to(
            crate::probe::gemm::isa(),
            m,
            n,
            k,
            dst,
            Tri::Full,
            true,
            lhs,
            rhs,
            1.0,
            threads,
        )
    }
}

/// Time rows per block: a block goes through every tap while its slice of the output (1024 ×
/// C_out floats: 128 KiB at 32 channels) stays in cache. One GEMM per tap over the whole clip
/// streamed the output through memory K times instead (a 4 s clip's 64-channel layers hold
/// 33 MB), which made those layers memory-bound.
const BLOCK: usize = 1024;

/// `f(t0, rows, threads)` over blocks `[t0, t0 + rows)` covering `0..m`. With enough blocks they
/// run in parallel, each on one thread; otherwise one call covers everything on all threads.
/// With `phases = p > 1` (the transposed convolution's taps spill into the next blocks), blocks
/// run in p rounds of every p-th block.
fn over_blocks(m: usize, phases: usize, f: impl Fn(usize, usize, usize) + Sync) {
    use rayon::prelude::*;
    let blocks = m.div_ceil(BLOCK);
    if blocks < 4 * rayon::current_num_threads() {
        f(0, m, usize::MAX);
        return;
    }
    for phase in 0..phases.min(blocks) {
        (0..(blocks - phase).div_ceil(phases))
            .into_par_iter()
            .map(|j| phase + j * phases)
            .for_each(|bi| f(bi * BLOCK, BLOCK.min(m - bi * BLOCK), 1));
    }
}

/// A convolution kernel as the convolutions below read it. On the CPU in f32 it is kept tap-major,
/// `[K, A, B]` for a stored `[A, B, K]`, so that each tap's GEMM reads one contiguous matrix:
/// read in place, a tap strides by K through the whole kernel and touches every cache line of it
/// (32 MB for the decoder's first transposed convolution, 16 times per call). Elsewhere it stays
/// as stored and candle's kernels run.
pub enum Kernel {
    /// `[K, A, B]`, with the stored `(A, B, K)`.
    Taps(Tensor, (usize, usize, usize)),
    Stored(Tensor),
}

impl Kernel {
    pub fn new(w: Tensor) -> Result<Self> {
        if !cpu_f32(&w) {
            return Ok(Kernel::Stored(w));
        }
        let dims = w.dims3()?;
        Ok(Kernel::Taps(w.permute((2, 0, 1))?.contiguous()?, dims))
    }

    pub fn dims(&self) -> Result<(usize, usize, usize)> {
        Ok(match self {
            Kernel::Taps(_, d) => *d,
            Kernel::Stored(w) => w.dims3()?,
        })
    }

    /// The tap-major data when `x` takes the fast path; otherwise the stored kernel.
    fn split<'a>(&'a self, x: &Tensor) -> Result<std::result::Result<&'a Tensor, &'a Tensor>> {
        match self {
            Kernel::Taps(t, _) if cpu_f32(x) => Ok(Ok(t)),
            Kernel::Taps(..) => Err(EncodecError::Input(format!(
                "a CPU f32 convolution given a {:?} input on {:?}",
                x.dtype(),
                x.device()
            ))),
            Kernel::Stored(w) => Ok(Err(w)),
        }
    }
}

/// `x` [B, C_in, L] (already padded), `w` [C_out, C_in, K], `bias` [C_out] -> [B, C_out, L_out].
pub fn conv1d(
    x: &Tensor,
    w: &Kernel,
    bias: &Tensor,
    stride: usize,
    dilation: usize,
) -> Result<Tensor> {
    let taps = match w.split(x)? {
        Ok(taps) => taps,
        Err(w) => {
            let y = x.conv1d(w, 0, stride, dilation, 1)?;
            return Ok(y.broadcast_add(&bias.reshape((1, (), 1))?)?);
        }
    };
    let (b, cin, len) = x.dims3()?;
    let (cout, cin_w, k) = w.dims()?;
    let span = (k - 1) * dilation + 1;
    if cin != cin_w || len < span {
        return Err(EncodecError::Input(format!(
            "conv1d: input {:?} against kernel {:?}",
            x.dims(),
            w.dims()
        )));
    }
    let lout = (len - span) / stride + 1;
    let bias = bias.to_vec1::<f32>()?;
    let mut out = vec![0f32; b * cout * lout];
    for (o, row) in out.chunks_mut(lout).enumerate() {
        row.fill(bias[o % cout]);
    }
    with_data(x, |xs| {
        with_data(taps, |ws| {
            for (item, dst) in out.chunks_mut(cout * lout).enumerate() {
                let src = &xs[item * cin * len..(item + 1) * cin * len];
                // Addresses, so that the blocks' closure is Sync; blocks write disjoint rows.
                let (d, x, w) = (
                    dst.as_mut_ptr() as usize,
                    src.as_ptr() as usize,
                    ws.as_ptr() as usize,
                );
                over_blocks(lout, 1, |t0, rows, threads| {
                    for tap in 0..k {
                        // Computed transposed, dstᵀ[t, o] += Σ_i x[i, t·stride + tap·dilation] ·
                        // w[o, i, tap], so that the kernels' vector lanes run along time (the
                        // long, contiguous side of `dst`).
                        // SAFETY: every index the strides reach is inside `dst` ([cout, lout]
                        // row-major, rows t0..t0+rows <= lout of its transpose), `ws` ([k,
                        // cout, cin]: tap*cout*cin + o*cin + i) and `src` ([cin, len]:
                        // row i*len, column t*stride, offset tap*dilation, with (lout-1)*stride
                        // + tap*dilation < len); concurrent blocks write disjoint elements.
                        unsafe {
                            gemm_acc(
                                (rows, cout, cin),
                                ((d as *mut f32).add(t0), 1, lout as isize),
                                View {
                                    ptr: (x as *const f32).add(t0 * stride + tap * dilation),
                                    rs: stride as isize,
                                    cs: len as isize,
                                },
                                View {
                                    ptr: (w as *const f32).add(tap * cout * cin),
                                    rs: 1,
                                    cs: cin as isize,
                                },
                                threads,
                            );
                        }
                    }
                });
            }
        })
    })??;
    Ok(Tensor::from_vec(out, (b, cout, lout), x.device())?)
}

/// `x` [B, C_in, L], `w` [C_in, C_out, K], `bias` [C_out] -> [B, C_out, (L - 1) * stride + K]
/// (no padding trimmed: the caller trims as EnCodec does).
pub fn conv_transpose1d(x: &Tensor, w: &Kernel, bias: &Tensor, stride: usize) -> Result<Tensor> {
    let taps = match w.split(x)? {
        Ok(taps) => taps,
        Err(w) => {
            // candle's CPU kernel mixes up batch items when B > 1: one item at a time.
            let items = (0..x.dim(0)?)
                .map(|i| x.narrow(0, i, 1)?.conv_transpose1d(w, 0, 0, stride, 1, 1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let y = Tensor::cat(&items, 0)?;
            return Ok(y.broadcast_add(&bias.reshape((1, (), 1))?)?);
        }
    };
    let (b, cin, len) = x.dims3()?;
    let (cin_w, cout, k) = w.dims()?;
    if cin != cin_w || len == 0 {
        return Err(EncodecError::Input(format!(
            "conv_transpose1d: input {:?} against kernel {:?}",
            x.dims(),
            w.dims()
        )));
    }
    let lout = (len - 1) * stride + k;
    let bias = bias.to_vec1::<f32>()?;
    let mut out = vec![0f32; b * cout * lout];
    for (o, row) in out.chunks_mut(lout).enumerate() {
        row.fill(bias[o % cout]);
    }
    with_data(x, |xs| {
        with_data(taps, |ws| {
            for (item, dst) in out.chunks_mut(cout * lout).enumerate() {
                let src = &xs[item * cin * len..(item + 1) * cin * len];
                let (d, x, w) = (
                    dst.as_mut_ptr() as usize,
                    src.as_ptr() as usize,
                    ws.as_ptr() as usize,
                );
                // Blocks of input time: block b writes outputs [b·B·s, (b·B + B - 1)·s + k), so
                // blocks `phases` apart never overlap.
                let phases = ((BLOCK - 1) * stride + k).div_ceil(BLOCK * stride);
                over_blocks(len, phases, |t0, rows, threads| {
                    for tap in 0..k {
                        // y[o, t*stride + tap] += sum_i w[i, o, tap] x[i, t], computed
                        // transposed as for conv1d.
                        // SAFETY: `dst` is [cout, lout] with column t*stride + tap <=
                        // (len-1)*stride + k-1 < lout; `ws` is [k, cin, cout] read as (i, o) at
                        // tap*cin*cout + i*cout + o; `src` is [cin, len] read as (t, i) at i*len + t,
                        // t in t0..t0+rows <= len; concurrent blocks write disjoint elements.
                        unsafe {
                            gemm_acc(
                                (rows, cout, cin),
                                (
                                    (d as *mut f32).add(t0 * stride + tap),
                                    stride as isize,
                                    lout as isize,
                                ),
                                View {
                                    ptr: (x as *const f32).add(t0),
                                    rs: 1,
                                    cs: len as isize,
                                },
                                View {
                                    ptr: (w as *const f32).add(tap * cin * cout),
                                    rs: cout as isize,
                                    cs: 1,
                                },
                                threads,
                            );
                        }
                    }
                });
            }
        })
    })??;
    Ok(Tensor::from_vec(out, (b, cout, lout), x.device())?)
}

/// torch's reflect padding of the last dimension (`pad < len`), by slice copies.
pub fn reflect_pad(x: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let len = *dims
        .last()
        .ok_or_else(|| EncodecError::Input("reflect_pad of a scalar".into()))?;
    if left >= len.max(1) || right >= len.max(1) {
        return Err(EncodecError::Input(format!(
            "reflect padding ({left}, {right}) needs a longer input than {len}"
        )));
    }
    if !(matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32) {
        let idx: Vec<u32> = (0..left)
            .map(|i| (left - i) as u32)
            .chain((0..len).map(|i| i as u32))
            .chain((0..right).map(|i| (len - 2 - i) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, left + len + right, x.device())?;
        return Ok(x.index_select(&idx, candle_core::D::Minus1)?);
    }
    let out_len = left + len + right;
    let rows = x.elem_count() / len.max(1);
    let mut out = vec![0f32; rows * out_len];
    with_data(x, |s| {
        for (src, dst) in s.chunks(len).zip(out.chunks_mut(out_len)) {
            for i in 0..left {
                dst[i] = src[left - i];
            }
            dst[left..left + len].copy_from_slice(src);
            for i in 0..right {
                dst[left + len + i] = src[len - 2 - i];
            }
        }
    })?;
    let mut shape = dims;
    *shape.last_mut().expect("checked above") = out_len;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both convolutions on `x` [B, C_in, L] against candle's kernels: conv1d with a [C_out, C_in,
    /// k] kernel at each (stride, dilation), the transposed one with [C_in, C_out, k_tr] at each
    /// stride (candle's own kernel one item at a time: its batched CPU kernel is wrong).
    fn agree_with_candle(
        (bs, cin, cout, len): (usize, usize, usize, usize),
        (k, convs): (usize, &[(usize, usize)]),
        (k_tr, strides): (usize, &[usize]),
        tol: f32,
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (bs, cin, len), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
        let bias = b.reshape((1, cout, 1)).unwrap();
        let close = |got: &Tensor, want: &Tensor, what: &str| {
            let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < tol, "{what}");
        };
        let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &dev).unwrap();
        for &(stride, dil) in convs {
            let got = conv1d(&x, &Kernel::new(w.clone()).unwrap(), &b, stride, dil).unwrap();
            let want = x.conv1d(&w, 0, stride, dil, 1).unwrap();
            let want = want.broadcast_add(&bias).unwrap();
            close(&got, &want, &format!("conv1d stride {stride} dil {dil}"));
        }
        let wt = Tensor::randn(0f32, 0.3, (cin, cout, k_tr), &dev).unwrap();
        for &stride in strides {
            let got = conv_transpose1d(&x, &Kernel::new(wt.clone()).unwrap(), &b, stride).unwrap();
            for i in 0..bs {
                let item = x.narrow(0, i, 1).unwrap();
                let want = item.conv_transpose1d(&wt, 0, 0, stride, 1, 1).unwrap();
                let want = want.broadcast_add(&bias).unwrap();
                let got = got.narrow(0, i, 1).unwrap();
                close(
                    &got,
                    &want,
                    &format!("conv_transpose1d stride {stride} item {i}"),
                );
            }
        }
    }

    #[test]
    fn convolutions_match_candle_on_a_batch() {
        agree_with_candle(
            (3, 5, 7, 40),
            (4, &[(1, 1), (2, 1), (1, 3), (4, 1)]),
            (6, &[1, 3]),
            1e-5,
        );
    }

    /// Long inputs take the blocked, block-parallel path; it must agree with candle too.
    #[test]
    fn blocked_convolutions_match_candle() {
        agree_with_candle(
            (2, 3, 5, 9000),
            (7, &[(1, 1), (1, 3), (2, 1)]),
            (8, &[1, 4]),
            1e-4,
        );
    }

    #[test]
    fn reflect_pad_matches_torch() {
        let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu).unwrap();
        let y = reflect_pad(&x, 2, 3).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![3., 2., 1., 2., 3., 4., 3., 2., 1.]]);
        assert!(reflect_pad(&x, 4, 0).is_err());
    }
}
