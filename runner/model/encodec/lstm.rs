//! `EncodecLSTM`: a stacked LSTM over time with a skip connection around it.
//!
//! The input projections of all steps are one GEMM; only the recurrence is sequential. On the CPU
//! in f32 the recurrence runs on plain slices ([`recur`]): each step reads the whole `W_hh`
//! (4C × C, 16 MB at C = 1024) once, so a step costs what streaming it from cache costs, and the
//! rest is kept out of the way — one pass over the four gate rows of a hidden unit, its
//! nonlinearities right after, hidden units split over the pool. Through candle's ops the same
//! step was a matvec plus a dozen small tensors and took twice transformers' time; other devices
//! and dtypes still take that path.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::EncodecError;
use super::config::EncodecConfig;
use crate::model::kernels::{cpu_f32, with_data};

type Result<T> = std::result::Result<T, EncodecError>;

pub struct Lstm {
    /// per layer: (W_ih [4C, C], W_hh [4C, C], b_ih + b_hh [4C])
    layers: Vec<(Tensor, Tensor, Tensor)>,
    dim: usize,
}

impl Lstm {
    pub fn new(cfg: &EncodecConfig, vb: VarBuilder, dim: usize) -> Result<Self> {
        let vb = vb.pp("lstm");
        let layers = (0..cfg.num_lstm_layers)
            .map(|l| {
                let w_ih = vb.get((4 * dim, dim), &format!("weight_ih_l{l}"))?;
                let w_hh = vb.get((4 * dim, dim), &format!("weight_hh_l{l}"))?;
                // For [`recur`], unit-major: row 4j + g is gate g of hidden unit j, so that a
                // step reads W_hh as one stream (four streams 4 MB apart were 15 % slower).
                let w_hh = if cpu_f32(&w_hh) {
                    w_hh.reshape((4, dim, dim))?
                        .transpose(0, 1)?
                        .contiguous()?
                        .reshape((4 * dim, dim))?
                } else {
                    w_hh
                };
                let b = (vb.get(4 * dim, &format!("bias_ih_l{l}"))?
                    + vb.get(4 * dim, &format!("bias_hh_l{l}"))?)?;
                Ok((w_ih, w_hh, b))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, dim })
    }

    /// x: [B, C, T] -> [B, C, T]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let skip = x.transpose(1, 2)?.contiguous()?; // [B, T, C]
        let mut seq = skip.clone();
        for (w_ih, w_hh, bias) in &self.layers {
            // (on the CPU through the runtime-dispatched kernels: AVX-512 where candle's matmul
            // has only AVX2)
            let rows = seq.reshape((b * t, c))?;
            let xw = match crate::model::kernels::matmul_nt(&rows, w_ih)? {
                Some(p) => p,
                None => rows.matmul(&w_ih.t()?)?,
            }
            .broadcast_add(bias)?
            .reshape((b, t, 4 * self.dim))?;
            // the path `new` stored W_hh for (unit-major on the CPU in f32)
            seq = if cpu_f32(w_hh) {
                let per = t * 4 * self.dim;
                let hs = with_data(&xw, |xw| {
                    with_data(w_hh, |w| {
                        (0..b)
                            .flat_map(|i| recur(&xw[i * per..(i + 1) * per], w, self.dim, t))
                            .collect::<Vec<f32>>()
                    })
                })??;
                Tensor::from_vec(hs, (b, t, self.dim), x.device())?
            } else {
                self.recur_tensors(&xw, w_hh, x)?
            };
        }
        Ok((seq + skip)?.transpose(1, 2)?.contiguous()?)
    }

    /// The recurrence through candle's ops (devices other than the CPU, dtypes other than f32).
    fn recur_tensors(&self, xw: &Tensor, w_hh: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xw.dims3()?;
        let h_dim = self.dim;
        let mut h = Tensor::zeros((b, h_dim), x.dtype(), x.device())?;
        let mut cell = h.clone();
        let mut outs = Vec::with_capacity(t);
        for step in 0..t {
            let gates = (xw.narrow(1, step, 1)?.squeeze(1)? + w_hh.matmul(&h.t()?)?.t()?)?;
            // torch's gate order: input, forget, cell, output
            let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h_dim)?)?;
            let f = candle_nn::ops::sigmoid(&gates.narrow(1, h_dim, h_dim)?)?;
            let g = gates.narrow(1, 2 * h_dim, h_dim)?.tanh()?;
            let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h_dim, h_dim)?)?;
            cell = ((f * &cell)? + (i * g)?)?;
            h = (o * cell.tanh()?)?;
            outs.push(h.clone());
        }
        Ok(Tensor::stack(&outs, 1)?)
    }
}

