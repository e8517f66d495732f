//! The log-mel → image step of `ClapAudioEncoder`: eval-mode `BatchNorm2d` over the mel bins, the
//! bicubic time stretch of `reshape_mel2img` and its fold of four time chunks into one square image.
//! It is a few hundred thousand values per clip, so it runs in plain Rust on host memory; the point is
//! to reproduce PyTorch's float32 arithmetic (the interpolation weights in particular) closely.

/// PyTorch's cubic convolution constant for `mode="bicubic"`.
const CUBIC_A: f32 = -0.75;

fn cubic_near(x: f32) -> f32 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f32) -> f32 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// The four source indices (clamped to the border) and weights of each output position along one
/// axis, as `upsample_bicubic2d` (align_corners=True) computes them: in float32, the source position
/// `scale * i` with `scale = (in - 1) / (out - 1)`, its floor clamped into range, the fraction into [0, 1].
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = if output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        0.0
    };
    let last = input as i64 - 1;
    (0..output)
        .map(|i| {
            let real = scale * i as f32;
            let index = (real.floor() as i64).min(last);
            let t = (real - index as f32).clamp(0.0, 1.0);
            let weights = [
                cubic_far(t + 1.0),
                cubic_near(t),
                cubic_near(1.0 - t),
                cubic_far(2.0 - t),
            ];
            let at = |k: i64| (index - 1 + k).clamp(0, last) as usize;
            ([at(0), at(1), at(2), at(3)], weights)
        })
        .collect()
}

/// `interpolate(x, (h_out, w_out), mode="bicubic", align_corners=True)` of one row-major `h_in × w_in`
/// plane. PyTorch sums the four row taps of four column-interpolated values per output pixel; the
/// column interpolation of a source row does not depend on the output row, so doing the columns
/// first for every source row and then the rows gives the same sums in the same order.
pub fn bicubic_align_corners(
    src: &[f32],
    h_in: usize,
    w_in: usize,
    h_out: usize,
    w_out: usize,
) -> Vec<f32> {
    debug_assert_eq!(src.len(), h_in * w_in);
    let cols = taps(w_in, w_out);
    let mut wide = vec![0f32; h_in * w_out];
    for (row, out) in src.chunks_exact(w_in).zip(wide.chunks_exact_mut(w_out)) {
        for (o, (idx, w)) in out.iter_mut().zip(&cols) {
            let mut acc = row[idx[0]] * w[0];
            for k in 1..4 {
                acc += row[idx[k]] * w[k];
            }
            *o = acc;
        }
    }
    let rows = taps(h_in, h_out);
    let mut out = vec![0f32; h_out * w_out];
    for (dst, (idx, w)) in out.chunks_exact_mut(w_out).zip(&rows) {
        for (j, o) in dst.iter_mut().enumerate() {
            let mut acc = wide[idx[0] * w_out + j] * w[0];
            for k in 1..4 {
                acc += wide[idx[k] * w_out + j] * w[k];
            }
            *o = acc;
        }
    }
    out
}

/// Eval-mode BatchNorm as PyTorch's CPU kernel applies it: `x * alpha + beta` with
/// `alpha = weight / sqrt(running_var + eps)` and `beta = bias - running_mean * alpha`.
#[derive(Debug, Clone)]
pub struct EvalBatchNorm {
    pub alpha: Vec<f32>,
    pub beta: Vec<f32>,
}

impl EvalBatchNorm {
    pub const EPS: f32 = 1e-5;

    pub fn new(weight: &[f32], bias: &[f32], mean: &[f32], var: &[f32]) -> Self {
        let alpha: Vec<f32> = weight
            .iter()
            .zip(var)
            .map(|(w, v)| w / (v + Self::EPS).sqrt())
            .collect();
        let beta = bias
            .iter()
            .zip(mean)
            .zip(&alpha)
            .map(|((b, m), a)| b - m * a)
            .collect();
        Self { alpha, beta }
    }

    pub fn len(&self) -> usize {
        self.alpha.len()
    }
}

