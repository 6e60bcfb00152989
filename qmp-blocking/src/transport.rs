//! Opening connections: every form of QEMU's `-qmp` option, and whatever the caller already has.
//!
//! A connection is split in three: the read half (a socket's: read by whoever holds the read
//! role, `role.rs`; any other: owned by the reader thread), the write half (shared by callers
//! under a lock) and a way to wake a blocked read when the client closes.

use crate::role::ReadHalf;
use crate::writer::Writer;
use crate::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How to make a blocked read of the reader thread return when the client closes.
pub(crate) enum Waker {
    Unix(UnixStream),
    Tcp(TcpStream),
    /// Write a byte into QEMU's output FIFO ourselves (QEMU keeps it open, so it never ends).
    Pipe(PathBuf),
    /// Killing the child closes its stdout.
    Child,
    /// A caller-supplied reader: nothing can interrupt it; its thread ends when the read returns.
    None,
}

impl Waker {
    pub(crate) fn wake(&self) {
        match self {
            Waker::Unix(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Waker::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Waker::Pipe(out) => {
                // Read+write never blocks on a FIFO, even if our reader has already gone.
                if let Ok(mut f) = OpenOptions::new().read(true).write(true).open(out) {
                    let _ = f.write_all(b"\n");
                }
            }
            Waker::Child | Waker::None => {}
        }
    }

    /// Whether waking ends the reader thread for sure, so it can be joined.
    pub(crate) fn joinable(&self) -> bool {
        !matches!(self, Waker::None)
    }
}

/// The read half of an opened connection.
pub(crate) enum ReadSide {
    /// A socket: its reads can time out, so callers can read it too (`role.rs`).
    Socket(ReadHalf),
    /// A pipe, a child's stdout, a caller's reader: read by the reader thread alone.
    Stream(Box<dyn Read + Send>),
}

/// An opened connection, before the session starts.
pub(crate) struct Connection {
    pub(crate) reader: ReadSide,
    pub(crate) writer: Writer,
    pub(crate) waker: Waker,
    pub(crate) child: Option<Child>,
    pub(crate) stderr: Option<ChildStderr>,
    /// `unix:PATH`, `tcp:ADDR`, `stdio:PROGRAM`, `pipe:BASE`, `io`: for messages.
    pub(crate) label: String,
}

impl Connection {
    pub(crate) fn unix_stream(stream: UnixStream, label: String) -> Result<Self, Error> {
        let clone = |s: &UnixStream| {
            s.try_clone()
                .map_err(|e| Error::io(format!("setting up {label}"), e))
        };
        Ok(Connection {
            reader: ReadSide::Socket(ReadHalf::Unix(clone(&stream)?)),
            waker: Waker::Unix(clone(&stream)?),
            writer: Writer::Unix(stream),
            child: None,
            stderr: None,
            label,
        })
    }

