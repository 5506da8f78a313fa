//! Statuses of runs, stages, jobs and steps, with the strings they are stored and shown as.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }
    };
}

status_enum!(
    /// Where a run is. `Interrupted` means the process running it died (crash, kill -9) and a
    /// later start found it unfinished.
    RunStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

status_enum!(
    StageStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

status_enum!(
    /// A job's status. A job with `allow_failure` that failed is `Failed` too; its stage still
    /// passes.
    JobStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Skipped => "skipped",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

status_enum!(
    StepStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Skipped => "skipped",
        Cancelled => "cancelled",
        Interrupted => "interrupted",
    }
);

impl RunStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// Did this job fail in a way that counts against its stage (before `allow_failure`)?
    pub fn is_failure(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::TimedOut)
    }
}

status_enum!(
    /// What started a run, as `when:` rules name it: `push` (a webhook or a poll saw a branch
    /// move), `tag` (a watched tag was pushed), `pull_request` (a forge said a pull or merge
    /// request was opened or updated), `schedule` (a project's schedule fired) or `manual` (a
    /// person or a script asked: `gantry trigger`, the API, `gantry run`).
    TriggerEvent {
        Push => "push",
        Tag => "tag",
        PullRequest => "pull_request",
        Schedule => "schedule",
        Manual => "manual",
    }
);

impl TriggerEvent {
    /// The event of a run recorded before runs kept theirs, from how it was queued (its
    /// `trigger`): webhooks and polls saw a push, and a run requeued after a crash was one;
    /// everything else was asked for.
    pub fn of_trigger(trigger: &str) -> Self {
        match trigger {
            "webhook" | "poll" | "requeue" => TriggerEvent::Push,
            _ => TriggerEvent::Manual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for e in TriggerEvent::ALL {
            assert_eq!(e.as_str().parse::<TriggerEvent>().unwrap(), *e);
        }
        assert!("bogus".parse::<StepStatus>().is_err());
    }
}
