//! Reaching QEMU's monitor: the five ways the command line offers, with error messages that name
//! the path or address and say what to check.

use crate::split::split_words;
use crate::Failure;
use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Where the monitor is, as the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Unix socket QEMU listens on.
    Unix(PathBuf),
    /// `HOST:PORT` QEMU listens on.
    Tcp(String),
    /// `BASE.in` / `BASE.out` FIFOs.
    Pipe(PathBuf),
    /// A Unix socket we listen on; QEMU connects (client mode).
    Listen(PathBuf),
    /// QEMU's command line; the monitor is on its stdio.
    Spawn(Vec<String>),
}

impl Target {
    /// The target the options name; `QMP_SOCKET` when none is given.
    pub(crate) fn from_args(a: &crate::cli::ConnectArgs) -> Result<Target, Failure> {
        if let Some(p) = &a.socket {
            return Ok(Target::Unix(p.clone()));
        }
        if let Some(t) = &a.tcp {
            return Ok(Target::Tcp(t.clone()));
        }
        if let Some(p) = &a.pipe {
            return Ok(Target::Pipe(p.clone()));
        }
        if let Some(p) = &a.listen {
            return Ok(Target::Listen(p.clone()));
        }
        if let Some(line) = &a.spawn {
            let words = split_words(line)
                .map_err(|e| Failure::usage(format!("--spawn: {e} in '{line}'")))?;
            if words.is_empty() {
                return Err(Failure::usage("--spawn needs QEMU's command line"));
            }
            return Ok(Target::Spawn(with_stdio_monitor(words)));
        }
        match std::env::var_os("QMP_SOCKET") {
            Some(p) if !p.is_empty() => Ok(Target::Unix(PathBuf::from(p))),
            _ => Err(Failure::usage(
                "no QMP monitor given: use --socket PATH (or set QMP_SOCKET), --tcp HOST:PORT, \
                 --pipe BASE, --listen PATH or --spawn 'QEMU COMMAND LINE'; `qmp demo` needs none",
            )),
        }
    }

    /// How error messages name the target.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Unix(p) => format!("the QMP socket {}", p.display()),
            Target::Tcp(a) => format!("the QMP address {a}"),
            Target::Pipe(b) => format!("the QMP pipes {}.in/.out", b.display()),
            Target::Listen(p) => format!("the QEMU that connected to {}", p.display()),
            Target::Spawn(w) => format!("the QEMU started as `{}`", w.join(" ")),
        }
    }
}

/// Adds a QMP monitor on stdio unless the command line already uses stdio somewhere.
pub(crate) fn with_stdio_monitor(mut words: Vec<String>) -> Vec<String> {
    if words.iter().skip(1).any(|w| w.contains("stdio")) {
        return words;
    }
    let program = Path::new(&words[0])
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if program.contains("storage-daemon") {
        words.extend(
            [
                "--chardev",
                "stdio,id=qmp-cli",
                "--monitor",
                "chardev=qmp-cli",
            ]
            .map(String::from),
        );
    } else {
        words.extend(["-qmp", "stdio"].map(String::from));
    }
    words
}

/// An open byte stream to the monitor.
pub(crate) struct Link {
    /// QEMU's output.
    pub(crate) reader: Box<dyn Read + Send>,
    /// QEMU's input.
    pub(crate) writer: Box<dyn Write + Send>,
    /// The QEMU we started, if any.
    pub(crate) child: Option<Child>,
    /// Ends the stream so that a blocked read returns (sockets only; a spawned QEMU is killed).
    pub(crate) shutdown: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Opens the stream, giving up at `deadline`.
pub(crate) fn open(target: &Target, deadline: Instant) -> Result<Link, Failure> {
    match target {
        Target::Unix(path) => {
            let s = UnixStream::connect(path).map_err(|e| unix_error(path, &e))?;
            socket_link(s.try_clone(), s.try_clone(), s, |s| {
                let _ = s.shutdown(Shutdown::Both);
            })
        }
        Target::Tcp(addr) => {
            let addrs: Vec<_> = addr
                .to_socket_addrs()
                .map_err(|e| {
                    Failure::connection(format!(
                        "cannot resolve the QMP address '{addr}': {e} (expected HOST:PORT, e.g. 127.0.0.1:4444)"
                    ))
                })?
                .collect();
            let mut last = None;
            for a in &addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                match TcpStream::connect_timeout(a, left.max(Duration::from_millis(1))) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return socket_link(s.try_clone(), s.try_clone(), s, |s| {
                            let _ = s.shutdown(Shutdown::Both);
                        });
                    }
                    Err(e) => last = Some(e),
                }
            }
            let e = last.unwrap_or_else(|| io::Error::other("no address"));
            let hint = match e.kind() {
                ErrorKind::ConnectionRefused => format!(
                    "nothing listens there: check that QEMU runs with -qmp tcp:{addr},server=on,wait=off"
                ),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    "check the host and port, and any firewall".to_owned()
                }
                _ => "check the host and port".to_owned(),
            };
            Err(Failure::connection(format!(
                "cannot connect to the QMP address {addr}: {e}; {hint}"
            )))
        }
        Target::Pipe(base) => open_pipes(base, deadline),
        Target::Listen(path) => accept(path, deadline),
        Target::Spawn(words) => spawn(words),
    }
}

