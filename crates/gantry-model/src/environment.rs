//! An environment as the `environments:` block describes it: where releases run (the target),
//! how gantry knows a release is healthy, how many releases stay ready for rollback, and the
//! router in front of them. What happens to releases over time lives in `gantry-engine::release`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentSpec {
    pub name: String,
    /// Healthy releases kept ready for rollback, the live one included.
    pub keep: u32,
    /// `None`: described (so deploy stages may name it) but not deployable yet.
    pub target: Option<TargetSpec>,
    pub health: HealthSpec,
    pub router: Option<RouterSpec>,
    /// After traffic switched to a release: while this lasts, repeated crashes roll it back.
    pub bake: Duration,
    /// How long the previous release keeps running after a switch, so that rollback is only a
    /// router switch. `None`: until the next deployment.
    pub keep_previous_running: Option<Duration>,
    /// `None`: blue/green (all traffic switches once the new release is healthy).
    pub canary: Option<CanarySpec>,
}

/// `strategy: { canary: ... }`: a share of the users first, measured, then everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    pub users: Option<UserSpec>,
    pub steps: Vec<CanaryStep>,
    pub analysis: AnalysisSpec,
}

/// Who a user is, for sticky splitting, and who always gets the canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub key: UserKey,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryStep {
    /// Send `percent` of the users to the canary, then wait `pause` before analysis decides.
    Weight {
        percent: u32,
        pause: Option<Duration>,
    },
    /// Wait for `gantry promote`.
    Approval,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisSpec {
    /// Largest share of 5xx answers of the canary, in parts per million (0.01 = 10_000).
    pub max_error_rate_ppm: Option<u32>,
    pub max_p99_ms: Option<u64>,
    /// Fewer canary requests than this in a step's window: no verdict yet (the step waits).
    pub min_requests: u64,
    /// Judge the canary against stable in the same window: limits apply to how much worse the
    /// canary is than stable, so an incident already hurting stable does not block a fix.
    pub compare_to_stable: bool,
    /// How long a step may wait for enough requests after its pause before it fails.
    pub deadline: Duration,
}

pub const DEFAULT_MIN_REQUESTS: u64 = 50;
pub const DEFAULT_ANALYSIS_DEADLINE: Duration = Duration::from_secs(600);

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            max_error_rate_ppm: None,
            max_p99_ms: None,
            min_requests: DEFAULT_MIN_REQUESTS,
            compare_to_stable: false,
            deadline: DEFAULT_ANALYSIS_DEADLINE,
        }
    }
}

/// Where releases run. Each kind is carried out by a `gantry-deploy` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A supervised local service, started in the release's directory with `PORT` set.
    Process {
        command: String,
        env: Vec<(String, String)>,
    },
    /// The user's own scripts. `rollback` defaults to running `deploy` for the older release.
    Command {
        deploy: String,
        rollback: Option<String>,
        env: Vec<(String, String)>,
    },
    /// A container per release, from the image artifact, through the Docker Engine API; its
    /// `port` is published on 127.0.0.1 and the router sends users there once it is healthy.
    Docker(DockerTarget),
    /// An AWS Lambda function: each release uploads the zip and publishes a version, and an
    /// alias points at the live one (weighted during a canary).
    Lambda(LambdaTarget),
}

/// `target: { lambda: … }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaTarget {
    /// The function's name (or ARN).
    pub function: String,
    pub region: String,
    /// The alias users call (`live` by default).
    pub alias: String,
    /// Another endpoint than AWS's (LocalStack, moto); `AWS_ENDPOINT_URL` works too.
    pub endpoint: Option<String>,
    /// How to create the function when it does not exist; `None`: it must exist.
    pub create: Option<LambdaCreate>,
    pub memory_mb: Option<u32>,
    pub timeout_secs: Option<u32>,
    pub env: Vec<(String, String)>,
}

/// What creating a Lambda function needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaCreate {
    pub role: String,
    pub runtime: String,
    pub handler: String,
}

