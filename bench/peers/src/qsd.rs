//! One qemu-storage-daemon with many QMP monitors, one Unix socket each, in a temp dir; killed on
//! drop.

use qmp_testkit::TempDir;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    dir: TempDir,
    monitors: usize,
}

impl Daemon {
    /// Starts the daemon with `monitors` monitors (`m0`, `m1`, ...) and waits until each one
    /// negotiates with a probe, so that no contender meets QEMU's startup race (a connection made
    /// as a socket starts listening may be greeted twice or never answered).
    pub fn start(monitors: usize) -> Daemon {
        let dir = TempDir::new().expect("temp dir");
        let mut command = Command::new("qemu-storage-daemon");
        for k in 0..monitors {
            let path = dir.path().join(format!("m{k}.sock"));
            command
                .arg("--chardev")
                .arg(format!(
                    "socket,path={},server=on,wait=off,id=m{k}",
                    path.display()
                ))
                .arg("--monitor")
                .arg(format!("chardev=m{k}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-storage-daemon must be on PATH (scripts/install-qemu)");
        let daemon = Daemon {
            child,
            dir,
            monitors,
        };
        daemon.settle();
        daemon
    }

    /// The socket of monitor `k`.
    pub fn socket(&self, k: usize) -> PathBuf {
        assert!(k < self.monitors, "monitor {k} of {}", self.monitors);
        self.dir.path().join(format!("m{k}.sock"))
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Probes every monitor, a few dozen at a time (one QEMU main-loop turn serves them all).
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let next = std::sync::atomic::AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..self.monitors.min(50) {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= self.monitors {
                        return;
                    }
                    while !probe(&self.socket(k)) {
                        assert!(Instant::now() < deadline, "monitor m{k} never negotiated");
                        thread::sleep(Duration::from_millis(20));
                    }
                });
            }
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Greeting, `qmp_capabilities`, its reply; then the connection is closed.
fn probe(path: &std::path::Path) -> bool {
    let Ok(stream) = UnixStream::connect(path) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.contains("\"QMP\"") {
        return false;
    }
    if (&stream)
        .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"probe\"}\n")
        .is_err()
    {
        return false;
    }
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.contains("\"probe\"") => return line.contains("\"return\""),
            Ok(_) => {} // a second greeting
        }
    }
}
