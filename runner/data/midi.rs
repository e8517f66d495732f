//! A minimal MIDI event model mirroring SynTheory's `dataset/music/midi.py` (mido) output, and a
//! Standard MIDI File writer so that rustysynth plays exactly what the original played.

pub const TICKS_PER_BEAT: u32 = 480;
pub const VELOCITY: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    NoteOn { key: u8, vel: u8 },
    NoteOff { key: u8, vel: u8 },
    Program(u8),
    Control { cc: u8, value: u8 },
}

/// One event at an absolute tick on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub tick: u32,
    pub channel: u8,
    pub msg: Msg,
}

/// A single-track song: tempo (BPM, constant), time signature (metadata only) and events in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Song {
    pub bpm: u32,
    pub time_signature: (u8, u8),
    pub events: Vec<Event>,
}

/// A timed note group: (start beat, end beat, MIDI notes sounding together).
pub type Timed = (u32, u32, Vec<i32>);

impl Song {
    /// `create_midi_track`: metadata, tempo and the program change at tick 0.
    pub fn new(bpm: u32, time_signature: (u8, u8), program: u8, channel: u8) -> Song {
        let events = vec![Event {
            tick: 0,
            channel,
            msg: Msg::Program(program),
        }];
        Song {
            bpm,
            time_signature,
            events,
        }
    }

    fn end_tick(&self) -> u32 {
        self.events.last().map_or(0, |e| e.tick)
    }

    /// `write_melody` / `write_progression`: notes on together, all off after the duration; a gap
    /// between groups becomes a silent note-64 rest exactly as the original wrote it.
    pub fn write_groups(&mut self, groups: &[Timed], channel: u8) {
        let Some(first) = groups.first() else { return };
        let lead = first.0.saturating_sub(1) * TICKS_PER_BEAT;
        let mut t = self.end_tick();
        if lead > 0 {
            self.push(t, channel, Msg::NoteOn { key: 64, vel: 0 });
            t += lead;
            self.push(t, channel, Msg::NoteOff { key: 64, vel: 0 });
        }
        let mut prev_end: Option<u32> = None;
        for (start, end, notes) in groups {
            if let Some(pe) = prev_end.filter(|pe| pe < start) {
                self.push(t, channel, Msg::NoteOn { key: 64, vel: 0 });
                t += (start - pe) * TICKS_PER_BEAT;
                self.push(t, channel, Msg::NoteOff { key: 64, vel: 0 });
            }
            for &n in notes {
                self.push(
                    t,
                    channel,
                    Msg::NoteOn {
                        key: n as u8,
                        vel: VELOCITY,
                    },
                );
            }
            t += (end - start) * TICKS_PER_BEAT;
            for &n in notes {
                self.push(
                    t,
                    channel,
                    Msg::NoteOff {
                        key: n as u8,
                        vel: VELOCITY,
                    },
                );
            }
            prev_end = Some(*end);
        }
    }

    /// `write_click`: reverb CC 91, then `total_beats + 1` clicks of `time_unit` ticks each.
    pub fn write_click(&mut self, click: &ClickConfig, total_beats: u32, reverb: u8) {
        let (num, den) = self.time_signature;
        let compound = num % 3 == 0 && den != 4;
        let unit = if compound {
            TICKS_PER_BEAT / 2
        } else {
            (TICKS_PER_BEAT as f64 / (den as f64 / 4.0)) as u32
        };
        let ch = click.channel;
        let mut t = self.end_tick();
        self.push(
            t,
            ch,
            Msg::Control {
                cc: 91,
                value: [0, 63, 127][reverb as usize],
            },
        );
        for b in 0..=total_beats {
            let down = b % num as u32 == 0;
            let (key, vel) = if down {
                (click.down_key, 100)
            } else {
                (click.off_key, 75)
            };
            self.push(t, ch, Msg::NoteOn { key, vel });
            t += unit;
            self.push(t, ch, Msg::NoteOff { key, vel });
        }
    }

    fn push(&mut self, tick: u32, channel: u8, msg: Msg) {
        self.events.push(Event { tick, channel, msg });
    }

