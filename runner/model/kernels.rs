//! Pointwise activations on the CPU as branch-free loops that vectorise: EnCodec's ELU and the
//! decoder's exact-erf GELU. candle's CPU kernels for both call a scalar `exp`/`erf` per value
//! (about 7 ns each): a tenth of EnCodec's time at 32 kHz and of teacher-forced extraction.
//! Other devices and dtypes use candle's kernels.
//!
//! Linear layers on many rows (teacher-forced extraction, EnCodec's projections) run on the
//! probes' runtime-dispatched GEMM ([`crate::probe::gemm`]): candle's CPU matmul is the `gemm`
//! crate built for AVX2 only, so on AVX-512 CPUs it runs at half the vector width torch's oneDNN
//! uses (docs/design.md §4, CPU kernels).

use candle_core::{DType, Device, Storage, Tensor};

pub(crate) fn cpu_f32(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// `f` applied to the contiguous f32 data of `x`, read and written in one pass. The loop is
/// compiled three times (AVX-512, AVX2+FMA, baseline) and the one [`crate::probe::gemm::isa`]
/// chose runs: the baseline build is 4 lanes wide, a third of the AVX-512 build's speed on
/// EnCodec's ELUs, which touch every sample of every layer.
fn map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Copy) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let out = with_data(x, |src| {
        let mut out = Vec::<f32>::with_capacity(src.len());
        let dst = &mut out.spare_capacity_mut()[..src.len()];
        const CHUNK: usize = 1 << 16;
        // Split over the pool where it pays (a 4 s clip's EnCodec activations are millions of
        // values a layer); a decoding step's few thousand stay on this thread.
        if src.len() > CHUNK {
            dst.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK))
                .for_each(|(d, s)| apply(s, d, f));
        } else {
            apply(src, dst, f);
        }
        // SAFETY: `apply` wrote each of the first `src.len()` values.
        unsafe { out.set_len(src.len()) };
        out
    })?;
    Tensor::from_vec(out, x.shape(), x.device())
}

/// `d[i] = f(s[i])` in the widest vector build the CPU runs (see [`map`]).
fn apply(s: &[f32], d: &mut [std::mem::MaybeUninit<f32>], f: impl Fn(f32) -> f32 + Copy) {
    struct Apply<'a, F>(&'a [f32], &'a mut [std::mem::MaybeUninit<f32>], F);
    impl<F: Fn(f32) -> f32> crate::probe::gemm::Vectorised for Apply<'_, F> {
        type Out = ();
        #[inline(always)]
        fn run(self) {
            for (d, &s) in self.1.iter_mut().zip(self.0) {
                d.write((self.2)(s));
            }
        }
    }
    crate::probe::gemm::vectorised(Apply(s, d, f))
}

/// `ELU(x) = x` for `x > 0`, else `expm1(x)` (alpha 1). See [`expm1`].
pub fn elu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !cpu_f32(x) {
        return x.elu(1.0);
    }
    map(x, |a| {
        let e = expm1(a.min(0.0));
        if a > 0.0 { a } else { e }
    })
}

/// ln 2 split so that `n * LN2_HI` is exact for the exponents f32 has (Cody-Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `x = n ln 2 + r` with `|r| <= ln 2 / 2` (Cody-Waite split of ln 2, round to nearest by the
/// 1.5 * 2^23 trick: `f32::round` is a libm call on baseline x86-64 and would keep a loop scalar),
/// and `expm1(r)` by its degree-8 Taylor polynomial (remainder < 2e-10 on that interval).
#[inline(always)]
fn reduce_exp(x: f32) -> (f32, f32) {
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // r + r^2/2! + ... + r^8/8!, Horner.
    let p = 1.0 / 40320.0;
    let p = p * r + 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    (n, r + r * r * p)
}

/// `2^n` for an integral `n` in [-127, 127], from the exponent bits (0 at -127).
#[inline(always)]
fn pow2(n: f32) -> f32 {
    f32::from_bits((((n as i32) + 127).clamp(0, 254) as u32) << 23)
}