fn socket_link<S: Read + Write + Send + Sync + 'static>(
    reader: io::Result<S>,
    writer: io::Result<S>,
    control: S,
    shutdown: fn(&S),
) -> Result<Link, Failure> {
    let (reader, writer) = match (reader, writer) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => {
            return Err(Failure::connection(format!("cannot use the socket: {e}")))
        }
    };
    Ok(Link {
        reader: Box::new(reader),
        writer: Box::new(writer),
        child: None,
        shutdown: Some(Box::new(move || shutdown(&control))),
    })
}

fn unix_error(path: &Path, e: &io::Error) -> Failure {
    let p = path.display();
    let hint = match e.kind() {
        ErrorKind::NotFound => format!(
            "check the path, and that QEMU is running with a QMP monitor there \
             (-qmp unix:{p},server=on,wait=off)"
        ),
        ErrorKind::ConnectionRefused => "nothing listens on it: QEMU may have exited and \
             left the socket file behind"
            .to_owned(),
        ErrorKind::PermissionDenied => {
            format!("check the socket's owner and permissions (ls -l {p})")
        }
        _ => "check that it is QEMU's QMP socket".to_owned(),
    };
    Failure::connection(format!("cannot connect to the QMP socket {p}: {e}; {hint}"))
}

/// Runs `f` on a thread and waits for it until `deadline` (opening a FIFO blocks until the
/// other side opens it).
fn with_deadline<T: Send + 'static>(
    deadline: Instant,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Option<io::Result<T>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

fn open_pipes(base: &Path, deadline: Instant) -> Result<Link, Failure> {
    let input = base.with_extension("in");
    let output = base.with_extension("out");
    for p in [&input, &output] {
        if !p.exists() {
            return Err(Failure::connection(format!(
                "{} does not exist: --pipe BASE needs the FIFOs BASE.in and BASE.out \
                 (mkfifo them, then start QEMU with -qmp pipe:{})",
                p.display(),
                base.display()
            )));
        }
    }
    let (i, o) = (input.clone(), output.clone());
    let opened = with_deadline(deadline, move || {
        let w = OpenOptions::new().write(true).open(&i)?;
        let r = OpenOptions::new().read(true).open(&o)?;
        Ok((r, w))
    });
    match opened {
        Some(Ok((r, w))) => Ok(Link {
            reader: Box::new(r),
            writer: Box::new(w),
            child: None,
            shutdown: None,
        }),
        Some(Err(e)) => Err(Failure::connection(format!(
            "cannot open the QMP pipes {}/.out: {e}",
            input.display()
        ))),
        None => Err(Failure::connection(format!(
            "timed out opening the QMP pipes {}/.out: is QEMU running with -qmp pipe:{}?",
            input.display(),
            base.display()
        ))),
    }
}

fn accept(path: &Path, deadline: Instant) -> Result<Link, Failure> {
    let p = path.display();
    let listener = UnixListener::bind(path).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrInUse {
            "; the file exists: remove it, or choose another path"
        } else {
            ""
        };
        Failure::connection(format!("cannot listen on {p}: {e}{hint}"))
    })?;
    // The socket file is ours: remove it whatever happens next.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(path);
    eprintln!("qmp: waiting for QEMU to connect to {p} (start it with -qmp unix:{p})");
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::connection(format!("cannot listen on {p}: {e}")))?;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                return socket_link(s.try_clone(), s.try_clone(), s, |s| {
                    let _ = s.shutdown(Shutdown::Both);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Failure::connection(format!(
                        "no QEMU connected to {p} in time: start QEMU with -qmp unix:{p} \
                         (no server=on), or raise --timeout"
                    )));
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Failure::connection(format!("accept on {p}: {e}"))),
        }
    }
}

/// The message for a QEMU program that is not installed.
pub(crate) fn install_hint(program: &str) -> String {
    format!(
        "{program} was not found on PATH. Install QEMU: on Debian or Ubuntu \
         `apt-get install qemu-utils` gives qemu-storage-daemon and \
         `apt-get install qemu-system-x86` gives qemu-system-x86_64; in a qmp-rs checkout, \
         `scripts/install-qemu` installs both"
    )
}

fn spawn(words: &[String]) -> Result<Link, Failure> {
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Failure::connection(install_hint(&words[0]))
            } else {
                Failure::connection(format!("cannot start {}: {e}", words[0]))
            }
        })?;
    let (Some(writer), Some(reader)) = (child.stdin.take(), child.stdout.take()) else {
        unreachable!("stdin and stdout were piped");
    };
    Ok(Link {
        reader: Box::new(reader),
        writer: Box::new(writer),
        child: Some(child),
        shutdown: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_stdio_monitor_is_added_when_missing() {
        assert_eq!(
            with_stdio_monitor(w(&["qemu-system-x86_64", "-M", "none"])),
            w(&["qemu-system-x86_64", "-M", "none", "-qmp", "stdio"])
        );
        assert_eq!(
            with_stdio_monitor(w(&["/usr/bin/qemu-storage-daemon"])),
            w(&[
                "/usr/bin/qemu-storage-daemon",
                "--chardev",
                "stdio,id=qmp-cli",
                "--monitor",
                "chardev=qmp-cli"
            ])
        );
        let given = w(&["qemu-system-x86_64", "-qmp", "stdio"]);
        assert_eq!(with_stdio_monitor(given.clone()), given);
    }

    #[test]
    fn a_missing_socket_is_named_with_a_hint() {
        let err = match open(
            &Target::Unix("/nonexistent/qmp.sock".into()),
            Instant::now() + Duration::from_secs(1),
        ) {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(err.code, 3);
        assert!(err.message.contains("/nonexistent/qmp.sock"), "{err}");
        assert!(err.message.contains("-qmp unix:"), "{err}");
    }
}
