//! The built-in synthesizer: renders the same MIDI events when no SoundFont is present. Additive
//! partials with a per-family envelope (GM program / 8), noise bursts for the drum channel, and a
//! comb reverb driven by CC 91. Pure arithmetic on the event list, so it is deterministic.

use super::midi::{Msg, Song, TICKS_PER_BEAT};

/// Output gain per note at velocity 127 (no normalisation afterwards, as with the SoundFont).
const NOTE_GAIN: f32 = 0.2;
const RELEASE_S: f32 = 0.05;
const MAX_PARTIAL_HZ: f32 = 16_000.0;

struct Timbre {
    partials: Vec<f32>,
    attack_s: f32,
    /// Exponential decay time constant; `f32::INFINITY` sustains.
    decay_s: f32,
}

fn timbre(program: u8) -> Timbre {
    let harm = |n: usize, p: f32| {
        (1..=n)
            .map(|k| 1.0 / (k as f32).powf(p))
            .collect::<Vec<_>>()
    };
    let (partials, attack_s, decay_s) = match program / 8 {
        0 => (harm(8, 1.5), 0.005, 1.0),
        1 => (vec![1.0, 0.0, 0.25, 0.0, 0.1], 0.002, 0.6),
        2 => (vec![1.0, 0.7, 0.5, 0.35, 0.2, 0.15], 0.01, f32::INFINITY),
        3 => (harm(10, 1.0), 0.003, 0.8),
        4 => (harm(6, 2.0), 0.005, 1.2),
        5 => (harm(12, 1.0), 0.08, f32::INFINITY),
        6 => (harm(10, 1.2), 0.1, f32::INFINITY),
        7 => (harm(10, 0.8), 0.04, f32::INFINITY),
        8 => (
            (1..=11)
                .map(|k| {
                    if k % 2 == 1 {
                        1.0 / k as f32
                    } else {
                        0.2 / k as f32
                    }
                })
                .collect(),
            0.03,
            f32::INFINITY,
        ),
        9 => (vec![1.0, 0.2, 0.1], 0.05, f32::INFINITY),
        10 => (
            (1..=15)
                .map(|k| if k % 2 == 1 { 1.0 / k as f32 } else { 0.0 })
                .collect(),
            0.005,
            f32::INFINITY,
        ),
        11 => (harm(8, 1.5), 0.3, f32::INFINITY),
        13 => (harm(8, 1.2), 0.003, 0.7),
        14 | 15 => (vec![1.0, 0.3], 0.001, 0.05),
        _ => (vec![1.0], 0.01, f32::INFINITY),
    };
    Timbre {
        partials,
        attack_s,
        decay_s,
    }
}

pub fn midi_hz(key: f32) -> f32 {
    440.0 * 2f32.powf((key - 69.0) / 12.0)
}

/// Renders `samples` samples of `song` at `sample_rate`; returns (left, right), identical channels.
pub fn render(song: &Song, sample_rate: u32, samples: usize) -> (Vec<f32>, Vec<f32>) {
    let sr = sample_rate as f32;
    let secs_per_tick = 60.0 / song.bpm as f64 / TICKS_PER_BEAT as f64;
    let at = |tick: u32| (tick as f64 * secs_per_tick * sample_rate as f64).round() as usize;
    let mut out = vec![0f32; samples];
    let mut program = [0u8; 16];
    let mut reverb = 0u8;
    for (i, e) in song.events.iter().enumerate() {
        let ch = e.channel as usize & 15;
        match e.msg {
            Msg::Program(p) => program[ch] = p,
            Msg::Control { cc: 91, value } => reverb = reverb.max(value),
            Msg::NoteOn { key, vel } if vel > 0 => {
                let off = song.events[i + 1..]
                    .iter()
                    .find(|o| o.channel == e.channel && matches!(o.msg, Msg::NoteOff { key: k, .. } | Msg::NoteOn { key: k, vel: 0 } if k == key))
                    .map_or(samples, |o| at(o.tick));
                let start = at(e.tick);
                let amp = NOTE_GAIN * vel as f32 / 127.0;
                if ch == 9 {
                    drum(&mut out, start, key, amp, sr);
                } else {
                    note(&mut out, start, off, key, amp, &timbre(program[ch]), sr);
                }
            }
            _ => {}
        }
    }
    if reverb > 0 {
        comb_reverb(&mut out, reverb as f32 / 127.0, sr);
    }
    (out.clone(), out)
}

fn note(out: &mut [f32], start: usize, off: usize, key: u8, amp: f32, t: &Timbre, sr: f32) {
    let f0 = midi_hz(key as f32);
    let rel = (RELEASE_S * sr) as usize;
    let end = (off + rel).min(out.len());
    if start >= end {
        return;
    }
    for (k, &a) in t.partials.iter().enumerate() {
        let f = f0 * (k + 1) as f32;
        if a == 0.0 || f > MAX_PARTIAL_HZ || f > sr / 2.0 {
            continue;
        }
        let w = 2.0 * std::f64::consts::PI * f as f64 / sr as f64;
        for (i, sample) in out[start..end].iter_mut().enumerate() {
            let n = start + i;
            let ts = i as f32 / sr;
            let mut env = (ts / t.attack_s).min(1.0);
            if t.decay_s.is_finite() {
                env *= (-ts / t.decay_s).exp();
            }
            if n >= off {
                env *= 1.0 - (n - off) as f32 / rel as f32;
            }
            *sample += amp * a * env * ((w * i as f64).sin() as f32);
        }
    }
}

fn drum(out: &mut [f32], start: usize, key: u8, amp: f32, sr: f32) {
    let len = ((0.08 * sr) as usize).min(out.len().saturating_sub(start));
    let mut state = 0x9E37_79B9u32 ^ key as u32;
    for n in 0..len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = state as f32 / u32::MAX as f32 * 2.0 - 1.0;
        out[start + n] += amp * noise * (-(n as f32) / (0.015 * sr)).exp();
    }
}

fn comb_reverb(out: &mut [f32], level: f32, sr: f32) {
    let dry = out.to_vec();
    for (delay_s, g) in [(0.0297, 0.7), (0.0371, 0.65), (0.0411, 0.6), (0.0437, 0.55)] {
        let d = (delay_s * sr) as usize;
        let mut y = dry.clone();
        for n in d..y.len() {
            y[n] += g * y[n - d];
        }
        for (o, (yv, dv)) in out.iter_mut().zip(y.iter().zip(&dry)) {
            *o += 0.25 * level * (yv - dv);
        }
    }
}