/// `e^x - 1` for `x <= 0` to within 2 ulp of the correctly rounded value (checked against f64 in the
/// tests below), written without branches or calls so that a loop over it vectorises
/// ([`reduce_exp`]), then `expm1(x) = 2^n expm1(r) + (2^n - 1)`, exact in the last step for n = 0
/// (small x keep their relative precision). Below -88 the result is -1.
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    let (n, em1) = reduce_exp(x.max(-88.0));
    let scale = pow2(n);
    scale * em1 + (scale - 1.0)
}

/// `e^x` to within 2 ulp (checked against f64 below), branch-free as [`expm1`] so that loops over
/// it vectorise (the RFM kernel matrix: millions of values an iteration, where a libm call costs
/// about 7 ns each). Arguments are clamped to [-88, 88], so it never overflows; results below
/// the smallest normal (x < -87.3) are inexact or 0 (libm's reach 0 only below -103.9).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (n, em1) = reduce_exp(x.clamp(-88.0, 88.0));
    pow2(n) * (1.0 + em1)
}

/// `ln(x)` for positive normal `x` to within 2 ulp of the exact value (checked against f64
/// below; subnormal arguments give a large negative value, not the exact one), branch-free:
/// `x = 2^e m` with `m` in [√½, √2), `ln m = 2 atanh(s)`, `s = (m−1)/(m+1)`, by its odd series to
/// `s^11` (|s| < 0.172: remainder < 3e-11).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = (((bits >> 23) & 0xff) as i32 - 127 + big as i32) as f32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 / 11.0;
    let p = p * s2 + 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let lnm = 2.0 * s + 2.0 * s * s2 * p;
    e * LN2_HI + (e * LN2_LO + lnm)
}

/// `erf(x)` as the rational approximation Eigen and XLA use for f32 (`x P(x^2) / Q(x^2)` on
/// [-4, 4], +-1 beyond): within 5e-7 of the exact value (checked against f64 in the tests below;
/// torch's scalar erf is within 3e-8), so GELU's relative error stays below 3e-7 -- far inside the
/// 1e-4 the parity tests allow, and greedy codes stay equal to transformers'.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_6e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// GELU with the exact erf, `x/2 (1 + erf(x / sqrt 2))`, as transformers' `gelu` (see [`erf`]).
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !cpu_f32(x) {
        return x.gelu_erf();
    }
    map(x, |a| {
        0.5 * a * (1.0 + erf(a * std::f32::consts::FRAC_1_SQRT_2))
    })
}

/// `x · wᵀ` for a 2-D `x` (rows × in) and a row-major `w` (out × in) on the CPU in f32 through
/// the runtime-dispatched kernels; `None` where candle's matmul should run instead (other
/// devices or dtypes).
pub fn matmul_nt(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(w) {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        candle_core::bail!("matmul_nt: x has {k} columns, w has {k2}");
    }
    let mut out = vec![0f32; m * n];
    with_data(x, |xs| {
        with_data(w, |ws| {
            crate::probe::gemm::linear(xs, m, k, ws, n, &mut out)
        })
    })??;
    Ok(Some(Tensor::from_vec(out, (m, n), x.device())?))
}