    /// Length in seconds (time of the last event), as rustysynth's `MidiFile::get_length`.
    pub fn length_secs(&self) -> f64 {
        self.end_tick() as f64 / TICKS_PER_BEAT as f64 * 60.0 / self.bpm as f64
    }

    /// Microseconds per quarter note, as mido's `bpm2tempo` (rounded).
    pub fn tempo_us(&self) -> u32 {
        (60_000_000.0 / self.bpm as f64).round() as u32
    }

    /// Type-0 Standard MIDI File bytes.
    pub fn to_smf(&self) -> Vec<u8> {
        let mut trk = Vec::new();
        let (num, den) = self.time_signature;
        trk.extend([0, 0xFF, 0x58, 4, num, den.trailing_zeros() as u8, 24, 8]);
        let tempo = self.tempo_us();
        trk.extend([
            0,
            0xFF,
            0x51,
            3,
            (tempo >> 16) as u8,
            (tempo >> 8) as u8,
            tempo as u8,
        ]);
        let mut last = 0;
        for e in &self.events {
            vlq(e.tick - last, &mut trk);
            last = e.tick;
            let c = e.channel & 0x0F;
            match e.msg {
                Msg::NoteOn { key, vel } => trk.extend([0x90 | c, key, vel]),
                Msg::NoteOff { key, vel } => trk.extend([0x80 | c, key, vel]),
                Msg::Program(p) => trk.extend([0xC0 | c, p]),
                Msg::Control { cc, value } => trk.extend([0xB0 | c, cc, value]),
            }
        }
        trk.extend([0, 0xFF, 0x2F, 0]);
        let mut out = b"MThd".to_vec();
        out.extend(6u32.to_be_bytes());
        out.extend([0, 0, 0, 1]);
        out.extend((TICKS_PER_BEAT as u16).to_be_bytes());
        out.extend(b"MTrk");
        out.extend((trk.len() as u32).to_be_bytes());
        out.extend(trk);
        out
    }
}

fn vlq(mut v: u32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 5];
    let mut i = 4;
    buf[i] = (v & 0x7F) as u8;
    v >>= 7;
    while v > 0 {
        i -= 1;
        buf[i] = 0x80 | (v & 0x7F) as u8;
        v >>= 7;
    }
    out.extend(&buf[i..]);
}

/// A metronome voice (`ClickTrackConfig`); clicks use velocity 100 on downbeats, 75 otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClickConfig {
    pub name: &'static str,
    pub channel: u8,
    pub program: u8,
    pub down_key: u8,
    pub off_key: u8,
}

/// SynTheory's five click configurations, in its order.
pub const CLICKS: [ClickConfig; 5] = [
    ClickConfig {
        name: "default",
        channel: 9,
        program: 0,
        down_key: 37,
        off_key: 31,
    },
    ClickConfig {
        name: "woodblock_dark",
        channel: 2,
        program: 115,
        down_key: 37,
        off_key: 31,
    },
    ClickConfig {
        name: "woodblock_light",
        channel: 2,
        program: 115,
        down_key: 52,
        off_key: 48,
    },
    ClickConfig {
        name: "taiko",
        channel: 2,
        program: 116,
        down_key: 52,
        off_key: 48,
    },
    ClickConfig {
        name: "synth_drum",
        channel: 2,
        program: 118,
        down_key: 52,
        off_key: 48,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smf_parses_in_rustysynth_with_the_right_length() {
        let mut s = Song::new(120, (4, 4), 0, 2);
        s.write_groups(
            &[
                (0, 2, vec![60]),
                (2, 4, vec![60]),
                (4, 6, vec![60]),
                (6, 8, vec![60]),
            ],
            2,
        );
        assert_eq!(s.length_secs(), 4.0);
        let mf = rustysynth::MidiFile::new(&mut &s.to_smf()[..]).unwrap();
        assert!((mf.get_length() - 4.0).abs() < 1e-9);
        let mut v = Vec::new();
        vlq(0x0FFF_FFFF, &mut v);
        assert_eq!(v, [0xFF, 0xFF, 0xFF, 0x7F]);
    }
}
