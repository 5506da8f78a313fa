//! Listening sockets passed between processes over a unix socket (`SCM_RIGHTS`): the old data
//! plane sends its routers' sockets, the new one receives them and serves on them.

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// At most this many sockets in one message (the kernel's limit is 253).
pub const MAX: usize = 64;

/// Sends `sockets` in one message (with one byte of data: a message must carry some).
pub fn send(stream: &UnixStream, sockets: &[std::net::TcpListener]) -> std::io::Result<()> {
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    if fds.len() > MAX {
        return Err(std::io::Error::other(format!(
            "{} sockets in one message (at most {MAX})",
            fds.len()
        )));
    }
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"s")],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

/// Receives one message's sockets (exactly `n` expected).
pub fn receive(stream: &UnixStream, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut out = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // Ours now: the kernel installed a new descriptor for this process.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                out.push(std::net::TcpListener::from(owned));
            }
        }
    }
    if out.len() != n {
        return Err(std::io::Error::other(format!(
            "expected {n} sockets, received {}",
            out.len()
        )));
    }
    Ok(out)
}
