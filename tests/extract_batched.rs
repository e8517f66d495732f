//! Batched extraction (docs/design.md §9): the activations node encodes clips with EnCodec and runs
//! the teacher-forced decoder in batches; the codes and the pooled features must equal those of
//! one clip at a time (features to 1e-5).

use candle_core::{DType, Device, Tensor};
use rfmx::model::Pipeline;
use rfmx::model::musicgen::Pool;

/// `b` different 0.5 s clips (chords of sines with a per-clip pitch and a little noise).
fn clips(b: usize, samples: usize) -> Tensor {
    let mut x = Vec::with_capacity(b * samples);
    let mut state = 12345u64;
    for c in 0..b {
        let f = 110.0 * 2f32.powf(c as f32 / 5.0);
        for i in 0..samples {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            let t = i as f32 / 32000.0;
            let s = (std::f32::consts::TAU * f * t).sin()
                + 0.5 * (std::f32::consts::TAU * 1.5 * f * t).sin();
            x.push(0.3 * s + noise);
        }
    }
    Tensor::from_vec(x, (b, 1, samples), &Device::Cpu).unwrap()
}

#[test]
fn batched_encode_and_extraction_equal_one_clip_at_a_time() {
    let p = Pipeline::tiny(&Device::Cpu, DType::F32).unwrap();
    let (b, samples) = (5, 16000);
    let audio = clips(b, samples);
    let codes = p.encode_audio(&audio).unwrap();
    let pools = [Pool::Mean, Pool::Last, Pool::Max];
    let batched = p.decoder.extract_pooled(&codes, &pools).unwrap();
    let (layers, hidden) = (p.decoder.num_layers(), p.decoder.hidden_size());
    assert_ne!(
        codes.get(0).unwrap().to_vec2::<u32>().unwrap(),
        codes.get(1).unwrap().to_vec2::<u32>().unwrap(),
        "clips too alike to tell a mix-up"
    );
    let mut worst = 0f32;
    for i in 0..b {
        let one = audio.narrow(0, i, 1).unwrap();
        let c1 = p.encode_audio(&one).unwrap();
        assert_eq!(
            c1.get(0).unwrap().to_vec2::<u32>().unwrap(),
            codes.get(i).unwrap().to_vec2::<u32>().unwrap(),
            "codes of clip {i} differ between batched and single encoding"
        );
        let single = p.decoder.extract_pooled(&c1, &pools).unwrap();
        for (k, pool) in pools.iter().enumerate() {
            // [L, B, H] batched vs [L, 1, H] alone.
            let a = batched[k].narrow(1, i, 1).unwrap();
            assert_eq!(single[k].dims(), &[layers, 1, hidden]);
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let s = single[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (x, y) in a.iter().zip(&s) {
                let d = (x - y).abs() / y.abs().max(1.0);
                worst = worst.max(d);
                assert!(d <= 1e-5, "{pool:?} clip {i}: {x} vs {y}");
            }
        }
    }
    // Different rows really were computed (not one row broadcast).
    let m = batched[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(m[..hidden], m[hidden..2 * hidden]);
    eprintln!("largest batched/single difference: {worst:e}");
}