    pub(crate) fn tcp_stream(stream: TcpStream, label: String) -> Result<Self, Error> {
        let clone = |s: &TcpStream| {
            s.try_clone()
                .map_err(|e| Error::io(format!("setting up {label}"), e))
        };
        // Commands are small and each is written whole: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            reader: ReadSide::Socket(ReadHalf::Tcp(clone(&stream)?)),
            waker: Waker::Tcp(clone(&stream)?),
            writer: Writer::Tcp(stream),
            child: None,
            stderr: None,
            label,
        })
    }

    pub(crate) fn unix(path: &Path) -> Result<Self, Error> {
        let label = format!("unix:{}", path.display());
        let stream = UnixStream::connect(path).map_err(|e| {
            Error::io(
                format!(
                    "connecting to {label} (is QEMU running with -qmp {label},server=on,wait=off?)"
                ),
                e,
            )
        })?;
        Self::unix_stream(stream, label)
    }

    pub(crate) fn tcp<A: ToSocketAddrs>(addr: A, timeout: Duration) -> Result<Self, Error> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolving the TCP address", e))?
            .collect();
        let label = match addrs.first() {
            Some(a) => format!("tcp:{a}"),
            None => "tcp:(no address)".to_string(),
        };
        let deadline = Instant::now() + timeout;
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for a in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                break;
            }
            match TcpStream::connect_timeout(a, left) {
                Ok(s) => return Self::tcp_stream(s, format!("tcp:{a}")),
                Err(e) => last = e,
            }
        }
        Err(Error::io(format!("connecting to {label}"), last))
    }

    pub(crate) fn accept(listener: &UnixListener, timeout: Duration) -> Result<Self, Error> {
        let label = match listener.local_addr().ok().and_then(|a| {
            a.as_pathname()
                .map(|p| format!("unix:{} (accept)", p.display()))
        }) {
            Some(l) => l,
            None => "unix (accept)".to_string(),
        };
        let ctx = |what: &str| format!("{what} on {label}");
        // std has no accept with a timeout: poll a non-blocking listener.
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(ctx("preparing to accept"), e))?;
        let deadline = Instant::now() + timeout;
        let result = loop {
            match listener.accept() {
                Ok((s, _)) => break Ok(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Err(Error::Timeout {
                            waiting_for: format!(
                                "QEMU to connect to {label} (started with -qmp unix:PATH without server=on?)"
                            ),
                            after: timeout,
                        });
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Error::io(ctx("accepting"), e)),
            }
        };
        let _ = listener.set_nonblocking(false);
        let stream = result?;
        stream
            .set_nonblocking(false)
            .map_err(|e| Error::io(ctx("accepting"), e))?;
        Self::unix_stream(stream, label)
    }

    pub(crate) fn spawn(mut command: Command) -> Result<Self, Error> {
        let label = format!("stdio:{}", command.get_program().to_string_lossy());
        qmp_proto::command_line::add_stdio_monitor(&mut command);
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting {label}"), e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io(
                format!("starting {label}"),
                io::Error::other("the child's stdio was not piped"),
            ));
        };
        let stderr = child.stderr.take();
        Ok(Connection {
            reader: ReadSide::Stream(Box::new(stdout)),
            writer: Writer::Other(Box::new(stdin)),
            waker: Waker::Child,
            child: Some(child),
            stderr,
            label,
        })
    }

    /// QEMU's `pipe:BASE`: QEMU reads `BASE.in` and writes `BASE.out`, FIFOs that must exist.
    pub(crate) fn pipe(base: &Path, timeout: Duration) -> Result<Self, Error> {
        let label = format!("pipe:{}", base.display());
        let with_ext = |ext: &str| {
            let mut p = base.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        let (input, output) = (with_ext(".in"), with_ext(".out"));
        // Opening a FIFO blocks until its other end is open: do it on a thread we can unblock.
        let (tx, rx) = mpsc::channel();
        let (i2, o2) = (input.clone(), output.clone());
        let opener = thread::spawn(move || {
            let out = File::open(&o2);
            let inp = match &out {
                Ok(_) => OpenOptions::new().write(true).open(&i2),
                Err(_) => Err(io::Error::other("not opened")),
            };
            let _ = tx.send((out, inp));
        });
        let opened = rx.recv_timeout(timeout);
        let (out, inp) = match opened {
            Ok(pair) => {
                let _ = opener.join();
                pair
            }
            Err(_) => {
                // Be the missing other end for a moment, so the opener's open returns.
                let _a = OpenOptions::new().read(true).write(true).open(&output);
                let _b = OpenOptions::new().read(true).write(true).open(&input);
                let _ = opener.join();
                return Err(Error::Timeout {
                    waiting_for: format!("QEMU to open the FIFOs of {label}"),
                    after: timeout,
                });
            }
        };
        let out = out.map_err(|e| Error::io(format!("opening {}", output.display()), e))?;
        let inp = inp.map_err(|e| Error::io(format!("opening {}", input.display()), e))?;
        Ok(Connection {
            reader: ReadSide::Stream(Box::new(out)),
            writer: Writer::Other(Box::new(inp)),
            waker: Waker::Pipe(output),
            child: None,
            stderr: None,
            label,
        })
    }

    pub(crate) fn io(reader: Box<dyn Read + Send>, writer: Box<dyn Write + Send>) -> Self {
        Connection {
            reader: ReadSide::Stream(reader),
            writer: Writer::Other(writer),
            waker: Waker::None,
            child: None,
            stderr: None,
            label: "io".to_string(),
        }
    }
}
