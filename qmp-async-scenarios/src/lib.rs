//! Scenarios against real QEMU (and a scripted fault peer), written once as async functions over
//! a small [`TestRuntime`] trait and run on every async runtime of qmp-rs: each runtime crate's
//! tests invoke [`scenarios!`] with its runtime.
//!
//! Every scenario runs under an overall time limit ([`SCENARIO_LIMIT`]), so nothing hangs; QEMU
//! processes are started through qmp-testkit and killed on drop.

#![deny(missing_docs)]
// Test code (publish = false): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used)]

use futures::future::{self, BoxFuture, Either};
use futures::StreamExt;
use qmp_async::{
    Builder, CallOptions, Client, Error, EventFilter, EventStream, Missed, ProtocolError,
};
use qmp_proto::{CloseReason, Config, ErrorClass, Event, SubmitError};
use qmp_qapi::qmp::{event, AddFd, Closefd, Getfd, QueryFdsets, QueryStatus, QueryVersion};
use qmp_testkit::{
    negotiated, unclosed_cases, Emulator, Endpoint, FaultPeer, Qemu, QemuOptions, Step, GREETING,
};
use serde_json::{json, Value};
use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub mod agent;
pub mod stress;
pub use agent::{
    agent_basics, agent_file_10_mib, agent_guest_exec, agent_no_reply_command,
    agent_not_responding, agent_over_io, agent_over_tcp, agent_stale_data,
    agent_timeout_then_late_reply,
};

/// The longest any one scenario may take before it fails.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// The longest one awaited step may take before the scenario fails.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// What a scenario needs from a runtime crate: its [`qmp_async::Runtime`], and running futures.
pub trait TestRuntime: Copy + Send + Sync + 'static {
    /// The runtime crate's [`qmp_async::Runtime`].
    type Rt: qmp_async::Runtime;
    /// Runs `future` to completion on this thread.
    fn block_on<T>(self, future: impl Future<Output = T>) -> T;
    /// Runs `future` as a task; the returned future yields its output.
    fn spawn_task<T: Send + 'static>(
        self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<'static, T>;
    /// Completes after `duration` (the runtime's timer).
    fn pause(self, duration: Duration) -> BoxFuture<'static, ()> {
        <Self::Rt as qmp_async::Runtime>::sleep(duration)
    }
}

/// Runs `scenario` on `rt` within [`SCENARIO_LIMIT`].
pub fn run<R: TestRuntime, F: Future<Output = ()>>(rt: R, scenario: impl FnOnce(R) -> F) {
    rt.block_on(async move {
        let scenario = std::pin::pin!(scenario(rt));
        if let Either::Right(_) = future::select(scenario, rt.pause(SCENARIO_LIMIT)).await {
            panic!("scenario did not finish within {SCENARIO_LIMIT:?}");
        }
    });
}

/// Declares one `#[test]` per scenario, run on the runtime `$rt`.
#[macro_export]
macro_rules! scenarios {
    ($rt:expr) => {
        $crate::scenarios!(@each $rt;
            negotiation, errors, block_job_events, stop_cont_events, event_queue, add_fd, quit,
            sigkill_mid_command, tcp_transport, stdio_transport, accept_mode, connect_timeout,
            call_timeout_discards_late_reply, pipelined_commands_are_in_flight_together,
            concurrent_calls_from_50_tasks, dropped_futures_never_desync, reading_call_dropped_unpolled, slow_subscriber_is_told,
            event_flood_never_stalls, exec_oob, double_greeting_and_ungreeted_close,
            unclosed_message_before_each_reply, agent_basics, agent_guest_exec, agent_file_10_mib,
            agent_stale_data, agent_timeout_then_late_reply, agent_no_reply_command, agent_over_tcp,
            agent_over_io, agent_not_responding);
    };
    (@each $rt:expr; $($name:ident),* $(,)?) => {
        #[test]
        fn connect_stress() {
            $crate::stress::run($rt);
        }

        $(
            #[test]
            fn $name() {
                $crate::run($rt, $crate::$name);
            }
        )*
    };
}

/// Awaits `f`, failing the scenario after [`STEP`].
async fn step<R: TestRuntime, T>(rt: R, what: &str, f: impl Future<Output = T>) -> T {
    let f = std::pin::pin!(f);
    match future::select(f, rt.pause(STEP)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("step '{what}' took longer than {STEP:?}"),
    }
}

fn qsd(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::StorageDaemon), test)
}

fn system(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::System), test)
}

/// The defaults.
fn plain<R: TestRuntime>() -> Builder<R::Rt> {
    Client::<R::Rt>::builder()
}

