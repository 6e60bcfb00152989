//! Connect stress: many connect / execute / close cycles under CPU load, looking for a connect
//! that stalls while QEMU is alive (a lost wakeup in the engine), and telling it apart from a QEMU
//! that really sent nothing.
//!
//! Every connection is opened as `qmp_async::unix::connect` does, but a duplicate of the socket
//! is kept: when a connect stalls, the engine's own account ([`Client::debug_io`]) says what it
//! read, and whatever is still in the kernel's buffer afterwards is what the engine missed.
//!
//! What it found (QEMU 10.0.2): every stall was on a QEMU connected to as it started listening,
//! with every byte QEMU sent read by the engine. QEMU had greeted (once or twice), then left
//! `qmp_capabilities` unread in its socket (all 44 bytes, or the last one: `ss` shows its Recv-Q),
//! or answered it with an id-less `JSON parse error` (its two monitor threads both read the new
//! connection). Some such QEMUs closed the connection and died (SIGABRT, SIGSEGV). On long-lived
//! QEMUs, thousands of cycles never stalled. Run big: `QMP_STRESS_WORKERS=4 QMP_STRESS_CYCLES=300
//! QMP_STRESS_FRESH=60 cargo test -p qmp-smol --test scenarios connect_stress -- --nocapture`.

use crate::{TestRuntime, STEP};
use async_io::Async;
use futures::future::{self, Either};
use qmp_async::{Client, Error};
use qmp_proto::{CloseReason, Handshake};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one connect + first command may take before it counts as stalled. A healthy one takes
/// milliseconds even under load.
const STALL: Duration = Duration::from_secs(3);

/// What a stress run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Cycles that completed (connect, `query-version`, close).
    pub cycles: usize,
    /// Connections QEMU closed without a greeting (retried once).
    pub closed_without_greeting: usize,
    /// Connections QEMU greeted, then closed before answering `qmp_capabilities` (retried once).
    pub closed_after_greeting: Vec<String>,
    /// Connections refused (nothing listening any more), with whether QEMU was alive.
    pub refused: Vec<String>,
    /// QEMUs that died after such a startup race (SIGABRT and SIGSEGV seen). Counted, not failed.
    pub startup_crashes: Vec<String>,
    /// Connections on which QEMU greeted twice.
    pub double_greetings: usize,
    /// Stalls on a long-lived QEMU where the engine read everything QEMU sent.
    pub qemu_silent: Vec<String>,
    /// The same on a QEMU connected to as it started listening: QEMU 10.0.2's startup race
    /// (its main loop and monitor I/O thread both read the new connection, so `qmp_capabilities`
    /// is lost or garbled and never answered). Counted, not failed.
    pub startup_stalls: Vec<String>,
    /// Stalls where bytes were left unread in the socket: the engine missed them.
    pub engine_missed: Vec<String>,
}

/// Spins on a core until dropped.
struct Hog(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Hog {
    fn start() -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let mut x = 0u64;
            while !s.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
        });
        Hog(stop, Some(t))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

enum Outcome<R> {
    Ok(Client<R>),
    ClosedWithoutGreeting,
    ClosedAfterGreeting(String),
    Refused(String),
    Stalled(String),
}

/// The QEMU a cycle talks to.
pub(crate) enum Target<'a> {
    Long(&'a mut Qemu),
    Fresh(&'a mut Fresh),
}

impl Target<'_> {
    fn path(&self) -> &Path {
        match self {
            Target::Long(q) => q.socket(),
            Target::Fresh(f) => &f.path,
        }
    }

    fn eager(&self) -> bool {
        matches!(self, Target::Fresh(_))
    }

    fn alive(&mut self) -> bool {
        match self {
            Target::Long(q) => !q.wait_exit(Duration::ZERO),
            Target::Fresh(f) => matches!(f.child.try_wait(), Ok(None)),
        }
    }

    fn describe(&mut self) -> String {
        match self {
            Target::Long(q) => format!(
                "long-lived qsd {}, {}",
                q.pid(),
                if q.wait_exit(Duration::ZERO) {
                    "EXITED"
                } else {
                    "alive"
                }
            ),
            Target::Fresh(f) => format!(
                "fresh {:?} {} started {:?} before, {}; its sockets: {}",
                f.emulator,
                f.child.id(),
                f.started.elapsed(),
                match f.child.try_wait() {
                    Ok(Some(status)) => format!("EXITED {status}"),
                    _ => "alive".into(),
                },
                sockets_of(f.child.id())
            ),
        }
    }
}

