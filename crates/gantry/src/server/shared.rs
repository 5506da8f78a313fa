//! What a server on a database it shares with other servers looks for, every few seconds:
//! runs a server that died left running, cancels asked for through another server, and a
//! share-link key rotated through another server.

use super::Server;
use crate::context::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often it looks for runs left by a server that died.
pub const ORPHANS_EVERY: Duration = Duration::from_secs(5);
/// How often it looks for cancels of its runs asked for through another server.
pub const CANCELS_EVERY: Duration = Duration::from_secs(1);
/// How often it looks for a share-link key rotated elsewhere.
pub const SHARE_KEY_EVERY: Duration = Duration::from_secs(2);

pub fn spawn_watchers(
    server: &Arc<Server>,
    ctx: &Context,
    share_key: Arc<gantry_api::ShareKey>,
) -> Vec<JoinHandle<()>> {
    // Runs a dead server left running: marked interrupted once its lease has passed (and
    // queued again with `requeue_interrupted`).
    let orphans = {
        let server = server.clone();
        let (locks, work) = (ctx.lock_dir(), ctx.work_root());
        every(
            ORPHANS_EVERY,
            "looking for runs of stopped servers",
            move || {
                let (server, locks, work) = (server.clone(), locks.clone(), work.clone());
                async move {
                    let ids = gantry_runner::owner::recover(&*server.store, &locks, &work).await?;
                    for id in &ids {
                        eprintln!(
                            "gantry: run {id} was left unfinished by a server that stopped; marked interrupted"
                        );
                    }
                    if server.config.requeue_interrupted {
                        super::running::requeue(&server, &ids).await?;
                    }
                    Ok(())
                }
            },
        )
    };
    // Cancels asked for through another server: carried out here, as if asked here.
    let cancels = {
        let server = server.clone();
        every(CANCELS_EVERY, "reading cancels asked for", move || {
            let server = server.clone();
            async move {
                let ids = server.store.cancel_requests(&server.owner).await?;
                let running = server.running.lock().expect("running map");
                for tx in ids.iter().filter_map(|id| running.get(id)) {
                    let _ = tx.send(true);
                }
                Ok(())
            }
        })
    };
    // A rotation through another server reaches this one's links.
    let key = {
        let store = server.store.clone();
        every(SHARE_KEY_EVERY, "reading the share-link key", move || {
            let (store, share_key) = (store.clone(), share_key.clone());
            async move {
                if let Some(key) = store.stored_share_key().await?
                    && *key != *share_key.get()
                {
                    share_key.set(key);
                }
                Ok(())
            }
        })
    };
    vec![orphans, cancels, key]
}

/// Runs `look` every `period` (the first time one period from now) until aborted, warning
/// with `what` when it fails.
fn every<F, Fut>(period: Duration, what: &'static str, mut look: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = look().await {
                tracing::warn!(error = %format!("{e:#}"), "{what}");
            }
        }
    })
}
