//! Models: the MusicGen decoder (candle), the EnCodec 32 kHz codec, weight loading.

pub mod encodec;
pub mod musicgen;
