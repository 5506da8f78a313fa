//! `gantry demo push --broken tests|health|errors|slow` and `gantry demo push --fix`: a commit
//! to the running demo's repository, then its run followed to the end and, when it failed,
//! what `gantry why` says. Each broken version is the example service with one bug, so that
//! the newcomer sees each guard stop it where it should: a failing test before any deploy; a
//! release that fails its health check before it gets any traffic; a canary answering 5xx, or
//! slow, aborted by analysis while 90% of users stay on the stable release.

use super::follow::Follower;
use super::{Demo, SERVICE};
use crate::cli::why::WhyArgs;
use crate::cli::{CliError, CliResult};
use anyhow::{Context, anyhow};
use gantry_git::Repo;
use gantry_model::RunStatus;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct PushArgs {
    /// Ship a version with this bug
    #[arg(
        long,
        value_enum,
        conflicts_with = "fix",
        required_unless_present = "fix"
    )]
    pub broken: Option<Broken>,
    /// Ship a good version again
    #[arg(long)]
    pub fix: bool,
    /// The running demo's directory (default: the one `gantry demo` uses)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Broken {
    /// A typo in the greeting: a unit test fails and nothing is deployed
    Tests,
    /// It reads a config file deployed environments do not have: it cannot start in staging,
    /// so its health check fails and it never gets traffic
    Health,
    /// It answers 500 to signed-in users: tests and staging pass (they sign nobody in), and
    /// production's canary analysis aborts it on its error rate
    Errors,
    /// It takes 400 ms for signed-in users: production's canary analysis aborts it on p99
    Slow,
}

/// The `/` route of the example service, which the broken versions change.
const ROOT: &str = "        elif self.path == \"/\":\n            self.answer(200, f\"hello from {version()}\\n\")\n";
const ARGS: &str = "    args = parser.parse_args(argv)\n";

impl Broken {
    fn name(self) -> &'static str {
        match self {
            Broken::Tests => "tests",
            Broken::Health => "health",
            Broken::Errors => "errors",
            Broken::Slow => "slow",
        }
    }

    /// What the commit does, and what should stop it.
    fn story(self) -> (&'static str, &'static str) {
        match self {
            Broken::Tests => (
                "a typo in the greeting (\"helo\")",
                "the unit tests fail, and the pipeline stops before any deploy",
            ),
            Broken::Health => (
                "it reads config/$APP_ENV.json, which no environment has",
                "it cannot start in staging: its health check fails, it never gets traffic, and production is not touched",
            ),
            Broken::Errors => (
                "it greets signed-in users by a profile that is not there (500 for them)",
                "tests and staging pass (they sign nobody in); production's canary answers 5xx to its users and analysis aborts it",
            ),
            Broken::Slow => (
                "it looks each signed-in user's profile up first (400 ms)",
                "production's canary is slow for its users and analysis aborts it on p99",
            ),
        }
    }

    /// The example service with this bug.
    fn apply(self, service: &str) -> anyhow::Result<String> {
        let (marker, with) = match self {
            Broken::Tests => (ROOT, ROOT.replace("hello from", "helo from")),
            Broken::Health => (
                ARGS,
                format!(
                    "{ARGS}    if os.environ.get(\"APP_ENV\"):  # new: per-environment settings\n        with open(os.path.join(HERE, \"config\", os.environ[\"APP_ENV\"] + \".json\"), encoding=\"utf-8\") as f:\n            f.read()\n"
                ),
            ),
            Broken::Errors => (
                ROOT,
                "        elif self.path == \"/\":\n            user = self.headers.get(\"X-User\")\n            if user:  # new: greet signed-in users by their profile's name\n                self.answer(200, f\"hello {PROFILES[user]['name']}, from {version()}\\n\")\n                return\n            self.answer(200, f\"hello from {version()}\\n\")\n".to_string(),
            ),
            Broken::Slow => (
                ROOT,
                "        elif self.path == \"/\":\n            if self.headers.get(\"X-User\"):  # new: look the signed-in user's profile up first\n                time.sleep(0.4)\n            self.answer(200, f\"hello from {version()}\\n\")\n".to_string(),
            ),
        };
        if !service.contains(marker) {
            return Err(anyhow!(
                "examples/hello/hello.py changed: `gantry demo push --broken {}` needs updating",
                self.name()
            ));
        }
        let mut out = service.replacen(marker, &with, 1);
        match self {
            Broken::Errors => out = out.replacen(
                "\n\nclass Handler",
                "\n\nPROFILES = {}  # new: to be filled by the profile service\n\n\nclass Handler",
                1,
            ),
            Broken::Slow => out = out.replacen("import sys\n", "import sys\nimport time\n", 1),
            _ => {}
        }
        Ok(out)
    }
}