fn oob<R: TestRuntime>() -> Builder<R::Rt> {
    plain::<R>().oob(true)
}

/// A client whose `qmp_capabilities` id is `negotiation_id` (commands are numbered 1, 2, ...).
fn with_negotiation_id<R: TestRuntime>(negotiation_id: &str) -> Builder<R::Rt> {
    plain::<R>().config(Config {
        negotiation_id: Some(negotiation_id.into()),
        ..Config::default()
    })
}

async fn connect<R: TestRuntime>(rt: R, q: &Qemu, builder: Builder<R::Rt>) -> Client<R::Rt> {
    // QEMU 10.0.2 mishandles a connection made right as its monitor socket starts listening (see
    // `stress`): it may close it without a greeting, or greet (once or twice) and then lose or
    // garble `qmp_capabilities` and never answer. The first try is short; then once more.
    let first = builder.clone().connect_timeout(STARTUP_TRY);
    match step(rt, "connect", first.connect_unix(q.socket())).await {
        Err(e) if e.is_disconnected() || e.is_timeout() => {
            step(rt, "connect", builder.connect_unix(q.socket()))
                .await
                .expect("connect (second try)")
        }
        r => r.expect("connect"),
    }
}

/// The first connect to a QEMU just started may take this long before it is retried.
const STARTUP_TRY: Duration = Duration::from_secs(3);

async fn next_event<R: TestRuntime>(
    rt: R,
    stream: &mut EventStream,
) -> Option<Result<Event, Missed>> {
    step(rt, "next event", stream.next()).await
}

fn qmp_error(result: Result<Value, Error>) -> qmp_proto::QmpError {
    match result {
        Err(Error::Qmp { error, .. }) => error,
        other => panic!("expected a QMP error, got {other:?}"),
    }
}

fn assert_idle<R: qmp_async::Runtime>(client: &Client<R>) {
    assert_eq!(client.pending(), 0, "commands left pending");
    assert_eq!(client.waiting(), 0, "reply slots left behind");
}

/// No unmatched replies, id-less errors or undecodable input were reported. A second greeting
/// is allowed: QEMU 10.0.2 sometimes greets twice a client that connects right as its socket
/// starts listening (measured: 16 of 60 connections made within a millisecond of `listen`).
fn assert_no_warnings<R: qmp_async::Runtime>(client: &Client<R>) {
    let warnings: Vec<_> = client
        .take_warnings()
        .into_iter()
        .filter(|w| !matches!(w, qmp_proto::Warning::UnexpectedGreeting(_)))
        .collect();
    assert_eq!(warnings, vec![]);
}

/// Greeting, `oob` negotiation, a typed query.
pub async fn negotiation<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("negotiation") else { return };
    let client = connect(rt, &q, oob::<R>()).await;
    let greeting = client.greeting().clone();
    assert!(greeting.has_capability("oob"));
    assert!(client.oob_enabled());
    let v = step(rt, "query-version", client.run(&QueryVersion))
        .await
        .unwrap();
    assert_eq!(
        (v.qemu.major, v.qemu.minor, v.qemu.micro),
        (
            greeting.version.major as i64,
            greeting.version.minor as i64,
            greeting.version.micro as i64
        )
    );
    assert_eq!(v.package, greeting.package);
    assert_idle(&client);
    drop(client);

    let plain = connect(rt, &q, plain::<R>()).await;
    assert!(!plain.oob_enabled());
    assert!(matches!(
        plain.execute_oob("query-version", ()).await,
        Err(Error::Refused {
            reason: SubmitError::OobNotNegotiated,
            ..
        })
    ));
    assert!(step(rt, "query", plain.execute("query-version", ()))
        .await
        .is_ok());
}

#[derive(serde::Serialize)]
struct VersionAsText;

impl qmp_proto::Command for VersionAsText {
    const NAME: &'static str = "query-version";
    type Output = String;
}

