//! Listing runs and storing logs: every combination of the filters (project, branch, status,
//! before, limit) finds exactly the runs that meet all of those given, newest first; a batch of
//! log lines of any size is stored whole and in order.

use gantry_engine::ports::{NewLogLine, NewRun, RunFilter, StateStore, Stream};
use gantry_model::RunStatus;
use std::sync::Arc;

/// Twelve runs over two projects, two branches (and none) and three statuses; each run's id
/// with what it was made with, in the order made.
async fn runs(
    store: &Arc<dyn StateStore>,
) -> Vec<(i64, &'static str, Option<&'static str>, RunStatus)> {
    let projects = ["api", "web"];
    let branches = [Some("main"), Some("dev"), None];
    let statuses = [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed];
    let mut made = Vec::new();
    for n in 0..12 {
        let (project, branch, status) = (projects[n % 2], branches[n % 3], statuses[n / 4]);
        let ids = store
            .create_run(NewRun {
                project: project.into(),
                repo: format!("/srv/{project}"),
                commit: format!("{n:040}"),
                branch: branch.map(str::to_string),
                pipeline_file: "gantry.yml".into(),
                trigger: "cli".into(),
                event: "manual".into(),
                vars: Default::default(),
                status,
                created_at: n as i64,
                owner: None,
                stages: vec![],
            })
            .await
            .unwrap();
        made.push((ids.run, project, branch, status));
    }
    made
}

pub async fn run_filters_combine(store: Arc<dyn StateStore>) {
    let made = runs(&store).await;
    let middle = made[6].0;
    let projects = [None, Some("api"), Some("web"), Some("none-such")];
    let branches = [None, Some("main"), Some("dev")];
    let statuses = [None, Some(RunStatus::Running), Some(RunStatus::Failed)];
    let befores = [None, Some(middle)];
    let limits = [0, 2, 100];
    let mut cases = 0;
    for project in projects {
        for branch in branches {
            for status in statuses {
                for before in befores {
                    for limit in limits {
                        let filter = RunFilter {
                            project: project.map(str::to_string),
                            branch: branch.map(str::to_string),
                            status,
                            before,
                            limit,
                        };
                        let found: Vec<i64> = store
                            .list_runs(&filter)
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| r.id)
                            .collect();
                        let mut wanted: Vec<i64> = made
                            .iter()
                            .filter(|(id, p, b, s)| {
                                project.is_none_or(|want| want == *p)
                                    && branch.is_none_or(|want| Some(want) == *b)
                                    && status.is_none_or(|want| want == *s)
                                    && before.is_none_or(|want| *id < want)
                            })
                            .map(|(id, ..)| *id)
                            .rev()
                            .collect();
                        // A limit of 0 means the default page (50): more than there are here.
                        wanted.truncate(if limit > 0 { limit as usize } else { 50 });
                        assert_eq!(found, wanted, "{filter:?}");
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 3 * 3 * 2 * 3);
}

/// A batch of log lines of any size (one INSERT carries up to 128) is stored whole, in order,
/// each line with its own number, time, stream and text.
pub async fn log_batches_of_any_size_are_stored_whole_and_in_order(store: Arc<dyn StateStore>) {
    // A run with one job (and, at position 0, one step that printed nothing).
    let run = super::run_with_log(&store, 0, None).await;
    let job = store.run_detail(run).await.unwrap().unwrap().jobs[0].id;
    let mut wanted = Vec::new();
    let mut next = 1;
    for (index, size) in [1usize, 2, 127, 128, 129, 500, 1000]
        .into_iter()
        .enumerate()
    {
        let step = store
            .start_step(job, 1, index + 1, &format!("step {index}"), 2)
            .await
            .unwrap();
        let batch: Vec<NewLogLine> = (0..size)
            .map(|i| {
                let line = next + i as i64;
                NewLogLine {
                    step_id: step,
                    line,
                    at: 1_000 + line,
                    stream: if line % 3 == 0 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    text: match line % 4 {
                        0 => String::new(),
                        1 => format!("line {line} é ✓ '\"?$1"),
                        _ => format!("line {line}"),
                    },
                }
            })
            .collect();
        next += size as i64;
        store.append_logs(&batch).await.unwrap();
        wanted.extend(
            batch
                .into_iter()
                .map(|l| (format!("step {index}"), l.line, l.at, l.stream, l.text)),
        );
    }
    let got: Vec<_> = store
        .logs(run, None, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.step, l.line, l.at, l.stream, l.text))
        .collect();
    assert_eq!(got.len(), wanted.len());
    assert_eq!(got, wanted);
}
