//! The rules: each a set of patterns (case-insensitive substrings of a log line), the category
//! it means, one sentence in the user's terms, and the fix. This table is the whole of gantry's
//! knowledge of failures; users add their own rules next to it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Permission,
    RepositoryAccess,
    Expired,
    Conflict,
    Config,
    TestFailure,
    HealthCheck,
    CanaryAnalysis,
    Timeout,
    OutOfMemory,
    Network,
    DiskFull,
    Quota,
    CommandNotFound,
    Workspace,
    Unknown,
}

impl Category {
    pub const ALL: &'static [Category] = &[
        Category::Permission,
        Category::RepositoryAccess,
        Category::Expired,
        Category::Conflict,
        Category::Config,
        Category::TestFailure,
        Category::HealthCheck,
        Category::CanaryAnalysis,
        Category::Timeout,
        Category::OutOfMemory,
        Category::Network,
        Category::DiskFull,
        Category::Quota,
        Category::CommandNotFound,
        Category::Workspace,
        Category::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Permission => "permission",
            Category::RepositoryAccess => "repository-access",
            Category::Expired => "expired",
            Category::Conflict => "conflict",
            Category::Config => "config",
            Category::TestFailure => "test-failure",
            Category::HealthCheck => "health-check",
            Category::CanaryAnalysis => "canary-analysis",
            Category::Timeout => "timeout",
            Category::OutOfMemory => "out-of-memory",
            Category::Network => "network",
            Category::DiskFull => "disk-full",
            Category::Quota => "quota",
            Category::CommandNotFound => "command-not-found",
            Category::Workspace => "workspace",
            Category::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule. A line matches when it contains any of `patterns` (compared lowercase).
/// `weight` breaks ties between categories matched in the same run: the more specific wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub category: Category,
    pub patterns: Vec<String>,
    pub sentence: String,
    pub fix: String,
    pub weight: u8,
}

macro_rules! rules {
    ($( $id:literal => $cat:ident, $weight:literal, [$($p:literal),+ $(,)?], $sentence:literal, $fix:literal; )+) => {
        /// The built-in rules, most specific first.
        pub fn builtin() -> Vec<Rule> {
            vec![$(Rule {
                id: $id.to_string(),
                category: Category::$cat,
                patterns: vec![$($p.to_lowercase()),+],
                sentence: $sentence.to_string(),
                fix: $fix.to_string(),
                weight: $weight,
            }),+]
        }
    };
}

