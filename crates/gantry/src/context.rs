//! Wiring: where the data directory is, and the adapters opened on it. Every subcommand that
//! touches state goes through [`Context::open`], which also recovers runs left unfinished by a
//! process that died.

use anyhow::{Context as _, Result};
use gantry_config::server::ArtifactsConfig;
use gantry_engine::ports::ArtifactStore;
use gantry_engine::ports::StateStore;
use gantry_runner::owner;
use gantry_store::Sharing;
use gantry_store::artifacts::{LocalArtifactStore, S3ArtifactStore, S3Location};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a data directory remembers the artifact store its server was configured with.
const STORE_FILE: &str = "artifact-store.json";

/// Where a data directory remembers the PostgreSQL database its state was moved to (by a
/// server's `state` or `gantry migrate-state`): its URL, private to the owner (it may hold a
/// password). Absent: the state is `gantry.db` in the directory.
pub const STATE_FILE: &str = "state-store.url";

pub struct Context {
    pub data_dir: PathBuf,
    pub state: Arc<dyn StateStore>,
    /// Runs this start found left unfinished by a dead process (now `interrupted`).
    pub recovered: Vec<i64>,
}

impl Context {
    /// Opens the data directory (creating it), its database, and recovers orphaned runs.
    pub async fn open(data_dir: PathBuf) -> Result<Self> {
        Self::open_prepared(Self::prepare(data_dir)?).await
    }

