//! Models: the MusicGen decoder (candle), text and audio encoders, weight loading.

pub mod musicgen;
