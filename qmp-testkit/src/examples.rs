//! Running a crate's example binaries from its tests, as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long an example may run before the test fails.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(20);

/// The example binary `name` that cargo built beside the calling test
/// (`target/<profile>/examples/NAME`); `None`, with a loud `SKIPPED` line, when it was not built.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "\n*** SKIPPED: example {name} not built at {} ***\n",
            path.display()
        );
        None
    }
}

/// Runs the example at `path` with the one argument `arg` and returns its standard output;
/// panics (failing the test) when it exits unsuccessfully or runs longer than 20 s.
pub fn run_example(path: &Path, arg: &Path) -> String {
    let child = Command::new(path)
        .arg(arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let id = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let out = match done_rx.recv_timeout(EXAMPLE_LIMIT) {
        Ok(out) => out.expect("the example's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("example did not finish within {EXAMPLE_LIMIT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