/// QMP errors, refused and mis-typed commands; the connection goes on.
pub async fn errors<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("errors") else { return };
    let client = connect(rt, &q, plain::<R>()).await;
    let e = qmp_error(step(rt, "unknown", client.execute("no-such-command", ())).await);
    assert_eq!(e.class, ErrorClass::CommandNotFound);
    let e = qmp_error(
        step(
            rt,
            "del",
            client.execute("blockdev-del", json!({"node-name": "nope"})),
        )
        .await,
    );
    assert_eq!(e.class, ErrorClass::GenericError);
    assert!(e.desc.contains("nope"), "{}", e.desc);
    let e = qmp_error(
        step(
            rt,
            "bad arg",
            client.execute("query-version", json!({"x": 1})),
        )
        .await,
    );
    assert_eq!(e.class, ErrorClass::GenericError);
    assert!(matches!(
        step(rt, "typed", client.run(&VersionAsText)).await,
        Err(Error::Protocol {
            problem: ProtocolError::UnexpectedReply(_),
            ..
        })
    ));
    assert!(matches!(
        client
            .execute("blockdev-del", json!({"node-name": "\u{ffff}"}))
            .await,
        Err(Error::Refused { .. })
    ));
    assert!(step(rt, "after", client.run(&QueryVersion)).await.is_ok());
    assert_idle(&client);
    assert_no_warnings(&client);
}

