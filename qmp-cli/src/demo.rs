//! `qmp demo`: starts a qemu-storage-daemon of its own and walks through QMP, printing each step
//! and the `qmp` command line that does the same.

use crate::monitor::Recv;
use crate::output::Style;
use crate::transport::{self, install_hint, Events, Target};
use crate::Failure;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const DAEMON: &str = "qemu-storage-daemon";

/// The daemon, stopped on drop (it has normally quit by then).
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The socket directory, removed on drop (declared before the daemon, so dropped after it).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn step(n: usize, title: &str) {
    outln!("\n[{n}/7] {title}");
}

fn shell_line(rest: &str) {
    outln!("  $ qmp -s $SOCK {rest}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect::<String>()
}

fn obj(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Runs the tour. `timeout` bounds the start of the daemon and each reply.
pub(crate) fn run(timeout: Duration) -> Result<u8, Failure> {
    if find_on_path(DAEMON).is_none() {
        return Err(Failure::connection(format!(
            "the demo needs {}",
            install_hint(DAEMON)
        )));
    }
    let dir = std::env::temp_dir().join(format!("qmp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::connection(format!("cannot create {}: {e}", dir.display())))?;
    let dir = Dir(dir);
    let socket = dir.0.join("qmp.sock");
    let chardev = format!("socket,path={},server=on,wait=off,id=m0", socket.display());
    outln!("qmp demo: a short tour of QMP, the QEMU Machine Protocol, against a");
    outln!("qemu-storage-daemon (QEMU's block layer without a VM) started just for it.");
    step(1, "Start QEMU with a QMP monitor on a Unix socket");
    outln!("  $ SOCK={}", socket.display());
    outln!(
        "  $ {DAEMON} --chardev socket,path=$SOCK,server=on,wait=off,id=m0 --monitor chardev=m0"
    );
    let child = Command::new(DAEMON)
        .args(["--chardev", &chardev, "--monitor", "chardev=m0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::connection(format!("cannot start {DAEMON}: {e}")))?;
    let mut daemon = Daemon { child };
    // The daemon's messages matter only if it fails to start; its warnings would clutter the tour.
    let mut stderr = daemon.child.stderr.take();
    let messages = thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            let text = messages.join().unwrap_or_default();
            return Err(Failure::connection(format!(
                "{DAEMON} exited ({status}) before creating its socket: {}",
                text.trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(Failure::connection(format!(
                "{DAEMON} did not create {} within {timeout:?}",
                socket.display()
            )));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let conn = transport::connect(&Target::Unix(socket.clone()), timeout, Events::Queued)?;
    if let Some(g) = conn.greeting() {
        outln!(
            "  Connected. QEMU greets with its version {} and capabilities [{}];",
            g.version,
            g.capabilities.join(", ")
        );
    }
    outln!("  qmp answered with qmp_capabilities, and commands can now be sent.");

    step(2, "Which QEMU is this?");
    shell_line("exec query-version");
    let v = conn.execute("query-version", None)?;
    out!("{}", indent(&Style::Pretty.json(&v)));

    step(
        3,
        "What can it do? The command list, and the schema of each command",
    );
    shell_line("exec query-commands");
    let v = conn.execute("query-commands", None)?;
    let mut names: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    outln!(
        "  {} commands: {}, ...",
        names.len(),
        names.iter().take(5).copied().collect::<Vec<_>>().join(", ")
    );
    shell_line("schema blockdev-backup");
    let schema = conn.schema()?;
    if let Some(text) = schema.render("blockdev-backup") {
        let lines: Vec<&str> = text.lines().collect();
        for l in lines.iter().take(7) {
            outln!("  {l}");
        }
        outln!("  ... ({} lines in all)", lines.len());
    }

    step(
        4,
        "Add two block nodes (null-co: a 1 MiB disk that reads zeroes and stores nothing)",
    );
    for node in ["src", "dst"] {
        shell_line(&format!(
            "exec blockdev-add driver=null-co node-name={node} size=1048576"
        ));
        let args = obj(json!({"driver": "null-co", "node-name": node, "size": 1048576}));
        let v = conn.execute("blockdev-add", args)?;
        outln!("  {}", Style::Compact.json(&v));
    }

    step(5, "Copy src to dst with a block job, and watch its events");
    shell_line("exec blockdev-backup job-id=job0 device=src target=dst sync=full");
    let args = obj(json!({"job-id": "job0", "device": "src", "target": "dst", "sync": "full"}));
    let reply = conn.execute("blockdev-backup", args)?;
    // QEMU sends the job's events as they happen, most of them before the reply; the job is
    // gone once its status is "null".
    let until = Instant::now() + timeout;
    loop {
        match conn.next_event(Some(until.saturating_duration_since(Instant::now()))) {
            Recv::Event(e) => {
                let data = Style::Compact.json(&Value::Object(e.data.clone()));
                outln!("  event {} {data}", e.name);
                if e.name == "JOB_STATUS_CHANGE" && e.data.get("status") == Some(&json!("null")) {
                    break;
                }
            }
            Recv::TimedOut => {
                outln!("  (the job's last event did not arrive within {timeout:?})");
                break;
            }
            Recv::Closed => return Err(Failure::connection("QEMU closed the connection")),
        }
    }
    outln!("  reply: {}", Style::Compact.json(&reply));
    outln!("  (`qmp events` prints events like these as JSON lines; the shell prints them");
    outln!("  as they arrive.)");

    step(6, "An error: QEMU answers with a class and a description");
    shell_line("exec blockdev-del node-name=nope");
    match conn.execute("blockdev-del", obj(json!({"node-name": "nope"}))) {
        Err(f) if f.code == 1 => {
            outln!("  qmp: {f}");
            outln!("  (printed on stderr; qmp exits with status 1 for QEMU errors)");
        }
        Ok(v) => outln!("  unexpectedly succeeded: {}", Style::Compact.json(&v)),
        Err(f) => return Err(f),
    }

    step(7, "Quit: QEMU replies, then exits");
    shell_line("exec quit");
    let v = conn.execute("quit", None)?;
    outln!("  {}", Style::Compact.json(&v));
    drop(conn);
    let exited = (0..200).any(|_| {
        let done = matches!(daemon.child.try_wait(), Ok(Some(_)));
        if !done {
            thread::sleep(Duration::from_millis(10));
        }
        done
    });
    outln!(
        "  {DAEMON} {}.",
        if exited {
            "has exited"
        } else {
            "did not exit; stopping it"
        }
    );
    drop(daemon);

    outln!("\nNext: start a daemon (or a VM with -qmp unix:/tmp/qmp.sock,server=on,wait=off) and");
    outln!("explore it in the shell, with tab completion from the live schema:");
    outln!(
        "  $ {DAEMON} --chardev socket,path=/tmp/qmp.sock,server=on,wait=off,id=m0 --monitor chardev=m0 &"
    );
    outln!("  $ qmp -s /tmp/qmp.sock shell");
    outln!("`qmp --help` lists the subcommands, connection options and exit codes.");
    Ok(0)
}
