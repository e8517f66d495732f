//! Dense products for the CPU probe fits, with the instruction set chosen at run time.
//!
//! On x86-64 the products run on the AVX-512 or AVX2 kernels of `private-gemm-x86` (the GEMM
//! behind faer), which can also write only the lower triangle of a symmetric result (a Gram
//! matrix for half the flops). Elsewhere, or on x86-64 without AVX2/FMA, they run on the `gemm`
//! crate. Which kernel set runs is decided once per process:
//!
//! - `RFMX_ISA=avx512|avx2|portable` caps it (the cap never enables what the CPU lacks);
//! - otherwise, where the CPU has both AVX-512 and AVX2, a short timed comparison of the two on a
//!   Gram-shaped product picks the faster (on CPUs that split 512-bit operations in two, AVX2
//!   can win) and the verdict is cached per CPU model in `<cache>/rfmx/isa.json` (`$RFMX_CACHE_DIR`,
//!   else `$XDG_CACHE_HOME`, else `~/.cache`), so later processes skip the measurement.

use std::sync::OnceLock;

/// The two precisions the probe kernels run in.
pub trait Real:
    Copy
    + PartialOrd
    + Send
    + Sync
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::SubAssign
    + std::ops::AddAssign
    + std::fmt::LowerExp
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn sqrt(self) -> Self;
    fn is_finite(self) -> bool;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Eigenpairs of the symmetric r×r matrix given by its lower triangle (row-major), in
    /// descending order: (values, r×r row-major matrix whose column k is eigenvector k).
    fn eigh_lower_desc(s: &[Self], r: usize) -> Option<(Vec<f64>, Vec<Self>)>;
    /// `exp` as a branch-free polynomial that vectorises in f32 (within 2 ulp over the normal
    /// range, inexact or 0 below −87.3; see `model::kernels::exp`), the library's `exp` in f64.
    fn vexp(self) -> Self;
    /// `ln` of a positive value, branch-free in f32 (see `model::kernels::ln`), the library's
    /// in f64.
    fn vln(self) -> Self;
    fn max(self, o: Self) -> Self;
    /// Lower Cholesky factor, in place and single-threaded, of the n×n block at `a` with row
    /// stride `ld` (faer's blocked kernel); `Err(pivot)` if a pivot is not positive.
    ///
    /// # Safety
    /// The block must lie in memory this call may read and write exclusively.
    unsafe fn llt_block(a: *mut Self, n: usize, ld: usize) -> std::result::Result<(), usize>;
    /// `llt_block` on the current rayon pool's threads (for a whole matrix).
    ///
    /// # Safety
    /// As `llt_block`.
    unsafe fn llt_par(a: *mut Self, n: usize, ld: usize) -> std::result::Result<(), usize>;
    #[cfg(target_arch = "x86_64")]
    const PG: private_gemm_x86::DType;
}

/// # Safety
/// See [`Real::llt_block`].
unsafe fn faer_llt<T: faer::traits::ComplexField>(
    a: *mut T,
    n: usize,
    ld: usize,
    threads: usize,
) -> std::result::Result<(), usize> {
    use faer::linalg::cholesky::llt::factor;
    // SAFETY: the caller's contract; a row-major block is a matrix with (row, col) strides (ld, 1).
    let m = unsafe { faer::MatMut::from_raw_parts_mut(a, n, n, ld as isize, 1) };
    let par = if threads > 1 {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    };
    let mut mem = faer::dyn_stack::MemBuffer::new(factor::cholesky_in_place_scratch::<T>(
        n,
        par,
        Default::default(),
    ));
    factor::cholesky_in_place(
        m,
        Default::default(),
        par,
        faer::dyn_stack::MemStack::new(&mut mem),
        Default::default(),
    )
    .map(|_| ())
    .map_err(|e| match e {
        factor::LltError::NonPositivePivot { index } => index,
    })
}

