//! Starting a step's shell without copying gantry: `clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn` does, instead of the `fork` that the standard library falls back to when a
//! child needs code of its own before `exec` (here: the parent-death signal). On this machine a
//! fork of gantry costs ~0.8 ms a step more than a spawn (bench/README.md), which is most of what
//! a step's overhead is over a shell loop's.
//!
//! The child shares gantry's memory until it calls `execve`, and the calling thread waits for
//! that. So the child does raw system calls only, on a stack of its own, with every signal
//! blocked until it has put each handler back to the default: it joins a process group of its
//! own, asks for SIGKILL when gantry dies, puts its three standard streams in place, enters the
//! step's directory and execs `/bin/sh`. Everything it needs (paths, arguments, environment as C
//! strings) is built beforehand by the parent; a failing call's errno is left in shared memory
//! for the parent to report. The process is then waited for through a pidfd (`CLONE_PIDFD`,
//! Linux 5.2): readable when it exits, then reaped with `waitpid` for that pid only.
//!
//! Lifecycle: [`spawn`] → [`Spawned::wait`] (cancel-safe, as often as wanted) → drop. Dropped
//! before it was reaped, the shell is killed (SIGKILL) and reaped in the background.

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;

/// The child's own stack, and the guard page below it.
const STACK: usize = 128 * 1024;
const PAGE: usize = 4096;

/// What the child needs, all of it built before the clone. The child writes only `failed`.
struct ChildPlan {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// Descriptors for 0, 1 and 2, all at 3 or above.
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// Which step failed (see [`STAGES`]) and its errno, when the child could not exec.
    failed: (usize, c_int),
}

/// The child's steps, for messages.
const STAGES: [&str; 5] = [
    "joining its own process group",
    "asking for a parent-death signal",
    "setting up its standard streams",
    "entering the step's directory",
    "starting /bin/sh",
];

/// A step's shell started by [`spawn`].
pub struct Spawned {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<Receiver>,
    pub stderr: Option<Receiver>,
}

/// Starts `/bin/sh` with `args` and exactly `env`, in `cwd`, stdin from /dev/null and stdout
/// and stderr to pipes, as the leader of a new process group that gets SIGKILL when gantry
/// dies. Must be called inside a tokio runtime.
pub fn spawn(args: &[&str], env: &[(String, String)], cwd: &Path) -> io::Result<Spawned> {
    let c = |s: &[u8], what: &str| {
        CString::new(s).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        })
    };
    let program = c(b"/bin/sh", "the program")?;
    let mut strings = vec![program.clone()];
    for a in args {
        strings.push(c(a.as_bytes(), "the step's command")?);
    }
    let argc = strings.len();
    for (k, v) in env {
        strings.push(c(format!("{k}={v}").as_bytes(), "an environment variable")?);
    }
    let cwd = c(cwd.as_os_str().as_encoded_bytes(), "the step's directory")?;
    let null = high_fd(std::fs::File::open("/dev/null")?.into())?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut argv: Vec<_> = strings[..argc].iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<_> = strings[argc..].iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut plan = ChildPlan {
        program,
        argv,
        envp,
        cwd,
        stdio: [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        parent: std::process::id() as libc::pid_t,
        failed: (0, 0),
    };
    let (pid, pidfd) = clone_child(&mut plan)?;
    drop((null, out_w, err_w));
    // The pid is ours until we reap it: no other waiter in gantry waits for any child.
    let mut spawned = Spawned {
        pid,
        pidfd: None,
        status: None,
        stdout: None,
        stderr: None,
    };
    if plan.failed.1 != 0 {
        spawned.reap_blocking();
        let (stage, errno) = plan.failed;
        let e = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(e.kind(), format!("{}: {e}", STAGES[stage])));
    }
    // SAFETY: an OwnedFd keeps its descriptor open, and the same, for as long as it lives.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    spawned.pidfd = Some(pidfd);
    spawned.stdout = Some(Receiver::from_owned_fd(out_r)?);
    spawned.stderr = Some(Receiver::from_owned_fd(err_r)?);
    Ok(spawned)
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the shell to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let pidfd = self.pidfd.as_ref().expect("a spawned child has a pidfd");
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(s) = try_reap(self.pid)? {
                self.status = Some(s);
                return Ok(s);
            }
            ready.clear_ready();
        }
    }

    fn reap_blocking(&mut self) {
        let mut status = 0;
        // SAFETY: waitpid on our own child's pid, with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if r == self.pid {
            self.status = Some(ExitStatus::from_raw(status));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: the pid is our unreaped child, so it cannot name another process.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        match (tokio::runtime::Handle::try_current(), pidfd) {
            (Ok(handle), Some(pidfd)) => {
                handle.spawn(async move {
                    while let Ok(mut ready) = pidfd.readable().await {
                        if !matches!(try_reap(pid), Ok(None)) {
                            break;
                        }
                        ready.clear_ready();
                    }
                });
            }
            _ => self.reap_blocking(),
        }
    }
}

