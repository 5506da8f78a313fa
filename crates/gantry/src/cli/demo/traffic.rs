//! The demo's synthetic users: about [`RATE`] requests a second through production's router,
//! each from one of [`USERS`] users named by the `X-User` header (the header production's
//! canary splits on), so that the dashboard's charts and the canary's analysis have numbers.
//! At most [`IN_FLIGHT`] requests wait at once: a slow canary slows nobody's clock.
//!
//! Lifecycle: [`start`] spawns the sender; it runs until its handle is aborted.

use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const USERS: u32 = 100;
pub const RATE: u32 = 50;
const IN_FLIGHT: usize = 64;

pub fn start(router: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(_) => return,
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let url = format!("http://{router}/");
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            // A spread that is the same every run: user k is asked every USERS-th time, shuffled.
            let user = (n.wrapping_mul(37) % u64::from(USERS)) + 1;
            let request = http
                .get(&url)
                .header("X-User", format!("user-{user}"))
                .send();
            tokio::spawn(async move {
                if let Ok(r) = request.await {
                    let _ = r.bytes().await;
                }
                drop(slot);
            });
        }
    })
}

/// Which release answers `user` at `router`, and what it says.
pub async fn ask_as(router: &str, user: Option<&str>) -> String {
    let http = reqwest::Client::new();
    let mut request = http
        .get(format!("http://{router}/"))
        .timeout(Duration::from_secs(5));
    if let Some(u) = user {
        request = request.header("X-User", u);
    }
    match request.send().await {
        Ok(r) => {
            let release = r
                .headers()
                .get("x-gantry-release")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            format!("HTTP {status} from release {release}: {}", body.trim())
        }
        Err(e) => format!("no answer: {e}"),
    }
}