/// Runs `f` on the contiguous f32 data of the CPU tensor `w` (copied only when not contiguous).
pub(crate) fn with_data<R>(w: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor")
    };
    let o = layout.start_offset();
    Ok(f(&cpu.as_slice::<f32>()?[o..o + w.elem_count()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expm1_is_within_two_ulp_of_the_exact_value_on_the_negative_axis() {
        let mut x = -100.0f32;
        let mut worst = 0.0f64;
        while x <= 0.0 {
            let got = expm1(x) as f64;
            let want = (x as f64).exp_m1();
            let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            worst = worst.max((got - want).abs() / ulp);
            // Dense near 0 (where relative precision is the point), coarse far out.
            x += if x > -1.0 { 1e-4 } else { 7e-3 };
        }
        for x in [0.0f32, -0.0, -1e-30, -1e-7, -f32::MIN_POSITIVE] {
            let want = (x as f64).exp_m1();
            assert!(
                ((expm1(x) as f64) - want).abs() <= want.abs() * 2.5e-7,
                "{x}"
            );
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    /// Worst error of `f` against `want` (f64) in f32 ulp of the exact value, over `xs`.
    fn worst_ulp(xs: impl Iterator<Item = f32>, f: fn(f32) -> f32, want: fn(f64) -> f64) -> f64 {
        xs.map(|x| {
            let w = want(x as f64);
            let u = (w.abs() as f32).max(f32::MIN_POSITIVE);
            let u = (f32::from_bits(u.to_bits() + 1) - u) as f64;
            (f(x) as f64 - w).abs() / u
        })
        .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        let xs = (0..=200_000).map(|i| -87.0 + 174.0 * i as f32 / 200_000.0);
        let worst = worst_ulp(xs, exp, f64::exp);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let near0 = (-1000..=1000).map(|i| i as f32 * 1e-6);
        assert!(worst_ulp(near0, exp, f64::exp) <= 1.0);
        assert_eq!(exp(0.0), 1.0);
        // Clamped, never subnormal, never infinite.
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
        assert!(exp(1e30).is_finite() && exp(1e30) > 1e38);
    }

    #[test]
    fn ln_is_within_two_ulp_on_positive_normal_values() {
        // Log-spaced over the whole normal range, plus a dense sweep around 1 (where ln is small
        // and relative precision is the point).
        let wide = (0..=200_000).map(|i| (2f64.powf(-126.0 + 253.0 * i as f64 / 200_000.0)) as f32);
        let worst = worst_ulp(wide, ln, f64::ln);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let near1 = (1..=100_000).map(|i| 0.5 + i as f32 / 100_000.0);
        let worst1 = worst_ulp(near1.filter(|&x| x != 1.0), ln, f64::ln);
        assert!(worst1 <= 2.0, "worst error near 1: {worst1} ulp");
        assert_eq!(ln(1.0), 0.0);
        assert!((ln(f32::MAX) as f64 - (f32::MAX as f64).ln()).abs() < 1e-5);
    }

    #[test]
    fn elu_matches_the_definition() {
        let xs = [-3.0f32, -0.5, -1e-6, 0.0, 1e-6, 2.0];
        let t = Tensor::new(&xs[..], &Device::Cpu).unwrap();
        let got = elu(&t).unwrap().to_vec1::<f32>().unwrap();
        for (x, g) in xs.iter().zip(got) {
            let want = if *x > 0.0 {
                *x as f64
            } else {
                (*x as f64).exp_m1()
            };
            assert!(
                (g as f64 - want).abs() <= 2e-7 * want.abs().max(1e-6),
                "{x}: {g}"
            );
        }
    }

    #[test]
    fn erf_and_gelu_are_within_f32_rounding_of_the_exact_values() {
        let mut worst_erf = 0.0f64;
        let mut worst_gelu = 0.0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let e = statrs::function::erf::erf(x as f64);
            worst_erf = worst_erf.max((erf(x) as f64 - e).abs());
            let g = 0.5 * x as f64 * (1.0 + statrs::function::erf::erf(x as f64 / 2f64.sqrt()));
            let got = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            worst_gelu = worst_gelu.max((got as f64 - g).abs() / (x.abs() as f64).max(1.0));
            x += 1e-3;
        }
        assert!(worst_erf < 5e-7, "erf off by {worst_erf}");
        assert!(
            worst_gelu < 3e-7,
            "gelu off by {worst_gelu} (relative to max(1, |x|))"
        );
        let t = Tensor::new(&[-3f32, -0.5, 0.0, 0.7, 5.0], &Device::Cpu).unwrap();
        let got = gelu_erf(&t).unwrap().to_vec1::<f32>().unwrap();
        let want = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs candle {want:?}");
        }
    }
}