/// `batch_norm` (over the mel axis) then `reshape_mel2img` of `planes` row-major `[time, mel]` planes
/// (one per batch row and channel): stretch time to `spec · ratio` frames, then lay the `ratio`
/// consecutive chunks of `spec` frames one under the other, each transposed to `[mel, time]`, giving
/// a `spec × spec` image per plane (`ratio · mel == spec`; the caller checks `time <= spec · ratio`).
pub fn mel_to_image(
    data: &[f32],
    planes: usize,
    time: usize,
    norm: &EvalBatchNorm,
    spec: usize,
    ratio: usize,
) -> Vec<f32> {
    let mel = norm.len();
    let width = spec * ratio;
    let mut image = vec![0f32; planes * spec * spec];
    let mut normed = vec![0f32; time * mel];
    for (plane, out) in data
        .chunks_exact(time * mel)
        .zip(image.chunks_exact_mut(spec * spec))
    {
        for (dst, src) in normed.chunks_exact_mut(mel).zip(plane.chunks_exact(mel)) {
            for (f, (d, s)) in dst.iter_mut().zip(src).enumerate() {
                *d = s * norm.alpha[f] + norm.beta[f];
            }
        }
        // transformers only interpolates when the time axis is short; the mel axis always matches.
        let stretched;
        let frames: &[f32] = if time < width {
            stretched = bicubic_align_corners(&normed, time, mel, width, mel);
            &stretched
        } else {
            &normed
        };
        for chunk in 0..ratio {
            for f in 0..mel {
                let row = &mut out[(chunk * mel + f) * spec..][..spec];
                for (t, v) in row.iter_mut().enumerate() {
                    *v = frames[(chunk * spec + t) * mel + f];
                }
            }
        }
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from PyTorch 2.x, computed once with
    //   torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=True)
    // for x = [[0.5, -1.25, 2.0], [3.0, 0.25, -0.75], [-2.0, 1.5, 0.0], [1.0, -0.5, 2.5]] (1×1×4×3).
    // They are exact binary fractions (a few written rounded to the same float32), so they are
    // checked to float32 rounding only.
    const X: [f32; 12] = [
        0.5, -1.25, 2.0, 3.0, 0.25, -0.75, -2.0, 1.5, 0.0, 1.0, -0.5, 2.5,
    ];

    #[test]
    fn bicubic_matches_torch_upsampling() {
        let expected: [f32; 35] = [
            0.5,
            -0.6796875,
            -1.25,
            0.2109375,
            2.0, //
            2.21875,
            0.690_917_97,
            -0.6171875,
            -0.297_119_14,
            0.5546875, //
            3.0,
            1.71875,
            0.25,
            -0.5078125,
            -0.75, //
            0.453125,
            1.0222168,
            1.203125,
            0.23828125,
            -0.8671875, //
            -2.0,
            -0.109375,
            1.5,
            1.078125,
            0.0, //
            -0.96875,
            -0.241_699_22,
            0.6171875,
            1.117_431_6,
            1.3203125, //
            1.0,
            -0.03125,
            -0.5,
            0.859375,
            2.5,
        ];
        let got = bicubic_align_corners(&X, 4, 3, 7, 5);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() <= 1e-6, "pixel {i}: {g} vs torch {e}");
        }
    }

    #[test]
    fn bicubic_matches_torch_downsampling() {
        let expected: [f32; 6] = [0.5, 2.0, 0.453125, -0.8671875, 1.0, 2.5];
        let got = bicubic_align_corners(&X, 4, 3, 3, 2);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() <= 1e-6, "pixel {i}: {g} vs torch {e}");
        }
    }

    #[test]
    fn same_size_axis_is_left_unchanged() {
        // With align_corners the source positions are the integers, where the cubic weights are
        // exactly [0, 1, 0, 0]: the mel axis of reshape_mel2img passes through bit for bit.
        let got = bicubic_align_corners(&X, 4, 3, 4, 3);
        assert_eq!(got, X.to_vec());
    }

    #[test]
    fn image_folds_time_chunks_under_each_other() {
        // 2 mel bins, ratio 2 → 4×4 image from 8 frames; identity norm, no stretch.
        let norm = EvalBatchNorm {
            alpha: vec![1.0; 2],
            beta: vec![0.0; 2],
        };
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect(); // [t][f] = 2t + f
        let img = mel_to_image(&data, 1, 8, &norm, 4, 2);
        // rows: chunk 0 mel 0, chunk 0 mel 1, chunk 1 mel 0, chunk 1 mel 1; columns: time in chunk
        let expected = [
            0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0, 8.0, 10.0, 12.0, 14.0, 9.0, 11.0, 13.0, 15.0,
        ];
        assert_eq!(img, expected);
    }
}