/// Connects to `path`; with `eager`, retries at once while nothing listens yet (a QEMU just
/// started), so the connection lands right as QEMU starts listening.
async fn open<R: TestRuntime>(
    rt: R,
    target: &mut Target<'_>,
) -> std::io::Result<Async<UnixStream>> {
    let deadline = Instant::now() + STEP;
    loop {
        match Async::<UnixStream>::connect(target.path()).await {
            Err(_) if target.eager() && target.alive() && Instant::now() < deadline => {
                rt.pause(Duration::from_micros(50)).await;
            }
            r => return r,
        }
    }
}

/// One connect and `query-version`, within [`STALL`].
async fn attempt<R: TestRuntime>(rt: R, target: &mut Target<'_>) -> Outcome<R::Rt> {
    let stream = match step_io(rt, open(rt, target)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(format!("{e}; {}", target.describe())),
    };
    let spare = stream.get_ref().try_clone().expect("dup socket");
    let transport = qmp_async::unix::transport(stream);
    let started = Instant::now();
    let connect = Client::<R::Rt>::builder()
        .connect_timeout(STALL)
        .connect_transport(transport);
    let (e, engine) = match connect.await {
        Ok(client) => match client.execute("query-version", ()).await {
            Ok(_) => return Outcome::Ok(client),
            Err(e) => (e, client.debug_io()),
        },
        Err(e) => (e, String::new()),
    };
    match &e {
        Error::Disconnected {
            reason: CloseReason::Disconnected(d),
            ..
        } if d.handshake == Some(Handshake::AwaitingGreeting) => Outcome::ClosedWithoutGreeting,
        e if e.is_disconnected() => {
            Outcome::ClosedAfterGreeting(format!("{e} {engine}; {}", target.describe()))
        }
        Error::Timeout { waiting_for, .. } => {
            // The connection is closed now; what the kernel still holds for our socket arrived
            // and was never read.
            rt.pause(Duration::from_millis(200)).await;
            let mut unread = Vec::new();
            let mut buf = [0u8; 4096];
            let mut spare = spare;
            loop {
                match spare.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => unread.extend_from_slice(&buf[..n]),
                    Err(_) => break, // WouldBlock: nothing more (the socket is non-blocking).
                }
            }
            Outcome::Stalled(format!(
                "after {:?} ({}): waiting for {waiting_for}; unread in the socket: {} bytes {:?}",
                started.elapsed(),
                target.describe(),
                unread.len(),
                String::from_utf8_lossy(&unread[..unread.len().min(200)])
            ))
        }
        e => panic!("query-version: {e} ({engine})"),
    }
}

async fn step_io<R: TestRuntime, T>(rt: R, f: impl std::future::Future<Output = T>) -> T {
    let f = std::pin::pin!(f);
    match future::select(f, rt.pause(STEP)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("socket connect took longer than {STEP:?}"),
    }
}

