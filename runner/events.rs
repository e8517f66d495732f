//! Run events on one channel; the terminal view and the JSON-lines run log consume them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        experiment: String,
        nodes: usize,
        to_run: usize,
        jobs: usize,
    },
    Queued {
        id: String,
        key: String,
        reason: String,
    },
    Started {
        id: String,
        key: String,
        kind: String,
    },
    Progress {
        id: String,
        done: u64,
        total: u64,
        message: String,
    },
    /// `by_other_run`: another process computed it while we waited for its lock.
    Cached {
        id: String,
        key: String,
        by_other_run: bool,
    },
    Finished {
        id: String,
        key: String,
        kind: String,
        seconds: f64,
    },
    Failed {
        id: String,
        key: String,
        kind: String,
        error: String,
        record: PathBuf,
    },
    Skipped {
        id: String,
        key: String,
        because: String,
    },
    Warning {
        id: Option<String>,
        message: String,
    },
    /// The live plan grew: `nodes` more were planned from finished results (round `round`).
    Planned {
        round: u32,
        nodes: usize,
        waiting: Vec<String>,
    },
    RunFinished {
        computed: usize,
        cached: usize,
        failed: usize,
        skipped: usize,
        seconds: f64,
    },
}

pub type EventSender = Sender<Event>;

/// A consumer of events.
pub trait EventSink: Send {
    fn handle(&mut self, event: &Event);
    fn finish(&mut self) {}
}

/// Drains `rx` into every sink until all senders are dropped.
pub fn spawn_consumers(
    rx: Receiver<Event>,
    mut sinks: Vec<Box<dyn EventSink>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for e in rx {
            for s in sinks.iter_mut() {
                s.handle(&e);
            }
        }
        for s in sinks.iter_mut() {
            s.finish();
        }
    })
}

/// One JSON object per line, with seconds since the run started.
pub struct JsonlSink {
    file: std::io::BufWriter<std::fs::File>,
    start: Instant,
}

impl JsonlSink {
    pub fn create(path: &std::path::Path) -> std::io::Result<JsonlSink> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        Ok(JsonlSink {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
            start: Instant::now(),
        })
    }
}

impl EventSink for JsonlSink {
    fn handle(&mut self, event: &Event) {
        let mut v = serde_json::to_value(event).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "t".into(),
                serde_json::json!(self.start.elapsed().as_secs_f64()),
            );
        }
        let _ = writeln!(self.file, "{v}");
        // Flushed per event so that a killed run still leaves a readable log.
        let _ = self.file.flush();
    }
}

/// Progress bars on a TTY (hidden otherwise) and one line per finished/failed node on stderr.
pub struct TerminalSink {
    multi: MultiProgress,
    total: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    tty: bool,
}

impl TerminalSink {
    pub fn new() -> TerminalSink {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} nodes  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.set_prefix("run");
        TerminalSink {
            multi,
            total,
            bars: HashMap::new(),
            tty,
        }
    }

    fn line(&self, s: String) {
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            eprintln!("{s}");
        }
    }
}

impl Default for TerminalSink {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for TerminalSink {
    fn handle(&mut self, event: &Event) {
        match event {
            Event::RunStarted { nodes, .. } => self.total.set_length(*nodes as u64),
            Event::Started { id, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(id.clone());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                self.bars.insert(id.clone(), bar);
            }
            Event::Progress {
                id,
                done,
                total,
                message,
            } => {
                if let Some(b) = self.bars.get(id) {
                    b.set_length(*total);
                    b.set_position(*done);
                    b.set_message(format!("{id} {message} {done}/{total}"));
                }
            }
            Event::Cached {
                id, by_other_run, ..
            } => {
                self.total.inc(1);
                if *by_other_run {
                    self.line(format!("  cached   {id} (computed by another run)"));
                }
            }
            Event::Finished { id, seconds, .. } => {
                self.total.inc(1);
                if let Some(b) = self.bars.remove(id) {
                    b.finish_and_clear();
                }
                self.line(format!("  done     {id} ({seconds:.2}s)"));
            }
            Event::Failed {
                id, error, record, ..
            } => {
                self.total.inc(1);
                if let Some(b) = self.bars.remove(id) {
                    b.finish_and_clear();
                }
                self.line(format!(
                    "  FAILED   {id}: {error}\n           record: {}",
                    record.display()
                ));
            }
            Event::Skipped { id, because, .. } => {
                self.total.inc(1);
                self.line(format!("  skipped  {id} (input {because} failed)"));
            }
            Event::Warning { id, message } => {
                let who = id.as_deref().map(|i| format!("{i}: ")).unwrap_or_default();
                self.line(format!("warning: {who}{message}"));
            }
            Event::Planned {
                round,
                nodes,
                waiting,
            } => {
                self.total.inc_length(*nodes as u64);
                self.line(format!(
                    "  planned  round {round}: {nodes} more node(s) from finished results"
                ));
                for w in waiting {
                    self.line(format!("           waiting: {w}"));
                }
            }
            Event::Queued { .. } | Event::RunFinished { .. } => {}
        }
    }

    fn finish(&mut self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// `YYYYMMDDTHHMMSSZ` for file names, from the system clock (UTC).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
