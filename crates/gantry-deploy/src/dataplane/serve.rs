//! The data plane process (`gantry dataplane`): takes the directory's lock (or the sockets of
//! the data plane it replaces), brings back every router from `routes.json`, and answers the
//! server on the control socket until told to quit or replaced.

use super::{
    Answer, HandedRouter, MeasuredWire, Request, Routed, Routes, TableWire, backends, fds,
    info_path, lock_path, routes_path, socket_path,
};
use crate::router::Router;
use anyhow::{Context as _, anyhow, bail};
use gantry_engine::ports::now_millis;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

struct Plane {
    data: PathBuf,
    routers: Mutex<BTreeMap<String, Arc<Router>>>,
    /// Set once the sockets were handed to a successor: changes are refused from then on.
    handing_over: Mutex<bool>,
    /// Told when the process should end (quit, or replaced and drained).
    done: tokio::sync::watch::Sender<bool>,
}

/// Runs the data plane of `data` until it quits or is replaced. With `replace`, a data plane
/// serving the directory hands its sockets over first; without, a live one is an error.
pub async fn run(data: &Path, replace: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data.join("dataplane"))
        .with_context(|| format!("creating {}", data.join("dataplane").display()))?;
    let plane = Arc::new(Plane {
        data: data.to_path_buf(),
        routers: Mutex::new(BTreeMap::new()),
        handing_over: Mutex::new(false),
        done: tokio::sync::watch::channel(false).0,
    });
    let (lock, predecessor) = match try_lock(data)? {
        Some(lock) => (Some(lock), None),
        None if replace => (None, Some(take_over(&plane).await?)),
        None => bail!(
            "a data plane already serves {} ({}); `gantry dataplane --replace` takes over from it without dropping a connection",
            data.display(),
            holder(data)
        ),
    };
    if predecessor.is_none() {
        restore(&plane).await?;
    }
    // The control socket: bound beside, then renamed over the old one, so a client always
    // finds one that answers.
    let path = socket_path(data);
    let beside = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&beside);
    let listener =
        UnixListener::bind(&beside).with_context(|| format!("binding {}", beside.display()))?;
    // Only this user may connect (and so change routes), whatever the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", beside.display()))?;
    }
    std::fs::rename(&beside, &path).with_context(|| format!("placing {}", path.display()))?;
    let lock = match (lock, predecessor) {
        (Some(lock), _) => lock,
        (None, Some(mut old)) => {
            // The predecessor stops accepting and drains; its lock comes free when it exits.
            let _ = old.write_all(b"{\"op\":\"taken\"}\n");
            drop(old);
            wait_for_lock(data).await?
        }
        (None, None) => unreachable!("a lock or a predecessor"),
    };
    write_info(data)?;
    eprintln!(
        "gantry dataplane: pid {} serves {} ({} environments)",
        std::process::id(),
        data.display(),
        plane.routers.lock().expect("routers").len()
    );
    let mut done = plane.done.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(plane.clone(), stream));
                }
            }
            _ = done.changed() => break,
            _ = term.recv() => {
                eprintln!("gantry dataplane: SIGTERM: routers stop");
                quit(&plane);
                break;
            }
        }
    }
    drain(&plane).await;
    drop(lock);
    Ok(())
}

/// Asks the data plane of `data` to stop every router and exit. `Ok(false)` if none answers.
pub async fn stop(data: &Path) -> anyhow::Result<bool> {
    if UnixStream::connect(socket_path(data)).await.is_err() {
        return Ok(false);
    }
    let plane = super::DataPlane::new(data, None);
    plane.call(&Request::Quit).await.map(|_| true)
}

fn try_lock(data: &Path) -> anyhow::Result<Option<Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(data))
        .with_context(|| format!("opening {}", lock_path(data).display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow!("locking {}: {e}", lock_path(data).display())),
    }
}