/// `ss -xp` lines of process `pid` (receive and send queues of its Unix sockets).
fn sockets_of(pid: u32) -> String {
    let out = std::process::Command::new("ss").arg("-xpn").output();
    let Ok(out) = out else {
        return "(no ss)".into();
    };
    let pat = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&pat))
        .map(|l| l.split_whitespace().take(8).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A QEMU started without waiting for its socket; killed and reaped on drop.
pub(crate) struct Fresh {
    child: std::process::Child,
    path: std::path::PathBuf,
    emulator: Emulator,
    started: Instant,
    _dir: qmp_testkit::TempDir,
}

impl Fresh {
    fn start(emulator: Emulator) -> Fresh {
        let dir = qmp_testkit::TempDir::new().expect("temp dir");
        let path = dir.path().join("qmp.sock");
        let spec = qmp_testkit::chardev_spec(&qmp_testkit::Endpoint::Unix(path.clone()));
        let child = qmp_testkit::qemu_command(emulator, &spec, false)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn QEMU");
        Fresh {
            child,
            path,
            emulator,
            started: Instant::now(),
            _dir: dir,
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One full cycle (with the retry after a greeting-less close), recorded in `report`.
async fn cycle<R: TestRuntime>(rt: R, mut target: Target<'_>, report: &mut Report) {
    for _ in 0..2 {
        match attempt(rt, &mut target).await {
            Outcome::Ok(client) => {
                let double = client
                    .take_warnings()
                    .iter()
                    .filter(|w| matches!(w, qmp_proto::Warning::UnexpectedGreeting(_)))
                    .count();
                report.double_greetings += usize::from(double > 0);
                drop(client);
                report.cycles += 1;
                return;
            }
            Outcome::ClosedWithoutGreeting => report.closed_without_greeting += 1,
            Outcome::ClosedAfterGreeting(what) => report.closed_after_greeting.push(what),
            Outcome::Refused(what) => {
                if target.eager() && !target.alive() {
                    report.startup_crashes.push(what);
                } else {
                    report.refused.push(what);
                }
                return;
            }
            Outcome::Stalled(what) => {
                if !what.contains("unread in the socket: 0 bytes") {
                    report.engine_missed.push(what);
                } else if target.eager() {
                    report.startup_stalls.push(what);
                } else {
                    report.qemu_silent.push(what);
                }
                return;
            }
        }
    }
}

/// `workers` threads, each with its own `block_on`, run `cycles` cycles against one long-lived
/// qemu-storage-daemon each and `fresh` cycles against a daemon started just before (connecting as
/// soon as it listens, where QEMU's own greeting races live), while `hogs` threads spin.
pub fn connect_stress<R: TestRuntime>(
    rt: R,
    workers: usize,
    cycles: usize,
    fresh: usize,
    hogs: usize,
) -> Option<Report> {
    qmp_testkit::require(Emulator::StorageDaemon, "connect_stress")?;
    let _hogs: Vec<Hog> = (0..hogs).map(|_| Hog::start()).collect();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            std::thread::spawn(move || {
                let mut report = Report::default();
                let mut long =
                    Qemu::start(QemuOptions::new(Emulator::StorageDaemon), "connect_stress")
                        .unwrap();
                rt.block_on(async {
                    let every = (cycles + fresh) / fresh.max(1);
                    let mut fresh_done = 0;
                    for i in 0..cycles + fresh {
                        if fresh_done < fresh && i % every == w % every {
                            fresh_done += 1;
                            let emulator = if fresh_done % 4 == 0 {
                                Emulator::System
                            } else {
                                Emulator::StorageDaemon
                            };
                            let mut q = Fresh::start(emulator);
                            cycle(rt, Target::Fresh(&mut q), &mut report).await;
                        } else {
                            cycle(rt, Target::Long(&mut long), &mut report).await;
                        }
                    }
                });
                report
            })
        })
        .collect();
    let mut total = Report::default();
    for t in threads {
        let r = t.join().expect("stress worker panicked");
        total.cycles += r.cycles;
        total.closed_without_greeting += r.closed_without_greeting;
        total.closed_after_greeting.extend(r.closed_after_greeting);
        total.refused.extend(r.refused);
        total.startup_crashes.extend(r.startup_crashes);
        total.double_greetings += r.double_greetings;
        total.qemu_silent.extend(r.qemu_silent);
        total.startup_stalls.extend(r.startup_stalls);
        total.engine_missed.extend(r.engine_missed);
    }
    Some(total)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The test: [`connect_stress`] with counts from `QMP_STRESS_WORKERS` (default 2),
/// `QMP_STRESS_CYCLES` (per worker, default 150), `QMP_STRESS_FRESH` (per worker, default 5) and
/// `QMP_STRESS_HOGS` (default 1). Fails on any stall: one where the engine left bytes unread is
/// its bug; one where QEMU sent nothing is QEMU's, reported with what was read.
pub fn run<R: TestRuntime>(rt: R) {
    let started = Instant::now();
    let Some(report) = connect_stress(
        rt,
        env("QMP_STRESS_WORKERS", 2),
        env("QMP_STRESS_CYCLES", 150),
        env("QMP_STRESS_FRESH", 5),
        env("QMP_STRESS_HOGS", 1),
    ) else {
        return;
    };
    eprintln!(
        "connect_stress: {} cycles in {:?}; {} closed without greeting (retried), {} closed after greeting (retried), {} refused, {} QEMUs crashed at startup, {} greeted twice, {} stalls at QEMU startup (QEMU's race), {} stalls with QEMU silent, {} stalls with bytes unread",
        report.cycles,
        started.elapsed(),
        report.closed_without_greeting,
        report.closed_after_greeting.len(),
        report.refused.len(),
        report.startup_crashes.len(),
        report.double_greetings,
        report.startup_stalls.len(),
        report.qemu_silent.len(),
        report.engine_missed.len()
    );
    let anomalies = report.closed_after_greeting.iter().chain(&report.refused);
    let anomalies = anomalies.chain(&report.startup_crashes);
    for what in anomalies
        .chain(&report.startup_stalls)
        .chain(&report.qemu_silent)
    {
        eprintln!("  {what}");
    }
    assert_eq!(
        report.engine_missed,
        Vec::<String>::new(),
        "the engine missed input"
    );
    assert_eq!(
        report.qemu_silent,
        Vec::<String>::new(),
        "a running QEMU sent nothing"
    );
    assert_eq!(report.refused, Vec::<String>::new(), "connections refused");
    let long_closed: Vec<_> = report
        .closed_after_greeting
        .iter()
        .filter(|w| w.contains("long-lived"))
        .collect();
    assert!(
        long_closed.is_empty(),
        "a running QEMU closed: {long_closed:?}"
    );
}