fn faer_eigh<T: faer::traits::RealField + Copy>(s: &[T], r: usize) -> Option<(Vec<T>, Vec<T>)> {
    let m = faer::Mat::<T>::from_fn(
        r,
        r,
        |i, j| {
            if i >= j { s[i * r + j] } else { s[j * r + i] }
        },
    );
    let e = m.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let vals: Vec<T> = (0..r).map(|k| e.S().column_vector()[r - 1 - k]).collect();
    let u = e.U();
    let mut vecs = Vec::with_capacity(r * r);
    for i in 0..r {
        for k in 0..r {
            vecs.push(u[(i, r - 1 - k)]);
        }
    }
    Some((vals, vecs))
}

macro_rules! real {
    ($t:ty, $pg:ident, $vexp:path, $vln:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn vexp(self) -> Self {
                $vexp(self)
            }
            #[inline(always)]
            fn vln(self) -> Self {
                $vln(self)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            unsafe fn llt_block(
                a: *mut Self,
                n: usize,
                ld: usize,
            ) -> std::result::Result<(), usize> {
                // SAFETY: forwarded contract.
                unsafe { faer_llt(a, n, ld, 1) }
            }
            unsafe fn llt_par(a: *mut Self, n: usize, ld: usize) -> std::result::Result<(), usize> {
                // SAFETY: forwarded contract.
                unsafe { faer_llt(a, n, ld, rayon::current_num_threads()) }
            }
            fn eigh_lower_desc(s: &[Self], r: usize) -> Option<(Vec<f64>, Vec<Self>)> {
                // Solved on the matrix scaled to unit max entry: a Gram of gradients can sit near
                // the bottom of f32's range, its tail subnormal, where faer's f32 QR iteration
                // did not converge (3 to 5 of 20 trials of a d = 1024 search lost, each failure
                // spinning for seconds). Where f32 still fails, solved again in f64.
                let mx = s.iter().fold(0.0 as Self, |m, &a| m.max(a.abs()));
                let scale = if mx > 0.0 && mx.is_finite() { mx } else { 1.0 };
                let scaled: Vec<Self> = s.iter().map(|&a| a / scale).collect();
                let (v, u) = match faer_eigh(&scaled, r) {
                    Some((v, u)) => (v.into_iter().map(|a| a as f64).collect::<Vec<f64>>(), u),
                    None => {
                        let wide: Vec<f64> = scaled.iter().map(|&a| a as f64).collect();
                        let (v, u) = faer_eigh(&wide, r)?;
                        (v, u.into_iter().map(|a| a as Self).collect())
                    }
                };
                Some((v.into_iter().map(|a| a * scale as f64).collect(), u))
            }
            #[cfg(target_arch = "x86_64")]
            const PG: private_gemm_x86::DType = private_gemm_x86::DType::$pg;
        }
    };
}
real!(
    f32,
    F32,
    crate::model::kernels::exp,
    crate::model::kernels::ln
);
real!(f64, F64, f64::exp, f64::ln);

/// The kernel set the products run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The `gemm` crate (its own AVX2/FMA dispatch where present; the only choice off x86-64).
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "none" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx-512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The best kernel set this CPU supports.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// How the kernel set in use was chosen (for benchmark reports).
#[derive(Debug, Clone)]
pub struct Choice {
    pub isa: Isa,
    pub detected: Isa,
    pub reason: String,
}

static CHOICE: OnceLock<Choice> = OnceLock::new();

/// The kernel set in use (decided on first call; see the module doc).
pub fn isa() -> Isa {
    choice().isa
}

/// Work whose loops should run at the CPU's vector width: [`vectorised`] compiles `run` (which
/// must be `#[inline(always)]`, as must what it calls in its loops) inside one function per
/// instruction set. A closure would not do: it is compiled on its own, for the baseline.
pub trait Vectorised {
    type Out;
    fn run(self) -> Self::Out;
}

/// Runs `work` compiled for the widest vector set [`isa`] chose (AVX-512, AVX2+FMA or the
/// baseline), so that its branch-free pointwise loops run at that width: the baseline x86-64
/// build is 4 lanes wide.
pub fn vectorised<W: Vectorised>(work: W) -> W::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn wide<W: Vectorised>(work: W) -> W::Out {
            work.run()
        }
        #[target_feature(enable = "avx2,fma")]
        fn half<W: Vectorised>(work: W) -> W::Out {
            work.run()
        }
        match isa() {
            // SAFETY: `isa()` never names a set the CPU lacks.
            Isa::Avx512 => return unsafe { wide(work) },
            Isa::Avx2 => return unsafe { half(work) },
            Isa::Portable => {}
        }
    }
    work.run()
}

