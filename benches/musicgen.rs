//! MusicGen decoder throughput at musicgen-small dimensions with seeded random weights (no download).
//! Reference: fixtures/bench_musicgen.py (transformers, same dimensions and thread count);
//! fixtures/bench_musicgen.sh runs both back to back.
//!
//! EnCodec at facebook/encodec_32khz's shapes (seeded weights): encoding and decoding 4 s clips one
//! at a time and in batches.
//!
//! `cargo bench --bench musicgen` with env RFMX_BENCH_STEPS (250), RFMX_BENCH_FRAMES (200),
//! RFMX_BENCH_BATCHES ("1,4"), RFMX_BENCH_REPEATS (1), RFMX_BENCH_WHAT ("gen,extract,codec"),
//! RFMX_BENCH_CODEC_BATCHES ("1,16"), RFMX_BENCH_CODEC_SECONDS (4),
//! RFMX_BENCH_DEVICE ("cpu"). Threads: RAYON_NUM_THREADS. Prints one JSON line per measurement.

use std::time::Instant;

use candle_core::{DType, Tensor};
use rfmx::model::encodec::{Encodec, EncodecConfig};
use rfmx::model::musicgen::{GenerateConfig, NoHook, Pool, TinySpec, parse_device, parse_dtype};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The binary's allocator settings, so that this measures what `rfmx` does.
    rfmx::alloc::tune();
    let steps: usize = env("RFMX_BENCH_STEPS", 250);
    let frames: usize = env("RFMX_BENCH_FRAMES", 200);
    let repeats: usize = env("RFMX_BENCH_REPEATS", 1);
    let batches: String = env("RFMX_BENCH_BATCHES", "1,4".to_string());
    let what: String = env("RFMX_BENCH_WHAT", "gen,extract,codec".to_string());
    let device = parse_device(&env("RFMX_BENCH_DEVICE", "cpu".to_string()))?;
    let dtype = parse_dtype(&env("RFMX_BENCH_DTYPE", "auto".to_string()), &device)?;
    // musicgen-small decoder; text states already at decoder width (no projection), like the reference.
    let spec = TinySpec {
        hidden_size: 1024,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        ffn_dim: 4096,
        vocab_size: 2048,
        num_codebooks: 4,
        text_hidden_size: 1024,
        seed: 0,
    };
    let t0 = Instant::now();
    let model = spec.build(&device, dtype)?;
    eprintln!(
        "built musicgen-small-sized model in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    if what.contains("gen") {
        for b in batches.split(',').map(|s| s.trim().parse::<usize>()) {
            let b = b?;
            let text = Tensor::randn(0f32, 1.0, (b, 12, 1024), &device)?.to_dtype(dtype)?;
            let cond = model.condition(&text, None)?;
            for r in 0..repeats {
                let cfg = GenerateConfig {
                    steps,
                    seed: r as u64,
                    ..Default::default()
                };
                let t = Instant::now();
                model.generate(&cond, &cfg, &mut NoHook)?;
                let dt = t.elapsed().as_secs_f64();
                println!(
                    "{{\"impl\": \"rfmx\", \"task\": \"generate_cfg\", \"batch\": {b}, \"steps\": {steps}, \"seconds\": {dt}, \"tokens_per_s\": {}}}",
                    (b * steps) as f64 / dt
                );
            }
        }
    }
    if what.contains("micro") {
        // Where extraction time goes: one layer's FFN GEMMs vs its exact-erf GELU.
        let x = Tensor::randn(0f32, 1.0, (frames, 1024), &device)?;
        let w = Tensor::randn(0f32, 0.03, (1024, 4096), &device)?;
        let t = Instant::now();
        let h = x.matmul(&w)?;
        let mm = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = h.gelu_erf()?;
        let ge = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = (&g + &h)?;
        let add = t.elapsed().as_secs_f64();
        // Decode-time GEMV shapes: x [2, 1024] against a [4096, 1024] weight, both orientations.
        let rows: usize = env("RFMX_BENCH_ROWS", 2);
        let xs = Tensor::randn(0f32, 1.0, (rows, 1024), &device)?;
        let wo = Tensor::randn(0f32, 0.03, (4096, 1024), &device)?;
        let wt = wo.t()?;
        let wtc = wt.contiguous()?;
        let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
            f()?;
            let t = Instant::now();
            for _ in 0..20 {
                f()?;
            }
            Ok(t.elapsed().as_secs_f64() / 20.0)
        };
        let a = time(&|| xs.matmul(&wt))?;
        let b = time(&|| wo.matmul(&xs.t()?))?;
        let c = time(&|| xs.matmul(&wtc))?;
        // Teacher-forcing shape x [frames, 1024] · W [4096, 1024]ᵀ: candle's matmul against the
        // runtime-dispatched kernels the decoder's Linear uses on the CPU.
        let xf = Tensor::randn(0f32, 1.0, (frames, 1024), &device)?;
        // Alternated, minimum of each: robust to other work on the machine.
        let (mut cand, mut ours) = (f64::MAX, f64::MAX);
        for _ in 0..20 {
            let t = Instant::now();
            xf.matmul(&wo.t()?)?;
            cand = cand.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            rfmx::model::kernels::matmul_nt(&xf, &wo)?;
            ours = ours.min(t.elapsed().as_secs_f64());
        }
        let (xv, wv) = (
            xf.flatten_all()?.to_vec1::<f32>()?,
            wo.flatten_all()?.to_vec1::<f32>()?,
        );
        let mut outt = vec![0f32; frames * 4096];
        let mut trans = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            rfmx::probe::gemm::matmul_nt(&wv, 4096, 1024, &xv, frames, &mut outt);
            trans = trans.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{{\"linear_candle_s\": {cand}, \"linear_dispatch_s\": {ours}, \"wx_t_s\": {trans}}}"
        );
        println!("{{\"gemv_x_wt_s\": {a}, \"gemv_w_xt_s\": {b}, \"gemv_x_wtcontig_s\": {c}}}");
        println!("{{\"micro\": true, \"matmul_s\": {mm}, \"gelu_erf_s\": {ge}, \"add_s\": {add}}}");
    }
    if what.contains("extract") {
        let codes = Tensor::rand(0f32, 2048.0, (1, 4, frames), &device)?
            .floor()?
            .to_dtype(DType::U32)?;
        for _ in 0..repeats {
            let t = Instant::now();
            let pooled = model.extract_pooled(&codes, &[Pool::Mean])?;
            pooled[0].to_vec3::<f32>()?;
            let dt = t.elapsed().as_secs_f64();
            println!(
                "{{\"impl\": \"rfmx\", \"task\": \"extract\", \"batch\": 1, \"frames\": {frames}, \"seconds\": {dt}, \"tokens_per_s\": {}}}",
                frames as f64 / dt
            );
        }
    }
    if what.contains("codec") {
        let codec = Encodec::seeded(EncodecConfig::encodec_32khz(), 0, &device)?;
        let secs: f64 = env("RFMX_BENCH_CODEC_SECONDS", 4.0);
        let samples = (secs * 32000.0) as usize;
        let batches: String = env("RFMX_BENCH_CODEC_BATCHES", "1,16".to_string());
        for b in batches.split(',').map(|s| s.trim().parse::<usize>()) {
            let b = b?;
            let audio = (Tensor::randn(0f32, 1.0, (b, 1, samples), &device)? * 0.1)?;
            for r in 0..=repeats {
                let t = Instant::now();
                let codes = codec.encode(&audio)?;
                let de = t.elapsed().as_secs_f64();
                let t = Instant::now();
                codec.decode(&codes)?;
                let dd = t.elapsed().as_secs_f64();
                if r == 0 {
                    continue; // warm-up
                }
                for (task, s) in [("encode", de), ("decode", dd)] {
                    println!(
                        "{{\"impl\": \"rfmx\", \"task\": \"{task}\", \"batch\": {b}, \"seconds_audio\": {secs}, \"seconds\": {s}, \"seconds_per_clip\": {}}}",
                        s / b as f64
                    );
                }
            }
        }
    }
    Ok(())
}
