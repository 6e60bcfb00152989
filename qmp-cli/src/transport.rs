//! Reaching QEMU's monitor: the five ways the command line offers. qmp-blocking connects and
//! speaks QMP; this module picks the way, and turns what went wrong into a message that names the
//! path or address and says what to check.

use crate::monitor::Monitor;
use crate::split::split_words;
use crate::Failure;
use qmp_blocking::{Agent, Builder, Client, Error};
use std::io::{self, ErrorKind};
use std::net::ToSocketAddrs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// Adds a QMP monitor on stdio unless the command line already uses stdio somewhere (the rule
/// every client follows: `qmp_proto::command_line`).
pub(crate) fn with_stdio_monitor(mut words: Vec<String>) -> Vec<String> {
    let extra = qmp_blocking::qmp_proto::command_line::stdio_monitor_args(
        std::ffi::OsStr::new(&words[0]),
        words[1..].iter().map(std::ffi::OsStr::new),
    );
    words.extend(extra.iter().map(|a| a.to_string()));
    words
}

/// How a subcommand takes QEMU's events from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Events {
    /// From the client's queue, which keeps the latest 1024 unread (the oldest are dropped and
    /// reported): for commands that look at events now and then.
    Queued,
    /// Only through a handler (no queue), with room for 65,536 handler runs waiting: for commands
    /// that must see every event, in order, even while their output is slow.
    Handled,
}

/// Connects to `target` and negotiates capabilities; `timeout` bounds that and, later, each
/// reply.
pub(crate) fn connect(
    target: &Target,
    timeout: Duration,
    events: Events,
) -> Result<Monitor, Failure> {
    let builder = Client::builder().timeout(timeout).connect_timeout(timeout);
    let builder = match events {
        Events::Queued => builder.event_queue_capacity(1024),
        Events::Handled => builder.event_queue_capacity(0).handler_backlog(1 << 16),
    };
    let what = target.describe();
    let failed = |e: Error| handshake_error(target, &what, timeout, e);
    let client = match target {
        Target::Unix(path) => builder.connect_unix(path).map_err(|e| match e {
            Error::Io { source, .. } => unix_error(path, &source),
            e => failed(e),
        }),
        Target::Tcp(addr) => {
            let addrs: Vec<_> = addr
                .to_socket_addrs()
                .map_err(|e| {
                    Failure::connection(format!(
                        "cannot resolve the QMP address '{addr}': {e} (expected HOST:PORT, e.g. 127.0.0.1:4444)"
                    ))
                })?
                .collect();
            builder.connect_tcp(&addrs[..]).map_err(|e| match e {
                Error::Io { source, .. } => tcp_error(addr, &source),
                e => failed(e),
            })
        }
        Target::Pipe(base) => {
            for p in pipe_paths(base) {
                if !p.exists() {
                    return Err(Failure::connection(format!(
                        "{} does not exist: --pipe BASE needs the FIFOs BASE.in and BASE.out \
                         (mkfifo them, then start QEMU with -qmp pipe:{})",
                        p.display(),
                        base.display()
                    )));
                }
            }
            builder.connect_pipe(base).map_err(|e| match e {
                Error::Io { context, source } => Failure::connection(format!(
                    "cannot open the QMP pipes {}.in/.out: {context}: {source}",
                    base.display()
                )),
                e => failed(e),
            })
        }
        Target::Listen(path) => accept(builder, path, failed),
        Target::Spawn(words) => {
            let mut command = Command::new(&words[0]);
            // QEMU's messages (why it did not start, for one) go where ours go.
            command.args(&words[1..]).stderr(Stdio::inherit());
            builder.spawn(command).map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => {
                    Failure::connection(install_hint(&words[0]))
                }
                Error::Io { source, .. } => {
                    Failure::connection(format!("cannot start {}: {source}", words[0]))
                }
                e => failed(e),
            })
        }
    }?;
    Ok(Monitor::new(client, what, timeout))
}