/// A backup job's events, by name and by predicate, in order, before the command's reply.
pub async fn block_job_events<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("block_job_events") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    for node in ["n0", "n1"] {
        let args = json!({"driver": "null-co", "node-name": node, "size": 1048576});
        step(rt, "blockdev-add", client.execute("blockdev-add", &args))
            .await
            .unwrap();
    }
    let mut job = client.subscribe(
        EventFilter::names(["JOB_STATUS_CHANGE"])
            .matching(|e| e.data.get("id").and_then(Value::as_str) == Some("j0")),
    );
    let mut completed = client.subscribe(EventFilter::names(["BLOCK_JOB_COMPLETED"]));
    let mut all = client.subscribe(EventFilter::all());
    let args = json!({"job-id": "j0", "device": "n0", "target": "n1", "sync": "full"});
    step(rt, "backup", client.execute("blockdev-backup", &args))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("null") {
        let e = next_event(rt, &mut job).await.unwrap().unwrap();
        assert_eq!(e.name, "JOB_STATUS_CHANGE");
        statuses.push(e.data["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses.first().map(String::as_str), Some("created"));
    let concluded = statuses.iter().position(|s| s == "concluded");
    assert!(concluded.is_some(), "{statuses:?}");
    let done = next_event(rt, &mut completed).await.unwrap().unwrap();
    assert_eq!(done.data["device"], "j0");
    assert_eq!(done.data["offset"], done.data["len"]);
    let typed = done.decode::<event::BlockJobCompleted>().unwrap().unwrap();
    assert_eq!(typed.device, "j0");
    // The unfiltered stream saw the same job events, and the completion among them.
    let mut names = Vec::new();
    for _ in 0..statuses.len() + 1 {
        names.push(next_event(rt, &mut all).await.unwrap().unwrap().name);
    }
    assert_eq!(
        names.iter().filter(|n| *n == "BLOCK_JOB_COMPLETED").count(),
        1
    );
    assert_eq!(names.len(), statuses.len() + 1);
}

/// `stop` and `cont` raise `STOP` and `RESUME`; typed `query-status` follows.
pub async fn stop_cont_events<R: TestRuntime>(rt: R) {
    let Some(q) = system("stop_cont_events") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let mut events = client.subscribe(EventFilter::names(["STOP", "RESUME"]));
    step(rt, "stop", client.execute("stop", ())).await.unwrap();
    let e = next_event(rt, &mut events).await.unwrap().unwrap();
    assert_eq!(e.name, "STOP");
    let status = step(rt, "status", client.run(&QueryStatus)).await.unwrap();
    assert!(!status.running);
    step(rt, "cont", client.execute("cont", ())).await.unwrap();
    let e = next_event(rt, &mut events).await.unwrap().unwrap();
    assert!(e.decode::<event::Resume>().is_some());
    assert!(
        step(rt, "status", client.run(&QueryStatus))
            .await
            .unwrap()
            .running
    );
}

/// The connection's own event queue, as in the blocking client: `wait_event` finds an event
/// that arrived before it was called and leaves the others queued in order; `next_event` and
/// `events()` take from the same queue; an empty queue times out with the event's name.
pub async fn event_queue<R: TestRuntime>(rt: R) {
    let Some(q) = system("event_queue") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    for command in ["stop", "cont", "stop", "cont"] {
        step(rt, command, client.execute(command, ()))
            .await
            .unwrap();
    }
    // The second STOP, found by predicate among queued events; the others stay.
    let mut stops = 0;
    let second = step(
        rt,
        "wait_event",
        client.wait_event(
            "STOP",
            |_| {
                stops += 1;
                stops == 2
            },
            STEP,
        ),
    )
    .await
    .unwrap();
    assert_eq!(second.name, "STOP");
    let first = step(rt, "next_event", client.next_event(STEP))
        .await
        .unwrap();
    assert_eq!(first.name, "STOP");
    let mut events = client.events();
    let names = [
        step(rt, "events", events.next()).await.unwrap().name,
        step(rt, "events", events.next()).await.unwrap().name,
    ];
    assert_eq!(names, ["RESUME", "RESUME"]);
    assert_eq!(client.queued_events(), 0);
    let e = client
        .wait_event("STOP", |_| true, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "timed out after 50 ms waiting for event STOP"
    );
    assert_eq!(client.dropped_events(), 0);
}

/// `add-fd` and `getfd` with a descriptor passed over the Unix socket.
pub async fn add_fd<R: TestRuntime>(rt: R) {
    let Some(q) = system("add_fd") else { return };
    let client = connect(rt, &q, plain::<R>()).await;
    let file = std::fs::File::create(q.dir().join("fd-file")).unwrap();
    let add = AddFd {
        fdset_id: None,
        opaque: Some("scenario".into()),
    };
    let fds = [file.as_fd()];
    let info = step(
        rt,
        "add-fd",
        client.run_with(&add, CallOptions::new().fds(&fds)),
    )
    .await
    .unwrap();
    let sets = step(rt, "fdsets", client.run(&QueryFdsets)).await.unwrap();
    let set = sets.iter().find(|s| s.fdset_id == info.fdset_id).unwrap();
    assert_eq!(set.fds[0].fd, info.fd);
    assert_eq!(set.fds[0].opaque.as_deref(), Some("scenario"));

    let file = std::fs::File::open("/dev/null").unwrap();
    let getfd = Getfd {
        fdname: "f0".into(),
    };
    let fds = [file.as_fd()];
    step(
        rt,
        "getfd",
        client.run_with(&getfd, CallOptions::new().fds(&fds)),
    )
    .await
    .unwrap();
    let close = Closefd {
        fdname: "f0".into(),
    };
    step(rt, "closefd", client.run(&close)).await.unwrap();
    // Closing again fails: the descriptor really had arrived under that name.
    assert!(matches!(client.run(&close).await, Err(Error::Qmp { .. })));
    // Without a descriptor, getfd fails and the connection goes on.
    assert!(matches!(client.run(&getfd).await, Err(Error::Qmp { .. })));
    assert_idle(&client);
}

/// `quit`: the reply, the `SHUTDOWN` event, then the end of everything; and `Client::quit`,
/// which waits for that end.
pub async fn quit<R: TestRuntime>(rt: R) {
    let Some(mut q) = system("quit") else { return };
    let client = connect(rt, &q, plain::<R>()).await;
    let mut events = client.subscribe(EventFilter::all());
    step(rt, "quit", client.run(&qmp_qapi::qmp::Quit))
        .await
        .unwrap();
    let e = next_event(rt, &mut events).await.unwrap().unwrap();
    let shutdown = e.decode::<event::Shutdown>().unwrap().unwrap();
    assert_eq!(shutdown.reason, qmp_qapi::qmp::ShutdownCause::HostQmpQuit);
    assert!(next_event(rt, &mut events).await.is_none(), "stream ends");
    assert_eq!(step(rt, "closed", client.closed()).await, CloseReason::Quit);
    assert!(client
        .execute("query-version", ())
        .await
        .unwrap_err()
        .is_disconnected());
    assert!(q.wait_exit(STEP));

    // `Client::quit` waits for the end; the SHUTDOWN event stays readable after it.
    let Some(mut q) = system("quit") else { return };
    let client = connect(rt, &q, plain::<R>()).await;
    step(rt, "Client::quit", client.quit()).await.unwrap();
    assert!(!client.is_connected());
    assert_eq!(client.close_reason(), Some(CloseReason::Quit));
    let e = step(rt, "SHUTDOWN", client.next_event(STEP)).await.unwrap();
    assert_eq!(e.name, "SHUTDOWN");
    assert!(q.wait_exit(STEP));
}

/// SIGKILL with many commands pending: every one resolves, at once, as disconnected or answered.
pub async fn sigkill_mid_command<R: TestRuntime>(rt: R) {
    let Some(mut q) = qsd("sigkill_mid_command") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let mut events = client.subscribe(EventFilter::all());
    let c = client.clone();
    let calls = rt.spawn_task(async move {
        let calls = (0..200).map(|_| c.execute("query-qmp-schema", ()));
        future::join_all(calls).await
    });
    rt.pause(Duration::from_millis(20)).await;
    q.kill();
    let results = step(rt, "all calls resolve", calls).await;
    let disconnected = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_disconnected()))
        .count();
    assert!(disconnected > 0, "no command was pending at the kill");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || r.as_ref().is_err_and(Error::is_disconnected)));
    assert!(next_event(rt, &mut events).await.is_none(), "stream ends");
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::Disconnected(_))
    ));
    assert!(client
        .execute("query-version", ())
        .await
        .unwrap_err()
        .is_disconnected());
    assert_idle(&client);
}

