//! CLAP (LAION's contrastive language–audio model, transformers' `ClapModel`) in candle, for the
//! `clap` text-alignment metric: `ClapFeatureExtractor` log-mels ([`features`]), the HTSAT Swin audio
//! encoder ([`htsat`]), the RoBERTa text encoder and its tokenizer ([`text`]), and the two projection
//! heads; embeddings are L2-normalised, so their dot product is the cosine the paper reports.

pub mod cli;
pub mod config;
mod error;
pub mod features;
pub mod htsat;
pub mod model;
pub mod text;

pub use error::ClapError;

/// The music CLAP checkpoint the paper scores text alignment with.
pub const DEFAULT_HUB_ID: &str = "laion/larger_clap_music";
