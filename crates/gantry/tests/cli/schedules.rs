//! Schedules (issue 17): a seconds-level schedule fires a run of the branch's head at each tick,
//! once per tick, also across a restart of the server (the run's key holds the tick).

use crate::server_support::{Served, bare_repo};
use crate::support::wait_until;
use std::time::Duration;

fn scheduled(s: &Served) -> Vec<serde_json::Value> {
    s.runs()
        .into_iter()
        .filter(|r| r["event"] == "schedule")
        .collect()
}

/// The tick of each scheduled run, in seconds since the epoch.
fn ticks(runs: &[serde_json::Value]) -> Vec<i64> {
    runs.iter()
        .map(|r| {
            let at = r["vars"]["GANTRY_SCHEDULED_AT"].as_str().unwrap();
            at.parse::<jiff::Timestamp>().unwrap().as_second()
        })
        .collect()
}

#[test]
fn a_schedule_fires_once_per_tick_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let main = bare_repo(
        dir.path(),
        "stages:\n  - name: nightly\n    jobs:\n      - name: sweep\n        run: echo \"scheduled $GANTRY_EVENT at $GANTRY_SCHEDULED_AT on $GANTRY_BRANCH nightly=$NIGHTLY\"\n",
    );
    let config = "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\"]\npoll = \"0s\"\nschedules = [{ cron = \"*/2 * * * * *\", timezone = \"UTC\", vars = { NIGHTLY = \"yes\" } }]\n";
    let mut s = Served::start_in(dir, config);
    assert!(
        wait_until(Duration::from_secs(30), || scheduled(&s).len() >= 3),
        "{:?}\n{}",
        s.runs(),
        s.log()
    );
    let before = ticks(&scheduled(&s));
    s.stop();
    s.restart();
    let last = *before.iter().max().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || ticks(&scheduled(&s))
            .iter()
            .filter(|t| **t > last)
            .count()
            >= 2),
        "{:?}\n{}",
        ticks(&scheduled(&s)),
        s.log()
    );
    let runs = scheduled(&s);
    let mut all = ticks(&runs);
    all.sort();
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(all, unique, "a tick started two runs");
    assert!(all.iter().all(|t| t % 2 == 0), "{all:?}");
    // While a server runs, no tick is skipped.
    let mut first: Vec<i64> = before.clone();
    first.sort();
    assert!(first.windows(2).all(|w| w[1] - w[0] == 2), "{first:?}");
    for r in &runs {
        assert_eq!(r["branch"], "main");
        assert_eq!(r["commit"], main.as_str());
        assert_eq!(r["vars"]["NIGHTLY"], "yes");
        assert_eq!(r["vars"]["GANTRY_SCHEDULE"], "*/2 * * * * *");
    }
    let run = runs[0]["id"].as_i64().unwrap();
    assert_eq!(s.wait_finished(run), "succeeded");
    let log = s.api("GET", &format!("/api/runs/{run}/logs"), "").body;
    assert!(log.contains("scheduled schedule at 20"), "{log}");
    assert!(log.contains("on main nightly=yes"), "{log}");
}