/// TCP: commands work; descriptors are refused before sending.
pub async fn tcp_transport<R: TestRuntime>(rt: R) {
    let addr = qmp_testkit::free_tcp_addr().unwrap();
    let mut options = QemuOptions::new(Emulator::StorageDaemon);
    options.endpoint = Some(Endpoint::Tcp(addr));
    let Some(_q) = Qemu::start(options, "tcp_transport") else {
        return;
    };
    let client = step(rt, "connect", plain::<R>().connect_tcp(addr))
        .await
        .unwrap();
    assert!(step(rt, "query", client.run(&QueryVersion)).await.is_ok());
    let fd = std::fs::File::open("/dev/null").unwrap();
    let fds = [fd.as_fd()];
    assert!(matches!(
        client
            .execute_with(
                "getfd",
                json!({"fdname": "x"}),
                CallOptions::new().fds(&fds)
            )
            .await,
        Err(Error::FdPassingUnsupported { .. })
    ));
    assert!(step(rt, "query", client.run(&QueryVersion)).await.is_ok());
}

/// A QEMU spawned with its monitor on stdio; killed from outside, the connection ends and the
/// client knows its exit status.
pub async fn stdio_transport<R: TestRuntime>(rt: R) {
    if qmp_testkit::require(Emulator::StorageDaemon, "stdio_transport").is_none() {
        return;
    }
    let mut command = qmp_testkit::qemu_command(Emulator::StorageDaemon, "stdio", false);
    command.stderr(std::process::Stdio::null());
    let client = step(rt, "spawn", plain::<R>().spawn(command))
        .await
        .unwrap();
    let mut events = client.subscribe(EventFilter::all());
    assert!(step(rt, "query", client.run(&QueryVersion)).await.is_ok());
    let pid = client.child_id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(next_event(rt, &mut events).await.is_none(), "stream ends");
    assert!(matches!(
        step(rt, "closed", client.closed()).await,
        CloseReason::Disconnected(_)
    ));
    let mut status = None;
    for _ in 0..500 {
        status = client.exit_status();
        if status.is_some() {
            break;
        }
        rt.pause(Duration::from_millis(2)).await;
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.and_then(|s| s.signal()), Some(9), "{status:?}");
}

/// Accept mode: QEMU connects to our listener (with pretty, multi-line output).
pub async fn accept_mode<R: TestRuntime>(rt: R) {
    let dir = qmp_testkit::TempDir::new().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut options = QemuOptions::new(Emulator::StorageDaemon);
    options.endpoint = Some(Endpoint::UnixClient(path));
    options.pretty = true;
    let Some(_q) = Qemu::start(options, "accept_mode") else {
        return;
    };
    let client = step(rt, "accept", plain::<R>().accept_unix(&listener))
        .await
        .unwrap();
    let v = step(rt, "query", client.run(&QueryVersion)).await.unwrap();
    assert!(v.qemu.major >= 1);
    let file = std::fs::File::open("/dev/null").unwrap();
    let fds = [file.as_fd()];
    let e = qmp_error(
        step(
            rt,
            "getfd",
            client.execute_with(
                "getfd",
                json!({"fdname": "a"}),
                CallOptions::new().fds(&fds),
            ),
        )
        .await
        .map(|_| json!("ok")),
    );
    // qemu-storage-daemon has no getfd; the command and its descriptor went through the socket.
    assert_eq!(e.class, ErrorClass::CommandNotFound);
}

/// A peer that never greets: the connect timeout fires. A missing socket: an I/O error.
pub async fn connect_timeout<R: TestRuntime>(rt: R) {
    let dir = qmp_testkit::TempDir::new().unwrap();
    let path = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let builder = plain::<R>().connect_timeout(Duration::from_millis(200));
    let r = step(rt, "connect", builder.clone().connect_unix(&path)).await;
    assert!(
        matches!(&r, Err(Error::Timeout { waiting_for, .. }) if waiting_for.contains("greeting")),
        "{r:?}"
    );
    let r = step(rt, "connect", builder.connect_unix(dir.path().join("none"))).await;
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
}

fn reply(id: impl Into<Value>, value: Value) -> Vec<u8> {
    let id: Value = id.into();
    let mut v = serde_json::to_vec(&json!({"return": value, "id": id})).unwrap();
    v.extend_from_slice(b"\r\n");
    v
}