rules! {
    "aws-expired-token" => Expired, 90, ["ExpiredToken", "RequestExpired", "token has expired", "The security token included in the request is expired", "credentials have expired"],
        "The credentials the step used have expired.",
        "Refresh the credentials (a new session token, a rotated key) in gantry's secrets and re-run.";
    "certificate-expired" => Expired, 90, ["certificate has expired", "certificate expired", "CERT_HAS_EXPIRED", "x509: certificate has expired"],
        "A TLS certificate in the chain has expired.",
        "Renew the certificate (or fix the clock of the machine) and re-run.";
    "signed-url-expired" => Expired, 92, ["Request has expired", "signed URL has expired", "link has expired", "410 Gone"],
        "A signed URL the step used has expired.",
        "Ask for a fresh URL (gantry artifact share) with a longer --expires, or use the stable link form.";
    "no-such-key" => Expired, 80, ["NoSuchKey", "The specified key does not exist", "artifact was removed", "removed by retention"],
        "An object the step expected in the store is gone (removed by retention, or never uploaded).",
        "Pin what later runs need (gantry artifact pin) or rebuild it; check the retention settings.";
    "git-auth" => RepositoryAccess, 95, ["Authentication failed for", "could not read Username", "could not read Password", "terminal prompts disabled", "HTTP Basic: Access denied", "invalid username or password"],
        "gantry could not authenticate to the git repository.",
        "Give the server credentials for the repository (a deploy key or a token in git's credential helper) and check they have not expired.";
    "git-no-repo" => RepositoryAccess, 95, ["does not appear to be a git repository", "fatal: repository '", "Repository not found", "repository not found", "Could not read from remote repository", "not found: repository"],
        "The git repository could not be read: it does not exist at that address, or this machine may not see it.",
        "Check the project's `repo` address and that the machine's credentials can read it.";
    "git-host-key" => RepositoryAccess, 95, ["Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED"],
        "SSH refused the git host's key.",
        "Add the host's key to known_hosts (ssh-keyscan), after checking it is the real host.";
    "aws-access-denied" => Permission, 90, ["AccessDenied", "is not authorized to perform", "UnauthorizedOperation", "AccessDeniedException", "Forbidden (Service: ", "access to the resource is denied"],
        "The cloud role or user the step ran as lacks a permission it needed.",
        "Grant the missing action to the role (the evidence names it), or run with the role that has it.";
    "http-403" => Permission, 70, ["returned error: 403", "403 Forbidden", "HTTP 403", "status code 403", "status: 403"],
        "A server refused the step's request (HTTP 403): the credentials lack the right.",
        "Check the token or role the step sends, and what it is allowed to do.";
    "eacces" => Permission, 60, ["Permission denied", "EACCES", "Operation not permitted", "EPERM"],
        "The step was denied access to a file, device or command.",
        "Fix the file's permissions or ownership (an executable needs chmod +x), or run the step as a user allowed to.";
    "port-in-use" => Conflict, 90, ["Address already in use", "EADDRINUSE", "port is already allocated", "bind: address already in use"],
        "A port the step needed is already taken by another process.",
        "Stop what holds the port (ss -ltnp shows it), or let the program pick a free port.";
    "lock-held" => Conflict, 90, ["deployment lock is held", "lock is held by", "Unable to acquire lock", "could not obtain lock", "is locked by", "Error acquiring the state lock", "Could not get lock"],
        "Another deployment or process holds the lock this step needed.",
        "Wait for it to finish; if it died, release the lock after checking it is gone (dry-run first).";
    "already-exists" => Conflict, 80, ["AlreadyExists", "already exists", "ResourceConflictException", "EntityAlreadyExists", "ResourceInUseException", "File exists"],
        "Something the step tried to create already exists, often left by an earlier, interrupted deployment.",
        "Adopt or remove the leftover resource (dry-run the clean-up first), then re-run.";
    "stack-state" => Conflict, 90, ["UPDATE_ROLLBACK_FAILED", "ROLLBACK_COMPLETE state and can not be updated", "is in ROLLBACK_FAILED", "state and can not be updated", "is in UPDATE_IN_PROGRESS state"],
        "The deployment stack is in a state that cannot be updated, left by a failed earlier deployment.",
        "Continue or roll back the stack (continue-update-rollback), or delete and recreate it, then re-run.";
    "interrupted-state" => Conflict, 85, ["left by an interrupted", "was interrupted", "stopped before the run finished", "stale lock", "lock file exists"],
        "State left by an interrupted run is in the way.",
        "Clean the leftover state (dry-run first) and re-run.";
    "pipeline-invalid" => Config, 95, ["the pipeline file is invalid", "has no pipeline file"],
        "The pipeline file of this commit is invalid.",
        "Run `gantry check` on the file and fix the errors it lists.";
    "missing-secret" => Config, 95, ["is not set: export", "secret `"],
        "A secret the job needs is not configured on this gantry.",
        "Add the secret to gantry's environment or secrets file, then re-run.";
    "missing-env" => Config, 85, ["parameter not set", "unbound variable", "environment variable not found", "KeyError: '", "is not set", "must be set"],
        "A variable the step reads is not set.",
        "Set it in the pipeline's `env` (or as a secret), or pass it with `pass_env`.";
    "wrong-region" => Config, 90, ["the region '", "wrong region", "cannot reach Lambda in region", "AuthorizationHeaderMalformed", "PermanentRedirect", "must be addressed using the specified endpoint", "Could not connect to the endpoint URL", "location constraint is incompatible", "IllegalLocationConstraintException"],
        "The step talked to the wrong region or endpoint.",
        "Set the region/endpoint the resource lives in (AWS_REGION, the endpoint URL) for the step.";
    "test-failures" => TestFailure, 80, ["test result: FAILED", "--- FAIL:", "tests failed", "failures=", " failed, ", " failed in ", "AssertionError", "assertion failed", "panicked at", "<failure", "Test Suites: "],
        "Tests failed.",
        "Fix the failing tests listed below (or the code they test); the evidence shows the first failures.";
    "oom" => OutOfMemory, 95, ["Out of memory", "MemoryError", "Cannot allocate memory", "OOMKilled", "out of memory", "memory allocation of", "JavaScript heap out of memory", "std::bad_alloc", "OutOfMemoryError"],
        "The step ran out of memory.",
        "Give the job more memory, or make the step use less (fewer parallel jobs, smaller batches).";
    "aws-quota" => Quota, 92, ["CodeStorageExceededException", "LimitExceededException", "ServiceQuotaExceededException", "TooManyRequestsException", "Rate exceeded", "Throttling"],
        "An account limit of the cloud provider was reached (code storage, a quota, or a request rate).",
        "Delete what the account no longer needs (old Lambda versions: lower `keep`), ask for a higher quota, or retry later.";
    "data-dir-full" => DiskFull, 97, ["(the data directory)"],
        "Gantry's own data directory filled up: the run's log or state could not be stored (the steps themselves may have succeeded).",
        "Free space on the file system of gantry's data directory (old runs' artifacts: `gantry gc`; old logs: `[retention] logs`), then run again.";
    "artifact-store-full" => DiskFull, 97, ["(the artifact store)", "(the S3 artifact store's staging directory)"],
        "Gantry's artifact store filled up: an artifact could not be stored (the steps themselves succeeded).",
        "Free space on the file system of the artifact store (`gantry gc` removes what retention no longer keeps; lower `[retention]`), or move the store somewhere larger, then run again.";
    "disk-full" => DiskFull, 95, ["No space left on device", "ENOSPC", "disk full", "Disk quota exceeded"],
        "The disk (or a quota) filled up while the step wrote to it.",
        "Free space on the runner (old workspaces, caches, docker images) or write somewhere larger.";
    "connection-refused" => Network, 80, ["Connection refused", "ECONNREFUSED", "connection refused", "Failed to connect to"],
        "A service the step connects to is not accepting connections.",
        "Start the service (or wait for it) and check the host and port the step uses.";
    "dns" => Network, 85, ["Could not resolve host", "Name or service not known", "Temporary failure in name resolution", "getaddrinfo ENOTFOUND", "no such host", "nodename nor servname"],
        "A host name the step uses could not be resolved.",
        "Check the host name, and the runner's DNS and network access.";
    "net-timeout" => Network, 60, ["Connection timed out", "ETIMEDOUT", "Network is unreachable", "timed out after", "i/o timeout"],
        "A network request of the step timed out.",
        "Check that the runner can reach the service (firewall, proxy), and the service's health.";
    "command-not-found" => CommandNotFound, 90, ["command not found", ": not found", "No such file or directory (os error 2)", "executable file not found"],
        "The step called a program that is not installed on the runner.",
        "Install the program on the runner (or in the job's image), or fix its name or PATH.";
    "workspace" => Workspace, 94, ["preparing the workspace"],
        "Gantry could not prepare the job's workspace before its first step: the commit's files, an artifact it needs, or its cache.",
        "Read the error in the evidence: an artifact that is missing comes from an earlier stage or run (run that again); a work directory that is full or not writable needs space or permissions on the runner. Then run again.";
    "health" => HealthCheck, 90, ["health check failed", "failed its health check", "healthz returned"],
        "The new release failed its health checks.",
        "Look at the release's output (its crash, its logs) and the health check's answers below.";
    "release-crashed" => HealthCheck, 93, ["times while starting", "times during its bake"],
        "The new release kept crashing, while starting or right after traffic switched to it.",
        "Read its crash output in the evidence (it ran with the environment's variables, in its release directory); traffic stayed on, or went back to, the previous release.";
    "deploy-outdated" => Conflict, 90, ["refusing an outdated deploy"],
        "The deployment would have replaced the live release with an older one.",
        "To go back on purpose use `gantry rollback ENV`; to deploy the older build anyway, `gantry deploy --force`.";
    "no-deploy-server" => Config, 92, ["deploy stages are carried out by a gantry server"],
        "No gantry server was there to carry out the deploy stage.",
        "Start `gantry serve` in the repository (or set GANTRY_SERVER to a running server) and run again.";
    "canary" => CanaryAnalysis, 95, ["canary analysis failed", "canary aborted"],
        "The canary was aborted by analysis: its numbers were worse than allowed.",
        "Fix what made the canary worse (error rate or latency below), or adjust the thresholds if they are wrong.";
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_is_well_formed() {
        let rules = super::builtin();
        let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), rules.len(), "rule ids are unique");
        for r in &rules {
            assert!(
                !r.patterns.is_empty()
                    && r.patterns
                        .iter()
                        .all(|p| !p.trim().is_empty() && *p == p.to_lowercase()),
                "{}",
                r.id
            );
            assert!(r.sentence.ends_with('.') && !r.fix.is_empty(), "{}", r.id);
        }
    }
}
