//! Sending bytes together with file descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! QEMU's `getfd` and `add-fd` take the descriptors that arrive on the **same** `sendmsg` as the
//! command's bytes (QEMU keeps only the most recent batch, at most 16). This is the only `unsafe`
//! code of qmp-rs; everything else is safe Rust.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//! let sock = UnixStream::connect("/tmp/qmp.sock")?;
//! let file = std::fs::File::open("/dev/null")?;
//! let sent = qmp_fdpass::send_with_fds(sock.as_fd(), b"{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"f\"},\"id\":\"a1\"}\n", &[file.as_fd()])?;
//! # let _ = sent;
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(missing_docs)]
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Most descriptors sent with one message (QEMU's `TCP_MAX_FDS`).
pub const MAX_FDS: usize = 16;

/// Sends `bytes` on the connected Unix socket `socket` with `fds` attached (one `sendmsg`).
///
/// Returns how many bytes were sent, like `write`: a short count means the rest must be sent
/// **without** the descriptors (they travelled with the first byte). Fails with `InvalidInput` for
/// more than [`MAX_FDS`] descriptors or empty `bytes`, and with the OS error otherwise (e.g.
/// `WouldBlock` on a non-blocking socket; nothing was sent then).
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "more than 16 file descriptors",
        ));
    }
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(payload_len as u32) } as usize;
    // u64 elements keep the buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` writable, aligned bytes, enough for one header with
        // `payload_len` bytes of data (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA has
        // room for the descriptors copied into it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                raw.len(),
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` and `control`, both alive for this call; the socket and the
        // descriptors are borrowed, so they stay open until sendmsg returns. MSG_NOSIGNAL turns a
        // closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    /// Receives with recvmsg, returning the bytes and the descriptors (test side only).
    fn recv_with_fds(s: &UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut buf = [0u8; 256];
        let mut control = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: test helper; buffers outlive the call and sizes are passed correctly.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
            assert!(n >= 0);
            let mut fds = Vec::new();
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            (buf[..n as usize].to_vec(), fds)
        }
    }

    #[test]
    fn descriptor_arrives_with_the_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let path = std::env::temp_dir().join(format!("qmp-fdpass-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(b"hello").unwrap();
        let n = send_with_fds(a.as_fd(), b"cmd\n", &[file.as_fd()]).unwrap();
        assert_eq!(n, 4);
        let (bytes, fds) = recv_with_fds(&b);
        assert_eq!(bytes, b"cmd\n");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn limits_and_no_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let many: Vec<BorrowedFd<'_>> = (0..17).map(|_| f.as_fd()).collect();
        assert_eq!(
            send_with_fds(a.as_fd(), b"x", &many).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            send_with_fds(a.as_fd(), b"", &[f.as_fd()])
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(send_with_fds(a.as_fd(), b"plain", &[]).unwrap(), 5);
        let (bytes, fds) = recv_with_fds(&b);
        assert_eq!((bytes.as_slice(), fds.len()), (&b"plain"[..], 0));
        drop(b);
        assert!(send_with_fds(a.as_fd(), b"x", &[]).is_err());
    }
}

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