    /// The first half of [`Context::open`], with no database yet: the data directory made
    /// (private, writable, ignored by git) and its absolute path. `gantry run` starts its
    /// checkout into it before the database is open.
    pub fn prepare(data_dir: PathBuf) -> Result<PathBuf> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        // Absolute from here on: workspaces and git commands run in other directories.
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        // Only its owner may enter it: the database holds every project's logs and token
        // hashes, beside the admin token and the share key (which are 0600 themselves).
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data_dir)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            if mode != Some(0o700) {
                std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| unwritable(&data_dir, e))
                    .with_context(|| {
                        format!("making {} private (mode 0700)", data_dir.display())
                    })?;
            }
        }
        // Writable, or said so now: SQLite would only say "unable to open database file".
        let probe = data_dir.join(format!(".gantry-probe-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .map_err(|e| unwritable(&data_dir, e))?;
        let _ = std::fs::remove_file(&probe);
        // Keep the data directory out of the user's `git status`.
        let ignore = data_dir.join(".gitignore");
        if !ignore.exists() {
            let _ = std::fs::write(&ignore, "*\n");
        }
        Ok(data_dir)
    }

    /// The second half of [`Context::open`], on a directory [`Context::prepare`] made: its
    /// state where the directory says it is (see [`STATE_FILE`]).
    pub async fn open_prepared(data_dir: PathBuf) -> Result<Self> {
        let url = match remembered_state(&data_dir)? {
            Some(url) => url,
            None => sqlite_url(&data_dir),
        };
        Self::open_on(data_dir, &url, Sharing::Command).await
    }

    /// [`Context::open`] for a server whose configuration may name a PostgreSQL database
    /// (`state`): the first start with one remembers it in the data directory, so that CLI
    /// commands on the directory find the same state. Refused, with nothing changed: a
    /// directory whose own `gantry.db` holds history (it would be left behind: copy it with
    /// `gantry migrate-state` first), one that remembers another database, or one that
    /// remembers a database the configuration no longer names.
    pub async fn open_configured(data_dir: PathBuf, configured: Option<&str>) -> Result<Self> {
        let data_dir = Self::prepare(data_dir)?;
        let remembered = remembered_state(&data_dir)?;
        let shown = |u: &str| gantry_store::redact_url(u);
        let url = match (configured, remembered) {
            (None, None) => sqlite_url(&data_dir),
            (Some(c), Some(r)) if c == r => r,
            (Some(c), Some(r)) => anyhow::bail!(
                "this data directory keeps its state in {} ({}), but the configuration's `state` names {}: point `state` back at it, or copy the state there first",
                shown(&r),
                data_dir.join(STATE_FILE).display(),
                shown(c)
            ),
            (None, Some(r)) => anyhow::bail!(
                "this data directory keeps its state in {} ({}), but the configuration has no `state`: add it back (state = \"{}\")",
                shown(&r),
                data_dir.join(STATE_FILE).display(),
                shown(&r)
            ),
            (Some(c), None) => {
                let db = data_dir.join("gantry.db");
                if db.exists() && has_history(&sqlite_url(&data_dir)).await? {
                    anyhow::bail!(
                        "{} holds this data directory's history, and the configuration moves state to {}: copy it there first with `gantry migrate-state --data-dir {} --to {}`, or start with a new data directory",
                        db.display(),
                        shown(c),
                        data_dir.display(),
                        shown(c)
                    );
                }
                let ctx = Self::open_on(data_dir, c, Sharing::Server).await?;
                remember_state(&ctx.data_dir, c)?;
                return Ok(ctx);
            }
        };
        Self::open_on(data_dir, &url, Sharing::Server).await
    }

    /// The store at `url`, sized for `sharing` (a command's, or a server's).
    async fn open_on(data_dir: PathBuf, url: &str, sharing: Sharing) -> Result<Self> {
        let state = gantry_store::open_state_for(url, sharing).await?;
        let recovered =
            owner::recover(&*state, &lock_dir(&data_dir), &work_root(&data_dir)).await?;
        // Packing or downloading that a killed process left half done.
        gantry_store::artifacts::pack::clean_staging(
            &data_dir.join("artifacts/tmp"),
            std::time::Duration::from_secs(3600),
        );
        let _ = gantry_runner::prefetch::clean_stale(
            &work_root(&data_dir),
            std::time::Duration::from_secs(3600),
        );
        for id in &recovered {
            eprintln!(
                "note: run {id} was left unfinished by a process that stopped; marked interrupted"
            );
        }
        Ok(Self {
            data_dir,
            state,
            recovered,
        })
    }

    /// Opens the data directory of the current directory (see [`data_dir_here`]).
    pub async fn open_here(explicit: Option<PathBuf>) -> Result<Self> {
        Self::open(data_dir_here(explicit)?).await
    }

    /// The artifact store of this data directory: the S3 store the server was configured with
    /// (remembered in `artifact-store.json`), else `artifacts/` on local disk.
    pub fn artifacts(&self) -> Result<Arc<dyn ArtifactStore>> {
        let remembered = self.data_dir.join(STORE_FILE);
        let config = match std::fs::read_to_string(&remembered) {
            Ok(text) => Some(
                serde_json::from_str::<ArtifactsConfig>(&text)
                    .with_context(|| format!("reading {}", remembered.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", remembered.display()));
            }
        };
        self.open_artifacts(config.as_ref())
    }

    /// Opens the store `config` names (local disk when `None`) and remembers the choice in the
    /// data directory. Switching a data directory that keeps its artifacts in S3 back to local
    /// disk is refused: its recorded artifacts would all look missing.
    pub fn use_artifacts(
        &self,
        config: Option<&ArtifactsConfig>,
    ) -> Result<Arc<dyn ArtifactStore>> {
        let remembered = self.data_dir.join(STORE_FILE);
        match config {
            Some(c) => {
                let tmp = remembered.with_extension("json.tmp");
                std::fs::write(&tmp, serde_json::to_vec_pretty(c)?)
                    .and_then(|()| std::fs::rename(&tmp, &remembered))
                    .with_context(|| format!("writing {}", remembered.display()))?;
            }
            None if remembered.exists() => {
                let text = std::fs::read_to_string(&remembered).unwrap_or_default();
                let url = serde_json::from_str::<ArtifactsConfig>(&text)
                    .map(|c| c.url)
                    .unwrap_or_else(|_| "an S3 store".into());
                anyhow::bail!(
                    "this data directory keeps its artifacts in {url} ({}), but the configuration has no [artifacts] table; add it back (url = \"{url}\"), or delete that file to start over on local disk",
                    remembered.display()
                );
            }
            None => {}
        }
        self.open_artifacts(config)
    }

    fn open_artifacts(&self, config: Option<&ArtifactsConfig>) -> Result<Arc<dyn ArtifactStore>> {
        let Some(c) = config else {
            return Ok(Arc::new(LocalArtifactStore::new(
                self.data_dir.join("artifacts"),
            )?));
        };
        let mut location = S3Location::parse_url(&c.url)?;
        location.endpoint = c.endpoint.clone();
        location.region = c.region.clone();
        location.access_key_id = c.access_key_id.clone();
        if let Some(var) = &c.secret_access_key_env {
            location.secret_access_key = Some(gantry_model::SecretValue::new(
                std::env::var(var).with_context(|| {
                    format!("[artifacts] secret_access_key_env names `{var}`, which is not set")
                })?,
            ));
        }
        location.timeout = c.timeout_ms.map(std::time::Duration::from_millis);
        location.retries = c.retries.map(|n| n as usize);
        Ok(Arc::new(S3ArtifactStore::new(
            location,
            self.data_dir.join("artifacts/tmp"),
        )?))
    }

    pub fn work_root(&self) -> PathBuf {
        work_root(&self.data_dir)
    }

    pub fn lock_dir(&self) -> PathBuf {
        lock_dir(&self.data_dir)
    }
}

/// The URL of the data directory's own SQLite state.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gantry.db").display())
}

/// The database the data directory remembers its state in ([`STATE_FILE`]), if any.
pub fn remembered_state(data_dir: &Path) -> Result<Option<String>> {
    let path = data_dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => {
            anyhow::bail!(
                "{} is empty: write the state's URL in it, or delete it to use gantry.db",
                path.display()
            )
        }
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records `url` as where the data directory's state is: whole or not at all, mode 0600.
pub fn remember_state(data_dir: &Path, url: &str) -> Result<()> {
    let path = data_dir.join(STATE_FILE);
    let tmp = path.with_extension("url.tmp");
    // One a killed process left behind.
    let _ = std::fs::remove_file(&tmp);
    crate::server::keys::write_private(&tmp, url)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Whether the state at `url` records anything worth keeping: a run or a release.
pub async fn has_history(url: &str) -> Result<bool> {
    let state = gantry_store::open_state_for(url, Sharing::Command).await?;
    let runs = state
        .list_runs(&gantry_engine::ports::RunFilter {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let environments = state.environments().await?;
    state.close().await;
    Ok(!runs.is_empty() || !environments.is_empty())
}

/// The data directory for a command run in the current directory (see [`data_dir_for`]).
pub fn data_dir_here(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(data_dir_for(explicit, &cwd))
}

/// Where the owners' lock files of the data directory `data_dir` are.
pub fn lock_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("locks")
}

/// Where the workspaces of the data directory `data_dir` are made.
pub fn work_root(data_dir: &Path) -> PathBuf {
    data_dir.join("work")
}

/// The data directory: `--data-dir`/`GANTRY_HOME`, else `.gantry/` at the root of the repository
/// containing `start` (or in `start` itself when it is not in a repository).
pub fn data_dir_for(explicit: Option<PathBuf>, start: &Path) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    // Most commands run in a work tree: find its root without starting git.
    let root = gantry_git::Repo::work_tree_root(start)
        .or_else(|| gantry_git::Repo::open(start).and_then(|r| r.root()).ok())
        .unwrap_or_else(|| start.to_path_buf());
    root.join(".gantry")
}

/// The data directory cannot be written: what the system said, and what to do.
fn unwritable(dir: &std::path::Path, e: std::io::Error) -> anyhow::Error {
    let uid = nix::unistd::Uid::effective();
    anyhow::anyhow!(
        "the data directory {} is not writable by this user (uid {uid}): {e}; give it to this user (chown/chmod, or chattr -i if it was made immutable), or use another one with --data-dir (or GANTRY_HOME)",
        dir.display()
    )
}