/// Connects to a guest agent (`--qga`) at `target` (a Unix socket or TCP) and syncs with it;
/// `timeout` bounds that and, later, each reply. When nothing answers the sync, the failure has
/// exit status 4.
pub(crate) fn connect_agent(target: &Target, timeout: Duration) -> Result<Monitor, Failure> {
    let builder = Agent::builder().timeout(timeout).connect_timeout(timeout);
    let failed = |what: &str, e: Error| match e {
        Error::AgentNotResponding { .. } => Failure {
            code: 4,
            message: format!(
                "no answer to guest-sync-delimited from {what} within {timeout:?}: is qemu-ga \
                 running in the guest (on a virtio-serial port named org.qemu.guest_agent.0)? \
                 The socket accepts connections whether or not an agent is there"
            ),
        },
        Error::Disconnected { reason, .. } => Failure::connection(format!(
            "{what} closed the connection before the sync completed ({reason})"
        )),
        e => Failure::connection(format!("{what}: {e}")),
    };
    let (agent, what) = match target {
        Target::Unix(path) => {
            let what = format!("the guest agent socket {}", path.display());
            let agent = builder.connect_unix(path).map_err(|e| match e {
                Error::Io { source, .. } => unix_error(path, &source),
                e => failed(&what, e),
            })?;
            (agent, what)
        }
        Target::Tcp(addr) => {
            let what = format!("the guest agent at {addr}");
            let addrs: Vec<_> = addr
                .to_socket_addrs()
                .map_err(|e| {
                    Failure::connection(format!(
                        "cannot resolve the guest agent address '{addr}': {e} (expected HOST:PORT)"
                    ))
                })?
                .collect();
            let agent = builder.connect_tcp(&addrs[..]).map_err(|e| match e {
                Error::Io { source, .. } => tcp_error(addr, &source),
                e => failed(&what, e),
            })?;
            (agent, what)
        }
        _ => {
            return Err(Failure::usage(
                "--qga connects with --socket PATH or --tcp HOST:PORT (the host end of the \
                 agent's virtio-serial port, or qemu-ga -m unix-listen)",
            ))
        }
    };
    Ok(Monitor::agent(agent, what, timeout))
}

/// The message for a connection that opened but did not become a QMP session.
fn handshake_error(target: &Target, what: &str, timeout: Duration, e: Error) -> Failure {
    let message = match e {
        Error::Timeout { .. } => match target {
            Target::Pipe(base) => format!(
                "no QMP greeting from {what} within {timeout:?}: is QEMU running with -qmp pipe:{}? \
                 A pipe monitor greets only once, when QEMU starts, so only the first session \
                 over it works",
                base.display()
            ),
            Target::Listen(path) => format!(
                "no QEMU connected to {p} and greeted within {timeout:?}: start QEMU with \
                 -qmp unix:{p} (no server=on), or raise --timeout",
                p = path.display()
            ),
            Target::Spawn(_) => format!(
                "no QMP greeting from {what} within {timeout:?}: check that its monitor is on \
                 stdio (-qmp stdio), since qmp adds one only if the command line does not \
                 mention stdio"
            ),
            Target::Unix(_) | Target::Tcp(_) => format!(
                "no QMP greeting (or no reply to capability negotiation) from {what} within \
                 {timeout:?}: a QMP monitor serves one client at a time, so check that no other \
                 client is connected (and that this is a QMP monitor)"
            ),
        },
        Error::Exited { status, .. } => format!(
            "{what} exited ({status}) before QMP negotiation completed; see its messages above"
        ),
        Error::Disconnected { reason, .. } => {
            let detail = format!(": {reason}");
            match target {
                Target::Spawn(_) => format!(
                    "{what} closed its monitor before QMP negotiation completed{detail}; \
                     see its messages above"
                ),
                _ => format!(
                    "{what} closed the connection before QMP negotiation completed{detail}; \
                     check that it is a QMP monitor (-qmp, or -mon mode=control), not HMP"
                ),
            }
        }
        e => format!("{what}: {e}"),
    };
    Failure::connection(message)
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

fn tcp_error(addr: &str, e: &io::Error) -> Failure {
    let hint = match e.kind() {
        ErrorKind::ConnectionRefused => format!(
            "nothing listens there: check that QEMU runs with -qmp tcp:{addr},server=on,wait=off"
        ),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            "check the host and port, and any firewall".to_owned()
        }
        _ => "check the host and port".to_owned(),
    };
    Failure::connection(format!(
        "cannot connect to the QMP address {addr}: {e}; {hint}"
    ))
}

/// QEMU's `pipe:BASE` FIFOs, `BASE.in` and `BASE.out` (appended, as QEMU does).
fn pipe_paths(base: &Path) -> [PathBuf; 2] {
    [".in", ".out"].map(|ext| {
        let mut p = base.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    })
}

/// Listens on `path` and lets QEMU connect; `failed` words a failed handshake.
fn accept(
    builder: Builder,
    path: &Path,
    failed: impl FnOnce(Error) -> Failure,
) -> Result<Client, Failure> {
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
    builder.accept_unix(&listener).map_err(|e| match e {
        Error::Io { source, .. } => Failure::connection(format!("accept on {p}: {source}")),
        e => failed(e),
    })
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
                "stdio,id=qmp",
                "--monitor",
                "chardev=qmp"
            ])
        );
        let given = w(&["qemu-system-x86_64", "-qmp", "stdio"]);
        assert_eq!(with_stdio_monitor(given.clone()), given);
    }

    #[test]
    fn a_missing_socket_is_named_with_a_hint() {
        let err = match connect(
            &Target::Unix("/nonexistent/qmp.sock".into()),
            Duration::from_secs(1),
            Events::Handled,
        ) {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(err.code, 3);
        assert!(err.message.contains("/nonexistent/qmp.sock"), "{err}");
        assert!(err.message.contains("-qmp unix:"), "{err}");
    }
}