/// A call times out (per-call and default timeouts); its late reply is discarded; the next works.
pub async fn call_timeout_discards_late_reply<R: TestRuntime>(rt: R) {
    let mut script = negotiated("t");
    script.extend([
        Step::ReadLines(2),
        Step::Sleep(Duration::from_millis(300)),
        Step::Send(reply(1, json!({"late": true}))),
        Step::ReadLines(3),
        // Id 1 is still held by the abandoned command when the second is sent.
        Step::Send(reply(2, json!({"n": 2}))),
        Step::ReadLines(4),
        Step::Sleep(Duration::from_millis(300)),
        // The late reply freed id 1, so the third command reuses it.
        Step::Send(reply(1, json!({"n": 3}))),
        Step::ReadLines(5),
    ]);
    let peer = FaultPeer::start(script);
    let builder = with_negotiation_id::<R>("t").timeout(Duration::from_millis(100));
    let client = step(rt, "connect", builder.connect_unix(peer.path()))
        .await
        .unwrap();
    let e = client.execute("slow", ()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "timed out after 100 ms waiting for the reply to 'slow'"
    );
    let relaxed = client.with_timeout(None);
    assert_eq!(
        step(rt, "next", relaxed.execute("b", ())).await.unwrap(),
        json!({"n": 2})
    );
    assert_eq!(client.stats().session.discarded_replies, 1);
    // Per call: a longer limit than the default lets the slow reply arrive.
    let patient = client.with_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        step(rt, "patient", patient.execute("c", ())).await.unwrap(),
        json!({"n": 3})
    );
    assert_idle(&client);
    assert_no_warnings(&client);
    drop((client, relaxed, patient));
    let sent = String::from_utf8(peer.join()).unwrap();
    assert_eq!(sent.lines().count(), 4, "{sent}");
}

/// Ten commands are on the wire before any reply (the peer reads all before answering, in reverse
/// order); each call gets its own reply.
pub async fn pipelined_commands_are_in_flight_together<R: TestRuntime>(rt: R) {
    let mut script = negotiated("p");
    script.push(Step::ReadLines(11));
    for k in (1..=10).rev() {
        script.push(Step::Send(reply(k, json!({ "n": k }))));
    }
    script.push(Step::ReadLines(12));
    let peer = FaultPeer::start(script);
    let client = step(
        rt,
        "connect",
        with_negotiation_id::<R>("p").connect_unix(peer.path()),
    )
    .await
    .unwrap();
    let args: Vec<Value> = (1..=10).map(|k| json!({ "k": k })).collect();
    let calls = args.iter().map(|a| client.execute("c", a));
    let results = step(rt, "pipelined", future::join_all(calls)).await;
    for (k, r) in (1..=10).zip(results) {
        assert_eq!(r.unwrap(), json!({ "n": k }));
    }
    assert_idle(&client);
}

/// 1,000 calls from 50 tasks at once on one connection, each answered with its own reply.
pub async fn concurrent_calls_from_50_tasks<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("concurrent_calls_from_50_tasks") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let expected = client.run(&QueryVersion).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let client = client.clone();
            let expected = expected.clone();
            rt.spawn_task(async move {
                let mut correct = 0;
                for i in 0..20 {
                    if (t + i) % 2 == 0 {
                        let v = client.run(&QueryVersion).await.unwrap();
                        assert_eq!(v, expected);
                    } else {
                        let name = format!("t{t}-c{i}");
                        let args = json!({ "node-name": name });
                        let e = qmp_error(client.execute("blockdev-del", &args).await);
                        assert!(
                            e.desc.contains(&format!("'{name}'")),
                            "{} for {name}",
                            e.desc
                        );
                    }
                    correct += 1;
                }
                correct
            })
        })
        .collect();
    let counts = step(rt, "1000 calls", future::join_all(tasks)).await;
    assert_eq!(counts.iter().sum::<i32>(), 1000);
    assert_idle(&client);
    assert_no_warnings(&client);
}