/// The version after `pipeline`'s `APP_VERSION`: the next minor.
pub fn next_version(pipeline: &str) -> anyhow::Result<(String, String)> {
    let at = pipeline
        .find("APP_VERSION: \"")
        .context("gantry.yml has no APP_VERSION: \"…\"")?;
    let rest = &pipeline[at + "APP_VERSION: \"".len()..];
    let now = &rest[..rest.find('"').context("APP_VERSION is not closed")?];
    let parts: Vec<u64> = now
        .split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("APP_VERSION {now:?} is not MAJOR.MINOR.PATCH"))?;
    let [major, minor, _] = parts[..] else {
        return Err(anyhow!("APP_VERSION {now:?} is not MAJOR.MINOR.PATCH"));
    };
    Ok((now.to_string(), format!("{major}.{}.0", minor + 1)))
}

/// Writes the next version of the repository (`service` as its hello.py) and commits it.
pub fn commit_version(
    repo_dir: &Path,
    service: &str,
    why: &str,
) -> anyhow::Result<(String, String)> {
    let file = repo_dir.join("gantry.yml");
    let pipeline =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let (now, next) = next_version(&pipeline)?;
    std::fs::write(
        &file,
        pipeline.replace(
            &format!("APP_VERSION: \"{now}\""),
            &format!("APP_VERSION: \"{next}\""),
        ),
    )?;
    std::fs::write(repo_dir.join("hello.py"), service)?;
    let commit = Repo::open(repo_dir)?.commit_all(&format!("hello {next}: {why}"))?;
    Ok((next, commit))
}

pub async fn push(args: PushArgs) -> CliResult {
    let dir = super::dir_of(args.dir.as_deref())?;
    let demo = Demo::running_in(&dir)?;
    let started = Instant::now();
    let (service, why, expect) = match args.broken {
        Some(b) => {
            let (what, stops) = b.story();
            (b.apply(SERVICE)?, what, Some(stops))
        }
        None => (SERVICE.to_string(), "fixed", None),
    };
    let (version, commit) = commit_version(&demo.repo, &service, why)?;
    match expect {
        Some(stops) => println!(
            "committed hello {version} to {}: {why}\nexpected: {stops}",
            demo.repo.display()
        ),
        None => println!(
            "committed hello {version} to {}: the example service as it should be\nexpected: tests, staging, then production's canary promoted",
            demo.repo.display()
        ),
    }
    let client = crate::cli::remote::client(None, Some(demo.data.clone()))?;
    let mut f = Follower::new(client, started);
    f.skip_past().await?;
    let run = f.run_of(&commit).await?;
    println!("\nrun {run} (queued by the server's poll of the repository):");
    let status = f.follow(run).await?;
    println!(
        "\ncurl http://{}/  →  {}",
        demo.production,
        super::traffic::ask_as(&demo.production, None).await
    );
    let failed = status != RunStatus::Succeeded;
    if failed {
        println!("\ngantry why {run}");
        let why = crate::cli::why::why(
            WhyArgs {
                target: Some(run.to_string()),
                json: false,
                log: None,
                rules: None,
            },
            None,
            Some(demo.data.clone()),
        )
        .await;
        if let Err(e) = why
            && e.code != 1
        {
            return Err(e);
        }
    }
    match (expect.is_some(), failed) {
        (true, true) => {
            println!("\nstopped, as it should be: `gantry demo push --fix` ships a good version")
        }
        (false, false) => println!(
            "\nhello {version} is live in production (`gantry status production` in {})",
            demo.repo.display()
        ),
        (true, false) => {
            return Err(anyhow!("run {run} succeeded: the broken version {version} went through, which the demo did not expect").into());
        }
        (false, true) => {
            return Err(CliError::silent(1));
        }
    }
    Ok(())
}
