//! Behavioural checks of the RFM on synthetic problems with known structure, and of the
//! analytic gradients against finite differences.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rfmx::probe::data::{Features, Targets, Task};
use rfmx::probe::directions::eigh_desc;
use rfmx::probe::kernel::{self, KernelParams};
use rfmx::probe::rfm::{RfmHyper, RfmOptions, fit_rfm};

fn gaussian(n: usize, d: usize, seed: u64) -> Features {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Features::new(n, d, data).unwrap()
}

fn fit_regression(x: &Features, y: Vec<f64>, h: RfmHyper) -> rfmx::probe::RfmModel {
    let n_tr = x.n * 4 / 5;
    let tr: Vec<usize> = (0..n_tr).collect();
    let va: Vec<usize> = (n_tr..x.n).collect();
    let t = Targets::Values(y);
    let opt = RfmOptions {
        early_stop_multiplier: f64::INFINITY,
        ..Default::default()
    };
    fit_rfm(
        &x.select(&tr),
        &t.select(&tr),
        &x.select(&va),
        &t.select(&va),
        Task::Regression,
        0,
        &h,
        &opt,
    )
    .unwrap()
    .0
}

#[test]
fn product_target_concentrates_m_on_its_coordinates() {
    let (n, d) = (800, 20);
    let x = gaussian(n, d, 1);
    let y = (0..n)
        .map(|i| {
            let r = x.row(i);
            (r[0] * r[1]) as f64 * f64::from(u8::from(r[5] > 0.0))
        })
        .collect();
    let h = RfmHyper {
        reg: 1e-3,
        bandwidth: 10.0,
        q: 1.0,
        centre: false,
        iterations: 5,
    };
    let m = fit_regression(&x, y, h).m;
    let diag: Vec<f64> = (0..d).map(|i| m[i * d + i]).collect();
    let total: f64 = diag.iter().sum();
    let share = (diag[0] + diag[1] + diag[5]) / total;
    assert!(
        share >= 0.8,
        "share of diag(M) on {{0,1,5}} = {share:.3}; diag = {diag:?}"
    );
}

#[test]
fn sum_target_gives_diagonal_top_eigenvector() {
    let (n, d) = (500, 10);
    let x = gaussian(n, d, 2);
    let y = (0..n).map(|i| (x.row(i)[0] + x.row(i)[1]) as f64).collect();
    let h = RfmHyper {
        reg: 1e-3,
        bandwidth: 10.0,
        q: 1.0,
        centre: false,
        iterations: 3,
    };
    let m = fit_regression(&x, y, h).m;
    let (_, vecs) = eigh_desc(&m, d);
    let v = &vecs[0];
    let s = if v[0] < 0.0 { -1.0 } else { 1.0 };
    let target = std::f64::consts::FRAC_1_SQRT_2;
    assert!(
        (s * v[0] - target).abs() < 0.05 && (s * v[1] - target).abs() < 0.05,
        "top eigenvector {v:?}"
    );
    let rest = v[2..].iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(rest < 0.05, "mass outside (0,1): {rest}");
}

/// f(z) = Σ_i α_i k_M(x_i, z) evaluated directly in f64.
fn f_direct(x: &[Vec<f64>], alpha: &[f64], m: &[f64], z: &[f64], p: KernelParams) -> f64 {
    let d = z.len();
    x.iter()
        .zip(alpha)
        .map(|(xi, a)| {
            let v: Vec<f64> = (0..d).map(|j| z[j] - xi[j]).collect();
            let mut q = 0.0;
            for r in 0..d {
                for c in 0..d {
                    q += v[r] * m[r * d + c] * v[c];
                }
            }
            a * (-(q.max(0.0).sqrt().powf(p.q)) / p.bandwidth.powf(p.q)).exp()
        })
        .sum()
}