/// One LSTM layer's recurrence for one sequence: `xw` [T, 4C] holds the input projections plus
/// both biases (torch's gate order: input, forget, cell, output), `w` [4C, C] is `W_hh` with its
/// rows unit-major (row 4j + g: gate g of hidden unit j).
/// Returns the hidden state of every step, [T, C]; the state starts at zero as in torch.
pub fn recur(xw: &[f32], w: &[f32], c: usize, t: usize) -> Vec<f32> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    assert_eq!(xw.len(), t * 4 * c, "recur: xw is not [T, 4C]");
    assert_eq!(w.len(), 4 * c * c, "recur: W_hh is not [4C, C]");
    let mut out = vec![0f32; t * c];
    let mut cell = vec![0f32; c];
    let zeros = vec![0f32; c];
    // Contiguous runs of hidden units per thread; at least 64 units each, so that small models
    // (and the tests' toy sizes) do not pay for threads for nothing.
    let threads = rayon::current_num_threads().clamp(1, c.div_ceil(64));
    let per = c.div_ceil(threads);
    // The threads stay for the whole sequence and meet at a barrier after every step: a step is
    // ~0.1 ms at C = 1024, and forking onto the pool each step (a wake-up, the caller parked
    // until both halves return) cost a third of that. `arrived` counts finished (thread, step)
    // pairs; step s's hidden state is complete once it reaches (s + 1) · threads.
    let arrived = AtomicUsize::new(0);
    let dot4 = pick_dot4();
    let rows = SharedRows(out.as_mut_ptr());
    let run = |k: usize, cell: &mut [f32]| {
        let j0 = k * per;
        for s in 0..t {
            if s > 0 {
                let mut spins = 0u32;
                while arrived.load(Ordering::Acquire) < s * threads {
                    spins += 1;
                    if spins < 1 << 14 {
                        std::hint::spin_loop();
                    } else {
                        // another thread is descheduled (an oversubscribed machine)
                        std::thread::yield_now();
                    }
                }
            }
            // SAFETY: row s - 1 is complete (the barrier above) and nobody writes it any more;
            // this thread alone writes units j0.. of row s.
            let (h_in, h_out) = unsafe {
                let h_in: &[f32] = if s == 0 {
                    &zeros
                } else {
                    std::slice::from_raw_parts(rows.at((s - 1) * c), c)
                };
                (
                    h_in,
                    std::slice::from_raw_parts_mut(rows.at(s * c + j0), cell.len()),
                )
            };
            units(
                &xw[s * 4 * c..(s + 1) * 4 * c],
                w,
                c,
                h_in,
                j0,
                h_out,
                cell,
                dot4,
            );
            arrived.fetch_add(1, Ordering::Release);
        }
    };
    std::thread::scope(|scope| {
        let mut chunks = cell.chunks_mut(per).enumerate();
        let (_, mine) = chunks.next().expect("c > 0");
        for (k, theirs) in chunks {
            let run = &run;
            scope.spawn(move || run(k, theirs));
        }
        run(0, mine);
    });
    out
}

/// The hidden-state rows, written by several threads at disjoint places (see [`recur`]).
#[derive(Clone, Copy)]
struct SharedRows(*mut f32);
// SAFETY: `recur`'s barrier orders every write of a row before any read of it.
unsafe impl Send for SharedRows {}
unsafe impl Sync for SharedRows {}
impl SharedRows {
    /// # Safety
    /// `i` must lie inside the rows.
    unsafe fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// Four dot products against one vector (see [`simd`]), in the widest vector set the CPU runs.
type Dot4 = fn([&[f32]; 4], &[f32]) -> [f32; 4];

fn pick_dot4() -> Dot4 {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::probe::gemm::{Isa, isa};
        match isa() {
            // SAFETY (both): `isa()` never names a set the CPU lacks; `units` passes rows of h's
            // length.
            Isa::Avx512 => return |r, h| unsafe { simd::dot4_avx512(r, h) },
            Isa::Avx2 => return |r, h| unsafe { simd::dot4_avx2(r, h) },
            Isa::Portable => {}
        }
    }
    |rows, h| rows.map(|r| r.iter().zip(h).map(|(a, b)| a * b).sum())
}

/// Hidden units `j0 .. j0 + h_out.len()` of one step.
#[allow(clippy::too_many_arguments)]
fn units(
    x: &[f32],
    w: &[f32],
    c: usize,
    h_in: &[f32],
    j0: usize,
    h_out: &mut [f32],
    cell: &mut [f32],
    dot4: Dot4,
) {
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    for (jj, (ho, ce)) in h_out.iter_mut().zip(cell.iter_mut()).enumerate() {
        let j = j0 + jj;
        let row = |g: usize| &w[(4 * j + g) * c..(4 * j + g + 1) * c];
        let d = dot4([row(0), row(1), row(2), row(3)], h_in);
        let i = sigmoid(x[j] + d[0]);
        let f = sigmoid(x[c + j] + d[1]);
        let g = (x[2 * c + j] + d[2]).tanh();
        let o = sigmoid(x[3 * c + j] + d[3]);
        // torch's order: c' = f c + i g, h' = o tanh(c')
        *ce = f * *ce + i * g;
        *ho = o * ce.tanh();
    }
}

