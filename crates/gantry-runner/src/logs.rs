//! The log writer: one task per run that takes masked lines from every step, hands them to the
//! observer at once, and stores them in batches (one transaction per batch, flushed at least
//! every 100 ms), so chatty steps cost few writes and a crash loses at most the last moments.

use crate::events::{Observer, RunEvent};
use gantry_engine::ports::{Millis, NewLogLine, StateStore, Stream};
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

pub(crate) enum LogMsg {
    Line(LogLine),
    /// Store everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

const BATCH: usize = 500;

pub(crate) fn spawn_writer(
    run: i64,
    state: Arc<dyn StateStore>,
    observer: Arc<dyn Observer>,
) -> (mpsc::UnboundedSender<LogMsg>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<LogMsg>();
    let handle = tokio::spawn(async move {
        let mut batch: Vec<NewLogLine> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(LogMsg::Line(l)) => {
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
                            store(&*state, &mut batch).await;
                        }
                    }
                    Some(LogMsg::Flush(done)) => {
                        store(&*state, &mut batch).await;
                        let _ = done.send(());
                    }
                    None => {
                        store(&*state, &mut batch).await;
                        break;
                    }
                },
                _ = tick.tick() => store(&*state, &mut batch).await,
            }
        }
    });
    (tx, handle)
}

async fn store(state: &dyn StateStore, batch: &mut Vec<NewLogLine>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = state.append_logs(batch).await {
        tracing::error!(error = %format!("{e:#}"), lines = batch.len(), "could not store log lines");
    }
    batch.clear();
}