#[test]
#[allow(clippy::needless_range_loop)] // indices address three parallel arrays
fn analytic_gradients_match_finite_differences() {
    let (n, d, nz) = (30, 5, 4);
    let x = gaussian(n, d, 3);
    let z = gaussian(nz, d, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // A random SPD metric and two output columns.
    let b: Vec<f64> = (0..d * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            m[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>() / d as f64
                + if i == j { 0.5 } else { 0.0 };
        }
    }
    let alpha: Vec<f64> = (0..n * 2)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let dev = Device::Cpu;
    let xt = x.to_tensor(DType::F64).unwrap();
    let zt = z.to_tensor(DType::F64).unwrap();
    let mt = kernel::Metric::new(Tensor::from_slice(&m, (d, d), &dev).unwrap()).unwrap();
    let at = Tensor::from_slice(&alpha, (n, 2), &dev).unwrap();
    let xs: Vec<Vec<f64>> = (0..n)
        .map(|i| x.row(i).iter().map(|&v| v as f64).collect())
        .collect();
    for q in [1.0, 0.8, 1.3] {
        let p = KernelParams { bandwidth: 3.0, q };
        let g = kernel::gradients(&zt, &xt, &mt, &at, p)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        for l in 0..2 {
            let a: Vec<f64> = (0..n).map(|i| alpha[i * 2 + l]).collect();
            for j in 0..nz {
                let zj: Vec<f64> = z.row(j).iter().map(|&v| v as f64).collect();
                for k in 0..d {
                    let h = 1e-6;
                    let (mut zp, mut zm) = (zj.clone(), zj.clone());
                    zp[k] += h;
                    zm[k] -= h;
                    let fd =
                        (f_direct(&xs, &a, &m, &zp, p) - f_direct(&xs, &a, &m, &zm, p)) / (2.0 * h);
                    let an = g[l][j][k];
                    assert!(
                        (fd - an).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "q={q} l={l} z={j} k={k}: fd {fd} vs {an}"
                    );
                }
            }
        }
    }
}

fn random_spd(d: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let b: Vec<f64> = (0..d * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            m[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>() / d as f64
                + if i == j { 0.5 } else { 0.0 };
        }
    }
    m
}

/// Covers the three AGOP paths: M = I, rows ≥ 2d (M S M once), rows < 2d (rows mapped by M).
#[test]
fn agop_equals_explicit_sum_of_gradient_outer_products() {
    let n = 25;
    for (d, identity) in [(4, true), (4, false), (16, false)] {
        let x = gaussian(n, d, 6);
        let xt = x.to_tensor(DType::F64).unwrap();
        let mv = if identity {
            Tensor::eye(d, DType::F64, &Device::Cpu).unwrap()
        } else {
            Tensor::from_vec(random_spd(d, 9), (d, d), &Device::Cpu).unwrap()
        };
        let mt = kernel::Metric::new(mv).unwrap();
        let at = Tensor::from_vec(
            (0..n).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(),
            (n, 1),
            &Device::Cpu,
        )
        .unwrap();
        let p = KernelParams {
            bandwidth: 2.0,
            q: 1.1,
        };
        let g = kernel::gradients(&xt, &xt, &mt, &at, p)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        for centre in [false, true] {
            let mean: Vec<f64> = (0..d)
                .map(|k| g[0].iter().map(|r| r[k]).sum::<f64>() / n as f64)
                .collect();
            let xm = mt.apply(&xt).unwrap();
            // Small batches exercise the f64 accumulation across batches.
            let a = kernel::agop(&xt, &xm, &mt, &at, p, centre, 7, None).unwrap();
            // Weights formed once with the kernel matrix (as the device fit does) must give the
            // same AGOP as the per-batch recomputation.
            let d2 = kernel::sq_dists_self(&xt, &xm, &mt).unwrap();
            let k = kernel::kernel_from_sq(&d2, p).unwrap();
            let w = kernel::grad_weights(&d2, &k, p).unwrap();
            let a_reuse = kernel::agop(&xt, &xm, &mt, &at, p, centre, 7, Some(&w)).unwrap();
            for (u, v) in a.iter().zip(&a_reuse) {
                assert!((u - v).abs() <= 1e-10 * (1.0 + u.abs()));
            }
            for r in 0..d {
                for c in 0..d {
                    let want: f64 = g[0]
                        .iter()
                        .map(|gz| {
                            let (u, v) = if centre {
                                (gz[r] - mean[r], gz[c] - mean[c])
                            } else {
                                (gz[r], gz[c])
                            };
                            u * v
                        })
                        .sum::<f64>()
                        / n as f64;
                    let got = a[r * d + c];
                    assert!(
                        (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                        "d={d} I={identity} centre={centre} ({r},{c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