async fn wait_for_lock(data: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    // Bounded: the predecessor drains for at most 10 s.
    for _ in 0..600 {
        if let Some(l) = try_lock(data)? {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the replaced data plane did not exit within 30 s")
}

/// The pid `dataplane.json` names: the data plane serving the directory.
fn info_pid(data: &Path) -> Option<u64> {
    std::fs::read_to_string(info_path(data))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["pid"].as_u64())
}

fn holder(data: &Path) -> String {
    info_pid(data).map_or("pid unknown".into(), |p| format!("pid {p}"))
}

fn write_info(data: &Path) -> anyhow::Result<()> {
    let path = info_path(data);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({
            "pid": std::process::id(),
            "socket": socket_path(data),
        })
        .to_string(),
    )?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Every router of `routes.json` listening again with its last table.
async fn restore(plane: &Plane) -> anyhow::Result<()> {
    let path = routes_path(&plane.data);
    let routes: Routes = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("reading {} (the last route tables)", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Routes::new(),
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    for (env, routed) in routes {
        let Some(addr) = routed.addr else { continue };
        match bind(addr).await {
            Ok(router) => {
                router.set(routed.table.build(&[]));
                plane.routers.lock().expect("routers").insert(env, router);
            }
            Err(e) => eprintln!("gantry dataplane: {env}: {e:#}"),
        }
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<Arc<Router>> {
    Router::start(addr).await
}

/// Written whole before a change is answered.
fn persist(plane: &Plane) -> anyhow::Result<()> {
    let routes: Routes = plane
        .routers
        .lock()
        .expect("routers")
        .iter()
        .map(|(env, r)| {
            (
                env.clone(),
                Routed {
                    addr: Some(r.addr),
                    table: TableWire::from(&*r.table()),
                },
            )
        })
        .collect();
    let path = routes_path(&plane.data);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&routes)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

async fn connection(plane: Arc<Plane>, stream: UnixStream) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        // A request is a few hundred bytes; a line past 1 MiB is not one.
        match (&mut stream).take(1 << 20).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => Answer::Refused {
                error: format!("not a request: {e}"),
            },
            Ok(Request::Handover) => {
                // The rest of this connection is the handover.
                hand_over(plane, stream.into_inner()).await;
                return;
            }
            Ok(req) => handle(&plane, req).await,
        };
        let text = serde_json::to_string(&answer).expect("answers serialize") + "\n";
        if stream.get_mut().write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn handle(plane: &Plane, req: Request) -> Answer {
    let changes = matches!(
        req,
        Request::Listen { .. } | Request::Set { .. } | Request::Close { .. } | Request::Quit
    );
    if changes && *plane.handing_over.lock().expect("handing over") {
        return Answer::Refused {
            error: "handing over to a new data plane; ask it".into(),
        };
    }
    match apply(plane, req).await {
        Ok(a) => a,
        Err(e) => Answer::Refused {
            error: format!("{e:#}"),
        },
    }
}

async fn apply(plane: &Plane, req: Request) -> anyhow::Result<Answer> {
    Ok(match req {
        Request::Hello => Answer::Hello {
            pid: std::process::id(),
            envs: plane
                .routers
                .lock()
                .expect("routers")
                .keys()
                .cloned()
                .collect(),
        },
        Request::Listen { env, addr } => {
            let current = plane.routers.lock().expect("routers").get(&env).cloned();
            let addr = match current {
                Some(r) if addr.port() == 0 || r.addr == addr => r.addr,
                current => {
                    let router = bind(addr).await?;
                    if let Some(old) = &current {
                        router.set((*old.table()).clone());
                        old.stop();
                    }
                    let at = router.addr;
                    plane.routers.lock().expect("routers").insert(env, router);
                    persist(plane)?;
                    at
                }
            };
            Answer::Listening { addr }
        }
        Request::Set { env, table } => {
            let router = plane
                .routers
                .lock()
                .expect("routers")
                .get(&env)
                .cloned()
                .ok_or_else(|| anyhow!("{env} has no router here"))?;
            let known = backends(&router.table());
            router.set(table.build(&known));
            persist(plane)?;
            Answer::Done
        }
        Request::Get { env } => {
            let router = plane.routers.lock().expect("routers").get(&env).cloned();
            Answer::Table {
                addr: router.as_ref().map(|r| r.addr),
                table: router
                    .map(|r| TableWire::from(&*r.table()))
                    .unwrap_or_default(),
            }
        }
        Request::Measure { env, since } => {
            let router = plane.routers.lock().expect("routers").get(&env).cloned();
            let now = now_millis();
            let measured = router
                .map(|r| {
                    backends(&r.table())
                        .iter()
                        .map(|b| {
                            let (total_requests, total_errors) = b.stats.totals();
                            MeasuredWire {
                                release: b.release,
                                addr: b.addr,
                                window: b.stats.window(since, now).into(),
                                total_requests,
                                total_errors,
                                inflight: b.inflight(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            Answer::Measured { backends: measured }
        }
        Request::Close { env } => {
            if let Some(r) = plane.routers.lock().expect("routers").remove(&env) {
                r.stop();
            }
            persist(plane)?;
            Answer::Done
        }
        Request::Quit => {
            quit(plane);
            Answer::Done
        }
        Request::Handover | Request::Taken => Answer::Refused {
            error: "not a request on its own".into(),
        },
    })
}

/// Every router stops; the process ends once they drained.
fn quit(plane: &Plane) {
    for r in plane.routers.lock().expect("routers").values() {
        r.stop();
    }
    if info_pid(&plane.data) == Some(u64::from(std::process::id())) {
        let _ = std::fs::remove_file(info_path(&plane.data));
        let _ = std::fs::remove_file(socket_path(&plane.data));
    }
    let _ = plane.done.send(true);
}

/// Waits (bounded: 10 s) until the routers' open connections have ended.
async fn drain(plane: &Plane) {
    let routers: Vec<Arc<Router>> = plane
        .routers
        .lock()
        .expect("routers")
        .values()
        .cloned()
        .collect();
    for _ in 0..200 {
        if routers.iter().all(|r| r.drained()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The old side of a handover: the routers' descriptions and sockets go to the successor;
/// once it says it took them, routers stop accepting and the process drains and ends. If the
/// successor goes away first, this data plane carries on as before.
async fn hand_over(plane: Arc<Plane>, stream: UnixStream) {
    *plane.handing_over.lock().expect("handing over") = true;
    let routers: Vec<(String, Arc<Router>)> = plane
        .routers
        .lock()
        .expect("routers")
        .iter()
        .map(|(e, r)| (e.clone(), r.clone()))
        .collect();
    let Ok(std_stream) = stream.into_std() else {
        *plane.handing_over.lock().expect("handing over") = false;
        return;
    };
    let sent =
        tokio::task::spawn_blocking(move || -> anyhow::Result<std::os::unix::net::UnixStream> {
            let mut s = std_stream;
            s.set_nonblocking(false)?;
            let described: Vec<HandedRouter> = routers
                .iter()
                .map(|(env, r)| HandedRouter {
                    env: env.clone(),
                    addr: r.addr,
                    table: TableWire::from(&*r.table()),
                    sockets: r.sockets().len(),
                })
                .collect();
            let line = serde_json::to_string(&Answer::Handover { routers: described })? + "\n";
            s.write_all(line.as_bytes())?;
            for (_, r) in &routers {
                fds::send(&s, r.sockets())?;
            }
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let taken = read_line(&mut s)?;
            if !taken.contains("taken") {
                bail!("the successor answered {taken:?}");
            }
            Ok(s)
        })
        .await;
    match sent {
        Ok(Ok(_)) => {
            eprintln!("gantry dataplane: handed over; draining");
            for r in plane.routers.lock().expect("routers").values() {
                r.retire();
            }
            let _ = plane.done.send(true);
        }
        Ok(Err(e)) => {
            eprintln!("gantry dataplane: the handover failed ({e:#}); serving on");
            *plane.handing_over.lock().expect("handing over") = false;
        }
        Err(_) => *plane.handing_over.lock().expect("handing over") = false,
    }
}

/// The new side: asks the data plane serving the directory for its routers and sockets and
/// serves on them. Returns the connection, on which it says when it took them.
async fn take_over(plane: &Plane) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let path = socket_path(&plane.data);
    let (s, handed) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to the data plane at {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"{\"op\":\"handover\"}\n")?;
        let line = read_line(&mut s)?;
        let Answer::Handover { routers } = serde_json::from_str(&line)
            .with_context(|| format!("reading the handover {line:?}"))?
        else {
            bail!("the data plane refused the handover: {line}");
        };
        let mut handed = Vec::new();
        for r in routers {
            let sockets = fds::receive(&s, r.sockets)?;
            handed.push((r, sockets));
        }
        Ok((s, handed))
    })
    .await??;
    let mut routers = plane.routers.lock().expect("routers");
    for (r, sockets) in handed {
        let router = Router::start_on(sockets, true)
            .with_context(|| format!("serving {} on the handed-over sockets", r.env))?;
        router.set(r.table.build(&[]));
        routers.insert(r.env, router);
    }
    drop(routers);
    persist(plane)?;
    Ok(s)
}

/// One line, read a byte at a time (a buffered read could swallow the byte that carries the
/// sockets).
fn read_line(s: &mut std::os::unix::net::UnixStream) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < 1 << 20 {
        if s.read(&mut b)? == 0 {
            bail!("the other data plane closed the connection");
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b[0]);
    }
    bail!("a line of over 1 MiB")
}
