//! Roles of API tokens. Each of viewer, deployer and admin includes the ones before it: an
//! admin can do what a deployer can, a deployer what a viewer can. A runner token stands
//! apart: it claims and runs jobs (`gantry runner`) and can do nothing else, nor can any other
//! token do what it does.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also triggers, cancels and re-runs runs (and, later, deploys and rolls back).
    Deployer,
    /// Also manages tokens.
    Admin,
    /// Claims jobs and reports on them; nothing else.
    Runner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
            Role::Runner => "runner",
        }
    }

    /// Does a token with this role satisfy a route that needs `needed`?
    pub fn allows(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Runner, needed) => needed == Role::Runner,
            (_, Role::Runner) => false,
            (have, needed) => have >= needed,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            "runner" => Ok(Role::Runner),
            other => Err(format!(
                "unknown role `{other}`: use viewer, deployer, admin or runner"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_include_lower_ones() {
        assert!(Role::Admin.allows(Role::Deployer));
        assert!(Role::Deployer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Deployer));
        assert!(!Role::Deployer.allows(Role::Admin));
    }

    #[test]
    fn a_runner_token_runs_jobs_and_nothing_else() {
        assert!(Role::Runner.allows(Role::Runner));
        for other in [Role::Viewer, Role::Deployer, Role::Admin] {
            assert!(!Role::Runner.allows(other), "runner allows {other}");
            assert!(!other.allows(Role::Runner), "{other} allows runner");
        }
    }
}
