//! Waves: a deploy stage deploys its artifact to each of its environments in order (regions,
//! say), each one's deployment baking before the next begins; the first wave that fails stops
//! the ones after it, which are never touched. Events in (a wave's deployment ended), commands
//! out (deploy the next wave, finish the stage); the runner carries the commands out.

use crate::run::DeployOutcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    /// The current wave's deployment ended: `Ok(message)` when it succeeded (and baked),
    /// `Err(message)` when it failed or could not be asked.
    WaveEnded(Result<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Deploy to this wave's environment.
    Deploy { environment: String },
    /// The stage is over: its outcome and one note line per wave that was tried.
    Finish {
        outcome: DeployOutcome,
        notes: Vec<String>,
    },
}

pub struct WavesMachine {
    environments: Vec<String>,
    next: usize,
    notes: Vec<String>,
    done: bool,
}

impl WavesMachine {
    pub fn new(environments: Vec<String>) -> Self {
        Self {
            environments,
            next: 0,
            notes: Vec::new(),
            done: false,
        }
    }

    pub fn on(&mut self, event: Event) -> Vec<Command> {
        if self.done {
            return Vec::new();
        }
        match event {
            Event::Start if self.next == 0 => self.advance(),
            Event::Start => Vec::new(),
            Event::WaveEnded(result) => {
                let Some(environment) = self.next.checked_sub(1).map(|i| &self.environments[i])
                else {
                    return Vec::new();
                };
                match result {
                    Ok(message) => {
                        self.notes.push(format!("{environment}: {message}"));
                        self.advance()
                    }
                    Err(message) => {
                        self.notes.push(format!("{environment}: {message}"));
                        self.finish(DeployOutcome::Failed)
                    }
                }
            }
        }
    }

    fn advance(&mut self) -> Vec<Command> {
        match self.environments.get(self.next) {
            Some(environment) => {
                self.next += 1;
                vec![Command::Deploy {
                    environment: environment.clone(),
                }]
            }
            None => self.finish(DeployOutcome::Succeeded),
        }
    }

    fn finish(&mut self, outcome: DeployOutcome) -> Vec<Command> {
        self.done = true;
        vec![Command::Finish {
            outcome,
            notes: std::mem::take(&mut self.notes),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(cmds: Vec<Command>) -> String {
        cmds.iter()
            .map(|c| match c {
                Command::Deploy { environment } => format!("deploy {environment}"),
                Command::Finish { outcome, notes } => {
                    format!("finish {outcome:?} [{}]", notes.join("; "))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check(envs: &[&str], events: Vec<Event>, expect: &str) {
        let mut m = WavesMachine::new(envs.iter().map(|e| e.to_string()).collect());
        let got: Vec<String> = events.into_iter().map(|e| render(m.on(e))).collect();
        assert_eq!(got.join(" | "), expect);
    }

    fn ok(m: &str) -> Event {
        Event::WaveEnded(Ok(m.into()))
    }
    fn failed(m: &str) -> Event {
        Event::WaveEnded(Err(m.into()))
    }

    #[test]
    fn waves_go_in_order() {
        check(
            &["eu", "us"],
            vec![Event::Start, ok("live"), ok("live")],
            "deploy eu | deploy us | finish Succeeded [eu: live; us: live]",
        );
    }

    #[test]
    fn the_first_failing_wave_stops_the_ones_after_it() {
        check(
            &["eu", "us", "ap"],
            vec![
                Event::Start,
                ok("live"),
                failed("deployment failed: unhealthy"),
                ok("late"),
            ],
            "deploy eu | deploy us | finish Failed [eu: live; us: deployment failed: unhealthy] | ",
        );
        check(
            &["eu", "us"],
            vec![Event::Start, failed("not deployed: locked")],
            "deploy eu | finish Failed [eu: not deployed: locked]",
        );
    }

    #[test]
    fn no_environments_is_nothing_to_do_and_a_second_start_changes_nothing() {
        check(&[], vec![Event::Start], "finish Succeeded []");
        check(&["eu"], vec![Event::Start, Event::Start], "deploy eu | ");
    }
}