pub fn choice() -> &'static Choice {
    CHOICE.get_or_init(choose)
}

fn choose() -> Choice {
    let detected = detected();
    if let Some(v) = std::env::var_os("RFMX_ISA") {
        let v = v.to_string_lossy();
        return match Isa::parse(&v) {
            Some(cap) => Choice {
                isa: cap.min(detected),
                detected,
                reason: format!("RFMX_ISA={v}"),
            },
            None => Choice {
                isa: detected,
                detected,
                reason: format!("RFMX_ISA={v} not understood (avx512|avx2|portable): detected"),
            },
        };
    }
    if detected != Isa::Avx512 {
        return Choice {
            isa: detected,
            detected,
            reason: "detected".into(),
        };
    }
    let key = cpu_key();
    let file = cache_file();
    if let Some(isa) = file.as_deref().and_then(|f| cached(f, &key)) {
        return Choice {
            isa,
            detected,
            reason: "measured earlier on this CPU model (cached)".into(),
        };
    }
    let (isa, t512, t2) = measure();
    if let Some(f) = &file {
        store(f, &key, isa);
    }
    Choice {
        isa,
        detected,
        reason: format!(
            "measured: avx512 {:.2} ms, avx2 {:.2} ms",
            t512 * 1e3,
            t2 * 1e3
        ),
    }
}

fn cpu_key() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model} / {} threads", rayon::current_num_threads())
}

fn cache_file() -> Option<std::path::PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(std::path::PathBuf::from);
    let base = env("RFMX_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("rfmx")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("rfmx")))?;
    Some(base.join("isa.json"))
}

fn cached(file: &std::path::Path, key: &str) -> Option<Isa> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    Isa::parse(v.get(key)?.as_str()?)
}

/// Best effort: a failure to cache only means measuring again next time.
fn store(file: &std::path::Path, key: &str, isa: Isa) {
    let mut v: serde_json::Value = std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !v.is_object() {
        v = serde_json::json!({});
    }
    v[key] = serde_json::json!(isa.name());
    let Some(dir) = file.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("isa.json.{}.tmp", std::process::id()));
    if std::fs::write(&tmp, v.to_string()).is_ok() && std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Times a Gram-shaped f32 product (the dominant shape of an RFM fit) on both kernel sets,
/// alternating, and returns the faster with each one's median time.
fn measure() -> (Isa, f64, f64) {
    let (n, k) = (384, 512);
    let a: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1009) as f32) / 1009.0 - 0.5)
        .collect();
    let mut c = vec![0f32; n * n];
    let mut time = |isa: Isa| {
        let t = std::time::Instant::now();
        gram_with(isa, &a, n, k, &mut c, Tri::Full);
        t.elapsed().as_secs_f64()
    };
    time(Isa::Avx512);
    time(Isa::Avx2);
    let (mut t512, mut t2) = (vec![], vec![]);
    for _ in 0..5 {
        t512.push(time(Isa::Avx512));
        t2.push(time(Isa::Avx2));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a5, a2) = (med(t512), med(t2));
    // AVX-512 unless AVX2 is clearly faster: the difference must beat the timer's noise.
    let isa = if a2 < 0.95 * a5 {
        Isa::Avx2
    } else {
        Isa::Avx512
    };
    (isa, a5, a2)
}

/// Which part of a square result to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Full,
    /// The lower triangle with the diagonal; the strict upper triangle is left as it was.
    Lower,
}

/// A strided view: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct View<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> View<T> {
    /// Row-major matrix with `ld` elements per row.
    pub fn rows(data: &[T], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: ld as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `ld` elements per row.
    pub fn rows_t(data: &[T], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: 1,
            cs: ld as isize,
        }
    }
}