/// The exit status when the child has exited (and is now reaped), `None` while it runs.
fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child's pid, with a valid status pointer.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        r if r == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_fd(r)?, high_fd(w)?))
}

/// `fd` moved to 3 or above (close-on-exec), so that putting the child's streams in place
/// with `dup2` can never overwrite one of them (gantry started with a standard stream closed).
fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on an open descriptor; the new one is owned by the OwnedFd made of it.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Clones the child on a stack of its own, all signals blocked in this thread meanwhile, and
/// returns once it has exec'd or failed. Returns its pid and pidfd.
fn clone_child(plan: &mut ChildPlan) -> io::Result<(libc::pid_t, OwnedFd)> {
    // SAFETY: an anonymous private mapping, unmapped below; its lowest page is made
    // inaccessible so that overflowing the child's stack faults instead of writing over
    // gantry's memory.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut pidfd: c_int = -1;
    // SAFETY: the guard page lies inside the mapping; the masks are valid sigset_t values;
    // clone runs `child` on the mapping's top (stacks grow down) with `plan`, which outlives
    // the child's use of it because CLONE_VFORK suspends this thread until the child has
    // exec'd or exited; CLONE_PIDFD writes the pidfd into `pidfd`.
    let pid = unsafe {
        libc::mprotect(stack, PAGE, libc::PROT_NONE);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = (stack as usize + STACK + PAGE) & !15;
        let pid = libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            plan as *mut ChildPlan as *mut c_void,
            &mut pidfd as *mut c_int,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::munmap(stack, STACK + PAGE);
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    // SAFETY: the kernel opened it for us (close-on-exec) and nobody else owns it.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child, until `execve`: raw system calls only (it shares gantry's memory).
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildPlan`, alive and untouched by the suspended parent
    // thread until this child execs or exits.
    let plan = unsafe { &mut *(arg as *mut ChildPlan) };
    unsafe {
        // Default dispositions before any signal is let in: a handler of gantry's must never
        // run here, on gantry's memory.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // SIGPIPE is ignored by Rust programs; a shell expects the default.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

        let fail = |plan: &mut ChildPlan, stage: usize| -> c_int {
            plan.failed = (stage, *libc::__errno_location());
            libc::_exit(127)
        };
        if libc::setpgid(0, 0) != 0 {
            return fail(plan, 0);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(plan, 1);
        }
        // gantry died before the signal was asked for: it will never come.
        if libc::getppid() != plan.parent {
            libc::_exit(137);
        }
        for (target, fd) in plan.stdio.into_iter().enumerate() {
            if libc::dup2(fd, target as c_int) < 0 {
                return fail(plan, 2);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            return fail(plan, 3);
        }
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        fail(plan, 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(r: &mut Option<Receiver>) -> String {
        let mut s = String::new();
        r.take().unwrap().read_to_string(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn the_shell_gets_exactly_its_environment_directory_streams_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("ONLY".to_string(), "this one".to_string())];
        let script = "echo \"$ONLY\" in $(pwd); env | wc -l; echo err >&2; \
                      test \"$(ps -o pgid= $$ | tr -d ' ')\" = $$ && read x; exit 3";
        let mut child = spawn(&["-c", script], &env, dir.path()).unwrap();
        let (out, err) = (
            read_all(&mut child.stdout).await,
            read_all(&mut child.stderr).await,
        );
        let status = child.wait().await.unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        // Two variables: its own, and the PWD the shell sets.
        assert_eq!(out, format!("this one in {}\n2\n", cwd.display()), "{err}");
        assert_eq!(err, "err\n");
        // Its own group leader, stdin at end of file: `read` fails, so `exit 3` is reached.
        assert_eq!(status.code(), Some(3));
        assert_eq!(child.wait().await.unwrap().code(), Some(3), "waiting again");
    }

    #[tokio::test]
    async fn what_cannot_start_says_why_and_leaves_no_process() {
        let env = [("BAD".to_string(), "a\0b".to_string())];
        let e = spawn(&["-c", "true"], &env, Path::new("/")).err().unwrap();
        assert!(e.to_string().contains("NUL byte"), "{e}");
        let e = spawn(&["-c", "true"], &[], Path::new("/nonexistent/dir"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("entering the step's directory"),
            "{e}"
        );
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed() {
        let child = spawn(&["-c", "sleep 30"], &[], Path::new("/")).unwrap();
        let pid = child.id() as libc::pid_t;
        drop(child);
        for _ in 0..200 {
            // Gone once reaped in the background: kill(pid, 0) fails with ESRCH.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the dropped child {pid} still runs");
    }
}
