//! Models: the MusicGen decoder (candle), the EnCodec 32 kHz codec, the T5 text encoder, weight
//! loading, and the [`Pipeline`] that ties them into text -> codes -> audio.

mod cache;
pub mod cli;
pub mod encodec;
mod error;
pub(crate) mod fingerprint;
pub mod hub;
pub mod kernels;
pub mod musicgen;
mod pipeline;
mod precision;
pub mod random_small;
mod seeded;
pub mod text;
pub mod torch_bin;
pub mod weights;

pub use error::{ModelError, download_command};
pub use pipeline::{ModelSource, Pipeline, SAMPLE_RATE};
pub use precision::Precision;
