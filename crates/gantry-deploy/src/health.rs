//! Health checks of a release: `http` (GET a path on the release's port, 2xx is healthy), `tcp`
//! (the port accepts a connection) or `command` (a shell command in the release directory exits
//! 0). [`check_once`] runs one and says what it saw (status codes, refused connections,
//! timeouts, output); when to check again and when to give up is the deployment machine's.

use gantry_engine::mask::Masker;
use gantry_model::HealthCheck;
use gantry_runner::process::{StepEnd, StepSpec, run_step};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One attempt's limit.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// What a check saw, for the release's events and `gantry why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ok: bool,
    pub text: String,
}

pub struct Probe<'a> {
    pub check: &'a HealthCheck,
    /// The release's address, for `http` and `tcp`.
    pub addr: Option<SocketAddr>,
    pub dir: &'a Path,
    pub env: &'a [(String, String)],
    /// What a `command` check runs in (the server's step sandbox, with `dir` the check's own),
    /// if anything; other checks start no process and ignore it.
    pub sandbox: Option<&'a gantry_runner::sandbox::Sandbox>,
}

/// Runs the check once.
pub async fn check_once(probe: &Probe<'_>) -> Observation {
    match probe.check {
        HealthCheck::None => Observation {
            ok: true,
            text: "no health check configured".into(),
        },
        HealthCheck::Tcp => {
            let Some(addr) = probe.addr else {
                return missing_port();
            };
            match tokio::time::timeout(ATTEMPT_LIMIT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Observation {
                    ok: true,
                    text: format!("tcp {addr}: accepted"),
                },
                Ok(Err(e)) => Observation {
                    ok: false,
                    text: format!("tcp {addr}: {e}"),
                },
                Err(_) => Observation {
                    ok: false,
                    text: format!("tcp {addr}: no answer within {}s", ATTEMPT_LIMIT.as_secs()),
                },
            }
        }
        HealthCheck::Http { path } => {
            let Some(addr) = probe.addr else {
                return missing_port();
            };
            match tokio::time::timeout(ATTEMPT_LIMIT, http_status(addr, path)).await {
                Ok(Ok(status)) => Observation {
                    ok: (200..300).contains(&status),
                    text: format!("GET {path} -> {status}"),
                },
                Ok(Err(e)) => Observation {
                    ok: false,
                    text: format!("GET {path}: {e}"),
                },
                Err(_) => Observation {
                    ok: false,
                    text: format!(
                        "GET {path}: no answer within {}s (timeout)",
                        ATTEMPT_LIMIT.as_secs()
                    ),
                },
            }
        }
        HealthCheck::Command { command } => {
            let grants = probe.sandbox.map(|s| s.grants(&[probe.dir]));
            let mut lines = Vec::new();
            let (_tx, mut cancel) = tokio::sync::watch::channel(false);
            let end = run_step(
                &StepSpec {
                    script: command,
                    cwd: probe.dir,
                    env: probe.env,
                    deadline: Some(Instant::now() + ATTEMPT_LIMIT),
                    kill_grace: Duration::from_secs(1),
                    sandbox: grants.as_ref(),
                    backlog: None,
                },
                &Masker::new(std::iter::empty::<&str>()),
                |_, line| {
                    if lines.len() < 5 {
                        lines.push(line)
                    }
                },
                &mut cancel,
            )
            .await;
            let said = if lines.is_empty() {
                String::new()
            } else {
                format!(": {}", lines.join(" | "))
            };
            match end {
                StepEnd::Exited(0) => Observation {
                    ok: true,
                    text: format!("`{command}` passed{said}"),
                },
                StepEnd::TimedOut => Observation {
                    ok: false,
                    text: format!(
                        "`{command}` timed out after {}s{said}",
                        ATTEMPT_LIMIT.as_secs()
                    ),
                },
                other => Observation {
                    ok: false,
                    text: format!(
                        "`{command}` failed (exit {}){said}",
                        other.exit_code().map_or("?".into(), |c| c.to_string())
                    ),
                },
            }
        }
    }
}

fn missing_port() -> Observation {
    Observation {
        ok: false,
        text: "this check needs the release's port, and the target has none".into(),
    }
}

/// `GET path` over HTTP/1.1 on `addr`; the status code.
async fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gantry-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    line.lines().next().unwrap_or("(connection closed)")
                ),
            )
        })?;
    Ok(status)
}