/// `dst = (accumulate ? dst : 0) + alpha · lhs · rhs` for an m×n `dst` (row stride `ld`),
/// m×k `lhs` and k×n `rhs`, on the kernel set `isa`, threaded over the current rayon pool.
///
/// # Safety
/// Every element the views and `dst` address must be in bounds, and `dst` must not overlap the
/// inputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_with<T: Real>(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    ld: usize,
    tri: Tri,
    accumulate: bool,
    lhs: View<T>,
    rhs: View<T>,
    alpha: T,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm_to(
            isa,
            m,
            n,
            k,
            (dst, ld as isize, 1),
            tri,
            accumulate,
            lhs,
            rhs,
            alpha,
            rayon::current_num_threads(),
        )
    }
}

/// [`gemm_with`] with a strided `dst` given as (pointer, row stride, column stride), on at most
/// `threads` threads of the current rayon pool (1: on the calling thread, for callers that
/// parallelise over independent blocks themselves).
///
/// # Safety
/// As [`gemm_with`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_to<T: Real>(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_rs, dst_cs): (*mut T, isize, isize),
    tri: Tri,
    accumulate: bool,
    lhs: View<T>,
    rhs: View<T>,
    alpha: T,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = threads.clamp(1, rayon::current_num_threads());
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        use private_gemm_x86 as pg;
        let instr = if isa == Isa::Avx512 {
            pg::InstrSet::Avx512
        } else {
            pg::InstrSet::Avx256
        };
        // Small products are not worth waking the pool for.
        let threads = if m * n * k < 64 * 64 * 64 { 1 } else { threads };
        // SAFETY: bounds and aliasing are the caller's contract; alpha outlives the call.
        unsafe {
            pg::gemm(
                T::PG,
                pg::IType::U64,
                instr,
                m,
                n,
                k,
                dst as *mut (),
                dst_rs,
                dst_cs,
                std::ptr::null(),
                std::ptr::null(),
                match tri {
                    Tri::Full => pg::DstKind::Full,
                    Tri::Lower => pg::DstKind::Lower,
                },
                if accumulate {
                    pg::Accum::Add
                } else {
                    pg::Accum::Replace
                },
                lhs.ptr as *const (),
                lhs.rs,
                lhs.cs,
                false,
                std::ptr::null(),
                0,
                rhs.ptr as *const (),
                rhs.rs,
                rhs.cs,
                false,
                &alpha as *const T as *const (),
                threads,
            );
        }
        return;
    }
    // The portable kernels always write the full block (for a Gram the upper triangle is
    // simply filled too).
    let _ = tri;
    // SAFETY: as above; gemm's (dst, lhs, rhs) take column stride first.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            alpha,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// `out (n×n) = a aᵀ` for the row-major n×k `a`, writing `tri` of `out`.
pub fn gram_with<T: Real>(isa: Isa, a: &[T], n: usize, k: usize, out: &mut [T], tri: Tri) {
    assert!(a.len() >= n * k && out.len() >= n * n);
    // SAFETY: sizes checked above; `out` is a separate buffer.
    unsafe {
        gemm_with(
            isa,
            n,
            n,
            k,
            out.as_mut_ptr(),
            n,
            tri,
            false,
            View::rows(a, k),
            View::rows_t(a, k),
            T::ONE,
        )
    }
}

/// `out (m×n) = a bᵀ` for row-major a (m×k) and b (n×k).
pub fn matmul_nt<T: Real>(a: &[T], m: usize, k: usize, b: &[T], n: usize, out: &mut [T]) {
    assert!(a.len() >= m * k && b.len() >= n * k && out.len() >= m * n);
    // SAFETY: sizes checked above; `out` is a separate buffer.
    unsafe {
        gemm_with(
            isa(),
            m,
            n,
            k,
            out.as_mut_ptr(),
            n,
            Tri::Full,
            false,
            View::rows(a, k),
            View::rows_t(b, k),
            T::ONE,
        )
    }
}