/// Four dot products against one vector, sharing its loads: two accumulators per row, so eight
/// independent FMA chains keep both FMA units busy while the rows stream in.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    fn tail(rows: &[&[f32]; 4], h: &[f32], from: usize) -> [f32; 4] {
        rows.map(|r| (from..h.len()).map(|k| r[k] * h[k]).sum())
    }

    /// The loop both builds share: `$lanes` floats a register, two registers a row. Gives the
    /// eight accumulators and the rows' scalar tails past the last whole block.
    macro_rules! dot4_blocks {
        ($rows:ident, $h:ident, $lanes:expr, $zero:ident, $load:ident, $fma:ident) => {{
            let n = $h.len() / (2 * $lanes) * (2 * $lanes);
            assert!($rows.iter().all(|r| r.len() >= $h.len()));
            let mut acc = [$zero(); 8];
            let mut k = 0;
            while k < n {
                // SAFETY: k + 2 lanes <= n <= every length.
                unsafe {
                    let h0 = $load($h.as_ptr().add(k));
                    let h1 = $load($h.as_ptr().add(k + $lanes));
                    for (r, row) in $rows.iter().enumerate() {
                        let p = row.as_ptr().add(k);
                        acc[2 * r] = $fma($load(p), h0, acc[2 * r]);
                        acc[2 * r + 1] = $fma($load(p.add($lanes)), h1, acc[2 * r + 1]);
                    }
                }
                k += 2 * $lanes;
            }
            (acc, tail(&$rows, $h, n))
        }};
    }

    /// # Safety
    /// The CPU must have AVX-512F; every row must be at least as long as `h`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4_avx512(rows: [&[f32]; 4], h: &[f32]) -> [f32; 4] {
        let (acc, t) = dot4_blocks!(
            rows,
            h,
            16,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_fmadd_ps
        );
        std::array::from_fn(|r| {
            _mm512_reduce_add_ps(_mm512_add_ps(acc[2 * r], acc[2 * r + 1])) + t[r]
        })
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; every row must be at least as long as `h`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_avx2(rows: [&[f32]; 4], h: &[f32]) -> [f32; 4] {
        let (acc, t) = dot4_blocks!(
            rows,
            h,
            8,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps
        );
        std::array::from_fn(|r| {
            let v = _mm256_add_ps(acc[2 * r], acc[2 * r + 1]);
            let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            _mm_cvtss_f32(q) + t[r]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recurrence in f64, written from torch's `nn.LSTM` equations.
    fn reference(xw: &[f32], w: &[f32], c: usize, t: usize) -> Vec<f64> {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut h, mut cell) = (vec![0f64; c], vec![0f64; c]);
        let mut out = Vec::new();
        for s in 0..t {
            let gate = |g: usize, j: usize| {
                let r = g * c + j;
                xw[s * 4 * c + r] as f64 + (0..c).map(|k| w[r * c + k] as f64 * h[k]).sum::<f64>()
            };
            let next: Vec<(f64, f64)> = (0..c)
                .map(|j| {
                    let cj = sig(gate(1, j)) * cell[j] + sig(gate(0, j)) * gate(2, j).tanh();
                    (sig(gate(3, j)) * cj.tanh(), cj)
                })
                .collect();
            for (j, (hj, cj)) in next.into_iter().enumerate() {
                h[j] = hj;
                cell[j] = cj;
            }
            out.extend_from_slice(&h);
        }
        out
    }

    fn check(c: usize, t: usize) {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |scale: f32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        };
        let xw: Vec<f32> = (0..t * 4 * c).map(|_| rnd(2.0)).collect();
        let w: Vec<f32> = (0..4 * c * c)
            .map(|_| rnd(4.0 / (c as f32).sqrt()))
            .collect();
        // torch's layout [gate][unit] to the unit-major one `recur` reads
        let unit_major: Vec<f32> = (0..c)
            .flat_map(|j| (0..4).map(move |g| g * c + j))
            .flat_map(|r| w[r * c..(r + 1) * c].to_vec())
            .collect();
        let got = recur(&xw, &unit_major, c, t);
        let want = reference(&xw, &w, c, t);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        // f32 sums of c products, then a few steps of state: a few ulp of values in [-1, 1]
        assert!(worst < 2e-5, "c = {c}, t = {t}: worst |diff| {worst}");
    }

    /// Both vector builds this CPU can run (whichever `isa()` picks, the other is tested here
    /// too), against f64 sums, on lengths with and without a tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_dot_products_match_exact_sums() {
        let v = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * s).sin()).collect() };
        for n in [0usize, 5, 16, 33, 1024, 1031] {
            let h = v(n, 0.37);
            let rows: Vec<Vec<f32>> = (1..=4).map(|r| v(n, 0.11 * r as f32)).collect();
            let rows = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let want = rows.map(|r| {
                r.iter()
                    .zip(&h)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            });
            let mut got = Vec::new();
            if std::arch::is_x86_feature_detected!("avx512f") {
                got.push(("avx512", unsafe { simd::dot4_avx512(rows, &h) }));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                got.push(("avx2", unsafe { simd::dot4_avx2(rows, &h) }));
            }
            for (isa, g) in got {
                for (g, w) in g.iter().zip(want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * (n as f64).sqrt().max(1.0),
                        "{isa} n = {n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn recurrence_matches_the_lstm_equations() {
        // a tail shorter than one block, one thread's run of units, several threads' runs
        check(5, 7);
        check(37, 9);
        check(200, 6);
    }
}
