//! The log writer: one task per run that takes masked lines from every step, hands them to the
//! observer at once, and stores them in batches (one transaction per batch, flushed at least
//! every 100 ms), so chatty steps cost few writes and a crash loses at most the last moments.
//! Lines on their way are counted ([`Backlog`]): past 8 MiB, steps are not read until the writer
//! catches up, so a log of any size is stored in bounded memory.

use crate::events::{Observer, RunEvent};
use crate::process::Backlog;
use gantry_engine::ports::{AttemptStore, Millis, NewLogLine, Stream};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct LogLine {
    pub step_id: i64,
    pub job: Arc<str>,
    pub step: Arc<str>,
    pub line: i64,
    pub at: Millis,
    pub stream: Stream,
    pub text: String,
}

enum LogMsg {
    Line(LogLine),
    /// Store everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

const BATCH: usize = 500;

/// What a job's log keeps unless configured otherwise: 32 MiB of output.
pub const DEFAULT_JOB_LOG_CAP: u64 = 32 * 1024 * 1024;

/// A job's allowance of log bytes, across its steps (and attempts' steps gantry runs itself).
/// Output past the cap is counted, not kept: the step keeps running, its log says where the
/// cap was reached and how much was left out, and memory and storage stay bounded by the cap.
#[derive(Debug)]
pub(crate) struct LogBudget {
    cap: u64,
    kept: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

/// What to do with a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Keep,
    /// The first line over the cap: keep a marker saying so instead.
    Reached,
    Drop,
}

impl LogBudget {
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            kept: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// Counts a line of `len` bytes (its newline included).
    pub fn admit(&mut self, len: usize) -> Admit {
        let len = len as u64 + 1;
        if self.dropped_lines == 0 && self.kept + len <= self.cap {
            self.kept += len;
            return Admit::Keep;
        }
        self.dropped_lines += 1;
        self.dropped_bytes += len;
        if self.dropped_lines == 1 {
            Admit::Reached
        } else {
            Admit::Drop
        }
    }

    /// (lines, bytes) left out so far.
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_lines, self.dropped_bytes)
    }

    /// The marker kept where the cap was reached.
    pub fn reached_text(&self) -> String {
        format!(
            "gantry: this job's log reached its cap of {}; later output is counted, not kept (the steps keep running)",
            human_bytes(self.cap)
        )
    }

    /// The line kept at the end of a step that had output left out (`before`: dropped() when
    /// the step started).
    pub fn summary(&self, step: &str, before: (u64, u64)) -> Option<String> {
        let (lines, bytes) = (self.dropped_lines - before.0, self.dropped_bytes - before.1);
        (lines > 0).then(|| {
            format!(
                "gantry: step `{step}`: {lines} lines ({bytes} bytes) of output not kept: the job's log cap is {}",
                human_bytes(self.cap)
            )
        })
    }
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Bytes of lines on their way to the log writer past which steps stop being read.
const BACKLOG_LIMIT: u64 = 8 * 1024 * 1024;

/// The way into a run's log writer, with the backlog it keeps of lines not yet taken.
#[derive(Clone)]
pub(crate) struct LogSender {
    tx: mpsc::UnboundedSender<LogMsg>,
    backlog: Arc<Backlog>,
}

impl LogSender {
    pub fn line(&self, line: LogLine) {
        let n = line.text.len() as u64;
        self.backlog.add(n);
        if self.tx.send(LogMsg::Line(line)).is_err() {
            self.backlog.take(n);
        }
    }

    /// Resolves once everything sent so far is stored.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.tx.send(LogMsg::Flush(done)).is_ok() {
            let _ = stored.await;
        }
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }
}

pub(crate) fn spawn_writer(
    run: i64,
    state: Arc<dyn AttemptStore>,
    observer: Arc<dyn Observer>,
) -> (LogSender, tokio::task::JoinHandle<Option<String>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<LogMsg>();
    let backlog = Arc::new(Backlog::new(BACKLOG_LIMIT));
    let sender = LogSender {
        tx,
        backlog: backlog.clone(),
    };
    let handle = tokio::spawn(async move {
        let mut batch: Vec<NewLogLine> = Vec::new();
        // The first failure to store lines (a full disk): later lines are not tried, so that
        // what space is left records the run's end; the run is failed with it.
        let mut failed: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(LogMsg::Line(l)) => {
                        backlog.take(l.text.len() as u64);
                        observer.event(&RunEvent::Log {
                            run,
                            job: l.job.to_string(),
                            step: l.step.to_string(),
                            line: l.line,
                            stream: l.stream,
                            text: l.text.clone(),
                        });
                        batch.push(NewLogLine { step_id: l.step_id, line: l.line, at: l.at, stream: l.stream, text: l.text });
                        if batch.len() >= BATCH {
                            store(&*state, &mut batch, &mut failed).await;
                        }
                    }
                    Some(LogMsg::Flush(done)) => {
                        store(&*state, &mut batch, &mut failed).await;
                        let _ = done.send(());
                    }
                    None => {
                        store(&*state, &mut batch, &mut failed).await;
                        break;
                    }
                },
                _ = tick.tick() => store(&*state, &mut batch, &mut failed).await,
            }
        }
        failed
    });
    (sender, handle)
}

async fn store(state: &dyn AttemptStore, batch: &mut Vec<NewLogLine>, failed: &mut Option<String>) {
    if batch.is_empty() || failed.is_some() {
        batch.clear();
        return;
    }
    if let Err(e) = state.append_logs(batch).await {
        let error = format!("{e:#}");
        tracing::error!(error = %error, lines = batch.len(), "could not store log lines; the run's later lines are not kept");
        *failed = Some(error);
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_keeps_lines_up_to_its_cap_then_counts_what_it_drops() {
        let mut b = LogBudget::new(20);
        // (line length, expected) — each line costs its length plus a newline.
        for (len, want) in [
            (9, Admit::Keep),    // 10
            (8, Admit::Keep),    // 19
            (1, Admit::Reached), // 21 > 20: the first over
            (0, Admit::Drop),    // a line that would fit is still dropped: no holes
            (100, Admit::Drop),
        ] {
            assert_eq!(b.admit(len), want, "{len}");
        }
        assert_eq!(b.dropped(), (3, 2 + 1 + 101));
        assert_eq!(
            b.summary("build", (1, 2)).as_deref(),
            Some(
                "gantry: step `build`: 2 lines (102 bytes) of output not kept: the job's log cap is 20 bytes"
            )
        );
        assert_eq!(b.summary("build", b.dropped()), None);
        assert!(
            LogBudget::new(32 * 1024 * 1024)
                .reached_text()
                .contains("cap of 32 MiB")
        );
    }
}