/// `out (m×n) = x wᵀ` for row-major x (m×k) and w (n×k) (a linear layer), computed as the
/// row-major `w xᵀ` (n×m) and then transposed: the kernels vectorise along the destination's
/// rows, and for a layer's few rows against its many outputs that orientation ran 1.5x faster
/// even with the transpose (musicgen-small's FFN on 200 rows, AVX-512, one thread: 13.6 ms
/// against 20.3 ms for candle's matmul and 16.7 ms for [`matmul_nt`]; benches/musicgen.rs
/// `micro`), while a strided destination loses it again.
pub fn linear<T: Real>(x: &[T], m: usize, k: usize, w: &[T], n: usize, out: &mut [T]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    let mut t = vec![T::ZERO; n * m];
    // SAFETY: sizes checked above; `t` is a separate n×m buffer.
    unsafe {
        gemm_with(
            isa(),
            n,
            m,
            k,
            t.as_mut_ptr(),
            m,
            Tri::Full,
            false,
            View::rows(w, k),
            View::rows_t(x, k),
            T::ONE,
        )
    }
    transpose(&t, n, m, out);
}

/// `out (c×r) = aᵀ` for the row-major r×c `a`: 16 rows of `a` at a time (16 read streams), so
/// every write is one contiguous 64-byte run of an output row.
pub fn transpose<T: Copy>(a: &[T], r: usize, c: usize, out: &mut [T]) {
    const ROWS: usize = 16;
    assert!(a.len() >= r * c && out.len() >= r * c);
    for (bi, block) in a[..r * c].chunks(ROWS * c).enumerate() {
        let rows = block.len() / c;
        let i0 = bi * ROWS;
        for j in 0..c {
            let dst = &mut out[j * r + i0..j * r + i0 + rows];
            for (ii, d) in dst.iter_mut().enumerate() {
                *d = block[ii * c + j];
            }
        }
    }
}

/// `out (m×n) = a b` for row-major a (m×k) and b (k×n).
pub fn matmul<T: Real>(a: &[T], m: usize, k: usize, b: &[T], n: usize, out: &mut [T]) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    // SAFETY: sizes checked above; `out` is a separate buffer.
    unsafe {
        gemm_with(
            isa(),
            m,
            n,
            k,
            out.as_mut_ptr(),
            n,
            Tri::Full,
            false,
            View::rows(a, k),
            View::rows(b, n),
            T::ONE,
        )
    }
}

/// `out (m×m) = aᵀ a` (lower triangle) for the row-major k×m `a`.
pub fn gram_t<T: Real>(a: &[T], k: usize, m: usize, out: &mut [T]) {
    assert!(a.len() >= k * m && out.len() >= m * m);
    // SAFETY: sizes checked above; `out` is a separate buffer.
    unsafe {
        gemm_with(
            isa(),
            m,
            m,
            k,
            out.as_mut_ptr(),
            m,
            Tri::Lower,
            false,
            View::rows_t(a, m),
            View::rows(a, m),
            T::ONE,
        )
    }
}