/// `target: { docker: … }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerTarget {
    /// The engine's address (`unix:///run/podman/podman.sock`, `tcp://127.0.0.1:2375`);
    /// `None`: `DOCKER_HOST`, else the usual sockets.
    pub host: Option<String>,
    /// The port the container listens on.
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// `host-path:container-path[:ro]` binds, or `volume:container-path`.
    pub volumes: Vec<String>,
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths (`0.5` = 500_000_000), as the engine counts them.
    pub nano_cpus: Option<u64>,
    /// Replaces the image's command.
    pub command: Option<Vec<String>>,
    /// Labels of the user's own, next to gantry's.
    pub labels: Vec<(String, String)>,
}

impl TargetSpec {
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSpec::Process { .. } => TargetKind::Process,
            TargetSpec::Command { .. } => TargetKind::Command,
            TargetSpec::Docker(_) => TargetKind::Docker,
            TargetSpec::Lambda(_) => TargetKind::Lambda,
        }
    }

    /// How users reach this target's releases.
    pub fn routing(&self) -> Routing {
        self.kind().routing()
    }
}

/// The kinds of target, with what each one promises the rest of gantry. A new kind is a variant
/// here, its keys and checks in `gantry-config/src/check/targets.rs`, and its adapter in
/// `gantry-deploy/src/targets/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Process,
    Command,
    Docker,
    Lambda,
}

impl TargetKind {
    /// The name the pipeline file uses.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Process => "process",
            TargetKind::Command => "command",
            TargetKind::Docker => "docker",
            TargetKind::Lambda => "lambda",
        }
    }

    pub fn routing(self) -> Routing {
        match self {
            TargetKind::Process | TargetKind::Docker => Routing::Router,
            TargetKind::Command | TargetKind::Lambda => Routing::Itself,
        }
    }

    /// Whether gantry keeps something of its own running for each live release (a supervised
    /// service), which it must start again after gantry itself restarted.
    pub fn supervised(self) -> bool {
        match self {
            TargetKind::Process => true,
            TargetKind::Command | TargetKind::Docker | TargetKind::Lambda => false,
        }
    }

    /// Whether its releases go on running while gantry is down (containers; services under
    /// their shims), so that a gantry starting again adopts them as they are instead of
    /// starting them again.
    pub fn outlives_gantry(self) -> bool {
        matches!(self, TargetKind::Docker | TargetKind::Process)
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How users reach a target's releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Routing {
    /// Through gantry's router: a release listens on an address, the router sends users there
    /// (blue/green switches, canary shares and measurements happen in the router), and a
    /// release's port can be health-checked over HTTP or TCP.
    Router,
    /// The target moves traffic itself (the user's deploy script, a weighted alias): making a
    /// release live and rolling back are the target's own acts, and there is no port to check.
    Itself,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: HealthCheck,
    /// A new release must pass within this time, or the deployment fails.
    pub timeout: Duration,
    /// Time between attempts.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// No check: started is healthy (the default of `command` targets).
    None,
    /// `GET path` on the release's port answers 2xx.
    Http { path: String },
    /// The release's port accepts a connection (the default of `process` targets).
    Tcp,
    /// A shell command run in the release directory exits 0.
    Command { command: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    /// `host:port` the environment's router listens on.
    pub listen: String,
}

pub const DEFAULT_KEEP: u32 = 3;
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_BAKE: Duration = Duration::from_secs(30);

impl EnvironmentSpec {
    /// An environment with nothing but a name (deploy stages may name it).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            keep: DEFAULT_KEEP,
            target: None,
            health: HealthSpec {
                check: HealthCheck::None,
                timeout: DEFAULT_HEALTH_TIMEOUT,
                interval: DEFAULT_HEALTH_INTERVAL,
            },
            router: None,
            bake: DEFAULT_BAKE,
            keep_previous_running: None,
            canary: None,
        }
    }
}
