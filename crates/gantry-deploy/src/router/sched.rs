//! How the kernel schedules the router's threads: `SCHED_BATCH` unless `GANTRY_ROUTER_SCHED`
//! says `normal`.
//!
//! A router thread does little per request and sleeps between requests, so it wakes tens of
//! thousands of times a second. Under the normal policy each of those wake-ups may preempt
//! whatever runs on that core — often the release that is writing the router's next answers —
//! and once the router is the fastest part of the chain this feeds itself: the release falls
//! behind, the router runs out of work and sleeps more, and wakes (preempting the release)
//! more. Measured on a 2-core machine under `wrk -c50` (bench/README.md): throughput swung
//! between 45k and 90k requests a second from one second to the next, the release waiting on
//! the run queue most of the time. A `SCHED_BATCH` thread gets the same share of the CPU but
//! does not preempt on wake-up: it runs when the running task's slice ends or it blocks. The
//! cost is in the tail when other work keeps every core busy (a woken router thread waits for a
//! slice to end); `GANTRY_ROUTER_SCHED=normal` gives the normal policy back.

/// The scheduling policy of the router's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_BATCH`: does not preempt on wake-up (the default).
    Batch,
    /// `SCHED_OTHER`, as any thread starts.
    Normal,
}

/// The environment variable that chooses the policy.
pub const VAR: &str = "GANTRY_ROUTER_SCHED";

impl Policy {
    /// The policy `GANTRY_ROUTER_SCHED` asks for: unset or empty is [`Policy::Batch`].
    pub fn from_env() -> Result<Self, String> {
        Self::parse(std::env::var(VAR).ok().as_deref())
    }

    /// The policy a value of `GANTRY_ROUTER_SCHED` names.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("batch") => Ok(Policy::Batch),
            Some("normal") => Ok(Policy::Normal),
            Some(other) => Err(format!(
                "{VAR}={other:?} is not a scheduling policy of the router: use `batch` (the default) or `normal`"
            )),
        }
    }

    /// Applies the policy to the calling thread (threads it starts inherit it).
    pub fn apply(self) -> std::io::Result<()> {
        if self == Policy::Normal {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is the
            // calling thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Policy;

    #[test]
    fn the_variable_names_a_policy_or_is_refused_saying_what_it_takes() {
        let cases: &[(Option<&str>, Result<Policy, &str>)] = &[
            (None, Ok(Policy::Batch)),
            (Some(""), Ok(Policy::Batch)),
            (Some("batch"), Ok(Policy::Batch)),
            (Some(" normal "), Ok(Policy::Normal)),
            (Some("normal"), Ok(Policy::Normal)),
            (Some("fifo"), Err("GANTRY_ROUTER_SCHED=\"fifo\" is not")),
            (Some("Normal"), Err("use `batch` (the default) or `normal`")),
        ];
        for (value, want) in cases {
            let got = Policy::parse(*value);
            match (want, &got) {
                (Ok(p), Ok(g)) => assert_eq!(p, g, "{value:?}"),
                (Err(text), Err(e)) => assert!(e.contains(text), "{value:?}: {e}"),
                _ => panic!("{value:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_thread_given_a_policy_runs_under_it() {
        for (policy, want) in [
            (Policy::Batch, libc::SCHED_BATCH),
            (Policy::Normal, libc::SCHED_OTHER),
        ] {
            let got = std::thread::spawn(move || {
                policy.apply().unwrap();
                // SAFETY: no arguments; reads the calling thread's policy.
                unsafe { libc::sched_getscheduler(0) }
            })
            .join()
            .unwrap();
            assert_eq!(got, want, "{policy:?}");
        }
    }
}