/// Yields to the executor once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// 10,000 commands, most dropped at a random point (never polled: submitted but never written by
/// this call; polled once; after a few turns of the executor); the ones run to the end always get their own reply, and nothing is
/// left pending.
pub async fn dropped_futures_never_desync<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("dropped_futures_never_desync") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let expected = client.run(&QueryVersion).await.unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut checked = 0;
    for i in 0..10_000u32 {
        let r = rand();
        let name = format!("d{i}");
        let args = json!({ "node-name": name });
        let mut call = Box::pin(client.execute("blockdev-del", &args));
        match r % 4 {
            0 => {}
            // Submitted; under load the reply may even be there already.
            1 => drop(futures::poll!(&mut call)),
            2 => {
                for _ in 0..(r >> 8) % 24 {
                    if futures::poll!(&mut call).is_ready() {
                        break;
                    }
                    YieldNow(false).await;
                }
            }
            _ => {
                let e = qmp_error(step(rt, "checked call", call).await);
                assert!(
                    e.desc.contains(&format!("'{name}'")),
                    "{} for {name}",
                    e.desc
                );
                let v = step(rt, "version", client.run(&QueryVersion)).await;
                assert_eq!(v.unwrap(), expected);
                checked += 1;
                continue;
            }
        }
        drop(call);
    }
    assert!(checked > 2000);
    let v = step(rt, "final", client.run(&QueryVersion)).await;
    assert_eq!(v.unwrap(), expected);
    assert_idle(&client);
    assert_no_warnings(&client);
    assert!(
        client.stats().session.discarded_replies > 0,
        "some late replies were discarded"
    );
}

/// A waiting call reads for the connection (it holds the read role). One polled once and then
/// dropped without another poll passes the role on: the other waiting call still gets its reply,
/// and with no call waiting an event (and a dropped call's late reply) is read by the driver.
pub async fn reading_call_dropped_unpolled<R: TestRuntime>(rt: R) {
    let Some(q) = system("reading_call_dropped_unpolled") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let expected = step(rt, "version", client.run(&QueryVersion))
        .await
        .unwrap();
    for _ in 0..200 {
        let mut waiting = Box::pin(client.run(&QueryVersion));
        let mut reading = Box::pin(client.run(&QueryStatus));
        let first = futures::poll!(&mut waiting);
        // Polled last: it holds the read role (unless its reply is already there).
        drop(futures::poll!(&mut reading));
        drop(reading);
        let v = match first {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => step(rt, "the other call", waiting).await,
        };
        assert_eq!(v.unwrap(), expected);
    }
    let mut events = client.subscribe(EventFilter::names(["STOP"]));
    let mut stop = Box::pin(client.execute("stop", ()));
    drop(futures::poll!(&mut stop));
    drop(stop);
    let e = next_event(rt, &mut events).await.unwrap().unwrap();
    assert_eq!(e.name, "STOP");
    let status = step(rt, "status", client.run(&QueryStatus)).await.unwrap();
    assert!(!status.running, "the dropped stop was sent and ran");
    assert_idle(&client);
    assert_no_warnings(&client);
}

/// A subscriber that does not read loses its oldest events, and is told how many; another
/// subscriber sees them all; commands keep working meanwhile.
pub async fn slow_subscriber_is_told<R: TestRuntime>(rt: R) {
    let Some(q) = system("slow_subscriber_is_told") else {
        return;
    };
    let client = connect(rt, &q, plain::<R>()).await;
    let mut slow = client.subscribe(EventFilter::all().buffer(4));
    let mut fast = client.subscribe(EventFilter::all());
    for _ in 0..20 {
        step(rt, "stop", client.execute("stop", ())).await.unwrap();
        step(rt, "cont", client.execute("cont", ())).await.unwrap();
    }
    for i in 0..40 {
        let e = next_event(rt, &mut fast).await.unwrap().unwrap();
        assert_eq!(e.name, if i % 2 == 0 { "STOP" } else { "RESUME" });
    }
    assert_eq!(next_event(rt, &mut slow).await, Some(Err(Missed(36))));
    for name in ["STOP", "RESUME", "STOP", "RESUME"] {
        assert_eq!(next_event(rt, &mut slow).await.unwrap().unwrap().name, name);
    }
}

/// 10,000 events nobody reads while a command runs: the reply still comes, memory stays bounded,
/// the subscriber learns the count.
pub async fn event_flood_never_stalls<R: TestRuntime>(rt: R) {
    let mut flood = Vec::new();
    for i in 0..10_000 {
        let e = json!({"event": "FLOOD", "data": {"i": i},
            "timestamp": {"seconds": 1, "microseconds": i}});
        flood.extend(serde_json::to_vec(&e).unwrap());
        flood.extend_from_slice(b"\r\n");
    }
    let mut script = negotiated("f");
    script.extend([
        Step::ReadLines(2),
        Step::Send(flood),
        Step::Send(reply(1, json!({"ok": true}))),
        Step::ReadLines(3),
    ]);
    let peer = FaultPeer::start(script);
    let client = step(
        rt,
        "connect",
        with_negotiation_id::<R>("f").connect_unix(peer.path()),
    )
    .await
    .unwrap();
    let mut events = client.subscribe(EventFilter::names(["FLOOD"]).buffer(16));
    let r = step(rt, "call", client.execute("x", ())).await.unwrap();
    assert_eq!(r, json!({"ok": true}));
    assert_eq!(
        next_event(rt, &mut events).await,
        Some(Err(Missed(10_000 - 16)))
    );
    let first = next_event(rt, &mut events).await.unwrap().unwrap();
    assert_eq!(first.data["i"], 10_000 - 16);
    assert_eq!(client.stats().session.events, 10_000);
}

