//! The embedded `tiny` model: MusicGen's architecture at toy size with weights drawn from a seeded
//! ChaCha20 stream, so it needs no download and is bit-identical on every platform.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::config::{DecoderConfig, Layout, MusicgenConfig};
use super::decoder::MusicgenModel;
use super::error::Result;

/// Sizes of the embedded model; the defaults keep it at about 5 MB of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    /// 2048 so its codes stay valid for MusicGen's 32 kHz EnCodec.
    pub vocab_size: usize,
    pub num_codebooks: usize,
    /// Width of the text states it is conditioned on (t5-base: 768).
    pub text_hidden_size: usize,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            ffn_dim: 256,
            vocab_size: 2048,
            num_codebooks: 4,
            text_hidden_size: 768,
            seed: 0x5EED_7171,
        }
    }
}

impl TinySpec {
    pub fn config(&self) -> MusicgenConfig {
        MusicgenConfig {
            decoder: DecoderConfig {
                vocab_size: self.vocab_size,
                max_position_embeddings: 2048,
                num_hidden_layers: self.num_hidden_layers,
                ffn_dim: self.ffn_dim,
                num_attention_heads: self.num_attention_heads,
                activation_function: "gelu".into(),
                hidden_size: self.hidden_size,
                num_codebooks: self.num_codebooks,
                audio_channels: 1,
                pad_token_id: Some(self.vocab_size),
                bos_token_id: Some(self.vocab_size),
                cross_attention_hidden_size: None,
                model_type: Some("musicgen_decoder".into()),
            },
            text_hidden_size: Some(self.text_hidden_size),
            layout: Layout::Composite,
        }
    }

    /// Human-readable provenance for reports.
    pub fn description(&self) -> String {
        format!(
            "embedded tiny MusicGen decoder with random weights (seed {:#x}; hidden {}, {} layers, {} heads, \
             ffn {}, {} codebooks x {} codes) — not a trained model",
            self.seed,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.ffn_dim,
            self.num_codebooks,
            self.vocab_size
        )
    }

    /// Every weight, named as in a transformers checkpoint. Linear weights are uniform with the
    /// variance of 1/fan_in (activations stay O(1) through the blocks); layer norms start near identity.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed);
        let mut out = HashMap::new();
        let cpu = Device::Cpu;
        let mut put = |name: String, shape: &[usize], kind: Init| -> Result<()> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    let u = rng.random::<f32>() * 2.0 - 1.0;
                    match kind {
                        Init::Uniform(a) => u * a,
                        Init::Around(c, a) => c + u * a,
                    }
                })
                .collect();
            out.insert(name, Tensor::from_vec(data, shape, &cpu)?);
            Ok(())
        };
        let h = self.hidden_size;
        let fan = |i: usize| Init::Uniform((3.0 / i as f32).sqrt());
        let ln = |put: &mut PutFn, p: String| -> Result<()> {
            put(format!("{p}.weight"), &[h], Init::Around(1.0, 0.1))?;
            put(format!("{p}.bias"), &[h], Init::Uniform(0.1))
        };
        let d = "decoder.model.decoder";
        for k in 0..self.num_codebooks {
            put(
                format!("{d}.embed_tokens.{k}.weight"),
                &[self.vocab_size + 1, h],
                Init::Uniform(0.5),
            )?;
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("{d}.layers.{l}");
            for a in ["self_attn", "encoder_attn"] {
                for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    put(format!("{p}.{a}.{m}.weight"), &[h, h], fan(h))?;
                }
            }
            ln(&mut put, format!("{p}.self_attn_layer_norm"))?;
            ln(&mut put, format!("{p}.encoder_attn_layer_norm"))?;
            ln(&mut put, format!("{p}.final_layer_norm"))?;
            put(format!("{p}.fc1.weight"), &[self.ffn_dim, h], fan(h))?;
            put(
                format!("{p}.fc2.weight"),
                &[h, self.ffn_dim],
                fan(self.ffn_dim),
            )?;
        }
        ln(&mut put, format!("{d}.layer_norm"))?;
        for k in 0..self.num_codebooks {
            put(
                format!("decoder.lm_heads.{k}.weight"),
                &[self.vocab_size, h],
                fan(h),
            )?;
        }
        if self.config().needs_text_projection() {
            let t = self.text_hidden_size;
            put("enc_to_dec_proj.weight".into(), &[h, t], fan(t))?;
            put("enc_to_dec_proj.bias".into(), &[h], Init::Uniform(0.1))?;
        }
        Ok(out)
    }

    pub fn build(&self, device: &Device, dtype: DType) -> Result<MusicgenModel> {
        let vb = VarBuilder::from_tensors(self.weights()?, dtype, device);
        MusicgenModel::new(self.config(), vb)
    }
}

type PutFn<'a> = dyn FnMut(String, &[usize], Init) -> Result<()> + 'a;

#[derive(Clone, Copy)]
enum Init {
    Uniform(f32),
    Around(f32, f32),
}
