//! The guest agent for tests: a real `qemu-ga` run on the host ([`QemuGa`]), restricted to
//! commands that cannot change the host, and a proxy that delays, swallows or injects around
//! its replies ([`AgentProxy`]).

use crate::{find_binary, in_ci, TempDir};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The only commands a test agent accepts (`--allow-rpcs`). None changes the host by itself:
/// no shutdown, suspend, time, password, freeze, vcpu, memory or ssh-key commands. `guest-exec`
/// and the file commands are there for the tests, which run only harmless programs
/// (`/bin/echo`, `/bin/cat`, `/bin/sh -c 'exit 3'`) and touch only files in their temp dir.
/// `guest-sync-delimited` must be allowed: a disabled one answers an id-less error, never a sync.
pub const SAFE_RPCS: &[&str] = &[
    "guest-sync-delimited",
    "guest-sync",
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-time",
    "guest-get-timezone",
    "guest-get-host-name",
    "guest-exec",
    "guest-exec-status",
    "guest-file-open",
    "guest-file-close",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
];

/// A real `qemu-ga -m unix-listen` on a socket in a temp dir, with only [`SAFE_RPCS`] enabled;
/// killed and reaped on drop.
#[derive(Debug)]
pub struct QemuGa {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl QemuGa {
    /// Starts the agent. Without `qemu-ga` on `PATH`: panics under CI, otherwise prints a loud
    /// skip notice naming `test` and returns `None`.
    pub fn start(test: &str) -> Option<QemuGa> {
        let binary = match find_binary("qemu-ga") {
            Some(b) => b,
            None if in_ci() => panic!(
                "qemu-ga is not installed and CI is set: run scripts/install-qemu (test {test})"
            ),
            None => {
                eprintln!(
                    "\n*** SKIPPED {test}: qemu-ga not found on PATH (scripts/install-qemu installs it) ***\n"
                );
                return None;
            }
        };
        let dir = TempDir::new().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let child = Command::new(binary)
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .arg(format!("--allow-rpcs={}", SAFE_RPCS.join(",")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-ga");
        let ga = QemuGa { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Listening once the socket accepts (the probe connection sends nothing).
        while UnixStream::connect(&ga.socket).is_err() {
            assert!(Instant::now() < deadline, "qemu-ga did not start listening");
            thread::sleep(Duration::from_millis(10));
        }
        Some(ga)
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temp dir (files for the file commands go here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an [`AgentProxy`] does when the client sends a line containing `trigger`.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Holds back the agent's output for `delay` after forwarding the line (a slow command: the
    /// reply comes late, the output behind it later still).
    Delay {
        /// Text of the line.
        trigger: String,
        /// How long.
        delay: Duration,
    },
    /// Does not forward the line: the agent never sees the command (a command that gets no
    /// reply, without running it).
    Swallow {
        /// Text of the line.
        trigger: String,
    },
    /// Writes `bytes` to the client before forwarding the line, so they come before anything
    /// the agent answers to it (stale data in the channel).
    Inject {
        /// Text of the line.
        trigger: String,
        /// What to write.
        bytes: Vec<u8>,
    },
}

impl Rule {
    fn trigger(&self) -> &str {
        match self {
            Rule::Delay { trigger, .. }
            | Rule::Swallow { trigger }
            | Rule::Inject { trigger, .. } => trigger,
        }
    }
}

/// A proxy in front of a real agent's socket, applying [`Rule`]s to the client's lines (each
/// rule fires on every line that contains its trigger). Serves one client; stops when either
/// side closes or when dropped.
#[derive(Debug)]
pub struct AgentProxy {
    path: PathBuf,
    sockets: Arc<Mutex<Vec<UnixStream>>>,
    _dir: TempDir,
}

impl AgentProxy {
    /// Listens on a fresh socket and connects its first client to `upstream`.
    pub fn start(upstream: &Path, rules: Vec<Rule>) -> AgentProxy {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&path).expect("bind agent proxy");
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (upstream, keep) = (upstream.to_path_buf(), sockets.clone());
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let Ok(agent) = UnixStream::connect(&upstream) else {
                return;
            };
            let (Ok(client_w), Ok(agent_w)) = (client.try_clone(), agent.try_clone()) else {
                return;
            };
            keep.lock().unwrap_or_else(PoisonError::into_inner).extend(
                [client.try_clone(), agent.try_clone()]
                    .into_iter()
                    .flatten(),
            );
            let client_w = Arc::new(Mutex::new(client_w));
            let hold = Arc::new(Mutex::new(None::<Instant>));
            let (w, h) = (client_w.clone(), hold.clone());
            thread::spawn(move || forward_lines(client, agent_w, &rules, &w, &h));
            forward_output(agent, &client_w, &hold);
        });
        AgentProxy {
            path,
            sockets,
            _dir: dir,
        }
    }

    /// The socket to connect to instead of the agent's.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn forward_lines(
    mut client: UnixStream,
    mut agent: UnixStream,
    rules: &[Rule],
    client_w: &Mutex<UnixStream>,
    hold: &Mutex<Option<Instant>>,
) {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match client.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            line.push(b);
            if b != b'\n' {
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let mut forward = true;
            for rule in rules.iter().filter(|r| text.contains(r.trigger())) {
                match rule {
                    Rule::Delay { delay, .. } => {
                        *hold.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Instant::now() + *delay)
                    }
                    Rule::Swallow { .. } => forward = false,
                    Rule::Inject { bytes, .. } => {
                        let mut w = client_w.lock().unwrap_or_else(PoisonError::into_inner);
                        let _ = w.write_all(bytes);
                    }
                }
            }
            if forward && agent.write_all(&line).is_err() {
                return;
            }
            line.clear();
        }
    }
    let _ = agent.shutdown(std::net::Shutdown::Write);
}

fn forward_output(
    mut agent: UnixStream,
    client_w: &Mutex<UnixStream>,
    hold: &Mutex<Option<Instant>>,
) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match agent.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let until = *hold.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = until {
            let now = Instant::now();
            if t > now {
                thread::sleep(t - now);
            }
        }
        let mut w = client_w.lock().unwrap_or_else(PoisonError::into_inner);
        if w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client_w
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .shutdown(std::net::Shutdown::Write);
}

/// A TCP listener on 127.0.0.1 that forwards its first connection to the Unix socket at
/// `upstream` (qemu-ga serves no TCP; this stands in for a TCP chardev). When the TCP client
/// leaves, the Unix connection is shut down, freeing the agent for its next client.
pub fn tcp_forwarder(upstream: &Path) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let upstream = upstream.to_path_buf();
    thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else {
            return;
        };
        let Ok(unix) = UnixStream::connect(&upstream) else {
            return;
        };
        let (Ok(mut t2), Ok(mut u2)) = (tcp.try_clone(), unix.try_clone()) else {
            return;
        };
        let (mut tcp, mut unix) = (tcp, unix);
        thread::spawn(move || {
            let _ = std::io::copy(&mut t2, &mut u2);
            let _ = u2.shutdown(std::net::Shutdown::Both);
        });
        let _ = std::io::copy(&mut unix, &mut tcp);
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    });
    addr
}