/// Copies the lower triangle of the row-major n×n `a` onto its upper triangle.
pub fn mirror_lower<T: Copy>(a: &mut [T], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            a[i * n + j] = a[j * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        c
    }

    /// The metric's eigenproblem does not depend on the scale of the gradient Gram: at the
    /// bottom of f32's range (where an unscaled QR iteration can lose convergence) it returns
    /// the same vectors and the eigenvalues scaled, as f64 does.
    #[test]
    fn eigh_is_scale_invariant_down_to_tiny_f32_grams() {
        let r = 48;
        let b = data(r * r, 3);
        // A symmetric positive semi-definite Gram, lower triangle used.
        let g: Vec<f64> = (0..r * r)
            .map(|t| (0..r).map(|k| b[t / r * r + k] * b[t % r * r + k]).sum())
            .collect();
        let (v64, u64) = <f64 as Real>::eigh_lower_desc(&g, r).unwrap();
        for scale in [1.0f64, 1e-30, 1e30] {
            let s: Vec<f32> = g.iter().map(|&a| (a * scale) as f32).collect();
            let (v, u) = <f32 as Real>::eigh_lower_desc(&s, r).expect("converges");
            for k in 0..r {
                let want = v64[k] * scale;
                assert!(
                    (v[k] - want).abs() <= 1e-4 * v64[0] * scale,
                    "scale {scale} λ{k}: {} vs {want}",
                    v[k]
                );
            }
            // The leading eigenvector (well separated) up to sign.
            let dot: f64 = (0..r).map(|i| u[i * r] as f64 * u64[i * r]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-4, "scale {scale}: {dot}");
        }
    }

    /// A gradient Gram on which faer's f32 solver did not converge unscaled (fixtures/rfm/README.md
    /// says how it was captured): largest entry 3e-26, a quarter of the entries f32-subnormal.
    /// Unscaled, this test fails ("converges").
    #[test]
    fn eigh_converges_on_a_gram_with_a_subnormal_tail() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/rfm/eigh_subnormal_gram.npy"
        );
        let t = candle_core::Tensor::read_npy(path).unwrap();
        let r = t.dim(0).unwrap();
        let s: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(s.iter().filter(|a| a.is_subnormal()).count() > r * r / 10);
        let g: Vec<f64> = s.iter().map(|&a| a as f64).collect();
        let (v64, _) = <f64 as Real>::eigh_lower_desc(&g, r).unwrap();
        let (v, _) = <f32 as Real>::eigh_lower_desc(&s, r).expect("converges");
        for k in 0..r {
            assert!(
                (v[k] - v64[k]).abs() <= 1e-4 * v64[0],
                "λ{k}: {} vs {}",
                v[k],
                v64[k]
            );
        }
    }

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i + seed) * 7919 % 1013) as f64) / 1013.0 - 0.5)
            .collect()
    }

    /// A linear layer `x wᵀ` through the transposed product equals the naive product, for row
    /// counts around the transpose's 16-row blocks.
    #[test]
    fn linear_equals_a_naive_product() {
        for (m, k, n) in [(1, 3, 5), (16, 8, 33), (37, 64, 130)] {
            let x = data(m * k, 3);
            let w = data(n * k, 4);
            let mut wt = vec![0.0; k * n];
            transpose(&w, n, k, &mut wt);
            let want = naive(&x, m, k, &wt, n);
            let mut got = vec![f64::NAN; m * n];
            linear(&x, m, k, &w, n, &mut got);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn transpose_moves_every_element() {
        let (r, c) = (37, 21);
        let a: Vec<usize> = (0..r * c).collect();
        let mut t = vec![0; r * c];
        transpose(&a, r, c, &mut t);
        for i in 0..r {
            for j in 0..c {
                assert_eq!(t[j * r + i], a[i * c + j]);
            }
        }
    }

    /// Every kernel set this CPU can run gives the same products (f64 and f32), Full and Lower,
    /// replacing and accumulating.
    #[test]
    fn every_available_kernel_set_agrees_with_a_naive_product() {
        let (m, k, n) = (70, 130, 90);
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let want = naive(&a, m, k, &b, n);
        let sets: Vec<Isa> = [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&s| s <= detected())
            .collect();
        assert!(
            sets.contains(&isa()),
            "the chosen set {:?} must run here",
            isa()
        );
        for &set in &sets {
            let mut c = vec![1.0f64; m * n];
            unsafe {
                gemm_with(
                    set,
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    n,
                    Tri::Full,
                    true,
                    View::rows(&a, k),
                    View::rows(&b, n),
                    2.0,
                );
            }
            for (x, w) in c.iter().zip(&want) {
                assert!((x - (1.0 + 2.0 * w)).abs() < 1e-10, "{set:?}: {x} vs {w}");
            }
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let mut g = vec![7.0f32; m * m];
            gram_with(set, &a32, m, k, &mut g, Tri::Lower);
            let at: Vec<f64> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
            let gw = naive(&a, m, k, &at, m);
            for i in 0..m {
                for j in 0..m {
                    let v = g[i * m + j] as f64;
                    if j <= i {
                        assert!((v - gw[i * m + j]).abs() < 1e-4, "{set:?} ({i},{j})");
                    } else if set != Isa::Portable {
                        assert_eq!(v, 7.0, "{set:?}: upper triangle must be untouched");
                    }
                }
            }
        }
    }

    #[test]
    fn isa_names_round_trip_and_the_cap_never_exceeds_the_cpu() {
        for s in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::parse(s.name()), Some(s));
        }
        assert!(isa() <= detected());
    }
}