/// `exec-oob` travels as such: QEMU answers that `query-version` does not support it.
pub async fn exec_oob<R: TestRuntime>(rt: R) {
    let Some(q) = qsd("exec_oob") else { return };
    let client = connect(rt, &q, oob::<R>()).await;
    let e = qmp_error(step(rt, "oob", client.execute_oob("query-version", ())).await);
    assert!(e.desc.contains("OOB"), "{}", e.desc);
    assert!(step(rt, "inband", client.run(&QueryVersion)).await.is_ok());
    assert_idle(&client);
}

/// QEMU 10.0.2 greets twice a client that connects as its socket starts listening, and sometimes
/// closes such a connection without a word: the second greeting is reported and ignored; the
/// silent close fails the connect as disconnected (not by timeout), so the caller can retry.
pub async fn double_greeting_and_ungreeted_close<R: TestRuntime>(rt: R) {
    let script = vec![
        Step::Send(GREETING.to_vec()),
        Step::Send(GREETING.to_vec()),
        Step::ReadLines(1),
        Step::Send(reply("g", json!({}))),
        Step::ReadLines(2),
        Step::Send(reply(1, json!({"ok": true}))),
        Step::ReadLines(3),
    ];
    let peer = FaultPeer::start(script);
    let client = step(
        rt,
        "connect",
        with_negotiation_id::<R>("g").connect_unix(peer.path()),
    )
    .await
    .unwrap();
    let r = step(rt, "call", client.execute("x", ())).await.unwrap();
    assert_eq!(r, json!({"ok": true}));
    assert!(
        matches!(
            client.take_warnings()[..],
            [qmp_proto::Warning::UnexpectedGreeting(_)]
        ),
        "one warning, for the second greeting"
    );
    drop(client);
    peer.join();

    let peer = FaultPeer::start(vec![Step::Close]);
    let r = step(rt, "connect", plain::<R>().connect_unix(peer.path())).await;
    assert!(matches!(&r, Err(e) if e.is_disconnected()), "{r:?}");
}

/// A message that never closes (100,000 deep, 5,000 deep in objects, in a string, over the size
/// limit), put into a real QEMU's output by a proxy before each of 8 replies, compact and pretty:
/// every reply arrives within a 10 s call timeout (a stall fails the call; the margin is for loaded machines), and each broken message is reported once.
/// Before the line rule, the first one swallowed every later reply.
pub async fn unclosed_message_before_each_reply<R: TestRuntime>(rt: R) {
    const LIMIT: usize = 64 << 10;
    let cases = unclosed_cases(LIMIT, "query-version", "unclosed_message_before_each_reply");
    let mut ran = 0;
    for case in cases {
        ran += 1;
        let mut config = Config::default();
        config.limits.max_message_size = LIMIT;
        let builder = plain::<R>().config(config).timeout(Duration::from_secs(10));
        let client = step(rt, "connect", builder.connect_unix(case.proxy.path()))
            .await
            .unwrap();
        for _ in 0..8 {
            let v = client.run(&QueryVersion).await.unwrap();
            assert_eq!(v.qemu.major, 10);
        }
        assert_eq!(case.proxy.injected(), 8);
        let warnings = client.take_warnings();
        assert!(
            warnings.len() == 8 && warnings.iter().all(|w| case.expected.is_reported_by(w)),
            "{case:?}: {warnings:?}"
        );
        assert_eq!(client.stats().session.decode_errors, 8);
        assert_eq!(client.stats().session.unmatched_replies, 0);
        assert_idle(&client);
    }
    // 4 events, compact and pretty (none when the daemon is missing, after a SKIPPED notice).
    let installed = qmp_testkit::find_binary("qemu-storage-daemon").is_some();
    assert!(ran == 8 || !installed, "{ran} cases");
}

/// The repository README's examples, compiled as doc tests so that they stay true (this crate
/// depends on every client, as they do).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RootReadmeDoctests;
