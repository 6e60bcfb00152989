//! Against a real qemu-system-x86_64 -M none: run state events, HMP, quit, fd passing, pretty
//! output, QEMU killed mid-command, callbacks, the bounded event queue.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use qmp_blocking::{Client, Error};
use qmp_qapi::qmp::event::{Reset, Shutdown};
use qmp_qapi::qmp::{HumanMonitorCommand, QueryFdsets, QueryStatus};
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use serde_json::json;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn system(test: &str) -> Option<Qemu> {
    Qemu::start(QemuOptions::new(Emulator::System), test)
}

fn connect(q: &Qemu) -> Client {
    Client::builder()
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap()
}

fn signal(q: &Qemu, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &q.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[test]
fn stop_cont_reset_and_human_monitor_command() {
    let Some(q) = system("stop_cont_reset_and_human_monitor_command") else {
        return;
    };
    let c = connect(&q);
    assert!(c.run(&QueryStatus).unwrap().running);
    c.execute("stop", ()).unwrap();
    c.wait_event_typed::<qmp_qapi::qmp::event::Stop>(|_| true, T)
        .unwrap();
    let status = c.run(&QueryStatus).unwrap();
    assert_eq!(
        (status.running, status.status),
        (false, qmp_qapi::qmp::RunState::Paused)
    );
    assert_eq!(c.query("status").unwrap()["status"], "paused");
    c.execute("cont", ()).unwrap();
    c.wait_event("RESUME", |_| true, T).unwrap();
    assert!(c.run(&QueryStatus).unwrap().running);
    c.execute("system_reset", ()).unwrap();
    let data = c.wait_event_typed::<Reset>(|r| !r.guest, T).unwrap();
    assert_eq!(
        data.reason,
        qmp_qapi::qmp::ShutdownCause::HostQmpSystemReset
    );
    let text = c.run(&HumanMonitorCommand::new("info status")).unwrap();
    assert_eq!(text, "VM status: running\r\n");
}

#[test]
fn quit_sends_shutdown_and_closes_cleanly() {
    let Some(mut q) = system("quit_sends_shutdown_and_closes_cleanly") else {
        return;
    };
    let c = connect(&q);
    c.quit().unwrap();
    assert!(!c.is_connected());
    // SHUTDOWN came before the reply and stays readable after the end; the event iterator
    // ends once the connection has closed and the queue is empty.
    let events: Vec<_> = c.events().collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let s: Shutdown = events[0].decode::<Shutdown>().unwrap().unwrap();
    assert_eq!(s.reason, qmp_qapi::qmp::ShutdownCause::HostQmpQuit);
    assert!(c.next_event(T).unwrap_err().is_disconnected());
    assert!(c.events().next_timeout(T).unwrap_err().is_disconnected());
    assert!(c.execute("query-status", ()).unwrap_err().is_disconnected());
    assert!(q.wait_exit(T), "QEMU exited");
    c.close();
}

#[test]
fn add_fd_and_getfd_pass_a_real_file() {
    let Some(q) = system("add_fd_and_getfd_pass_a_real_file") else {
        return;
    };
    let c = connect(&q);
    let path = q.dir().join("disk.img");
    let file = std::fs::File::create(&path).unwrap();
    let info = c.add_fd(file.as_fd(), Some(7), Some("my-file")).unwrap();
    assert_eq!(info["fdset-id"], 7);
    let sets = c.run(&QueryFdsets).unwrap();
    let set = sets
        .iter()
        .find(|s| s.fdset_id == 7)
        .expect("fd set 7 listed");
    assert_eq!(set.fds.len(), 1);
    assert_eq!(set.fds[0].fd, info["fd"]);
    // The same, typed, through qmp-qapi's command and CallOptions::fds.
    let typed = c
        .run_with(
            &qmp_qapi::qmp::AddFd {
                fdset_id: Some(7),
                opaque: None,
            },
            qmp_blocking::CallOptions::new().fds(&[file.as_fd()]),
        )
        .unwrap();
    assert_eq!(typed.fdset_id, 7);
    assert_ne!(typed.fd, info["fd"]);
    assert_eq!(set.fds[0].opaque.as_deref(), Some("my-file"));
    // getfd + closefd: closefd fails unless QEMU really holds a descriptor of that name.
    c.getfd("f0", file.as_fd()).unwrap();
    c.execute("closefd", json!({"fdname": "f0"})).unwrap();
    let e = c.execute("closefd", json!({"fdname": "f0"})).unwrap_err();
    assert!(e.qmp_error().is_some(), "{e:?}");
    // Without a descriptor attached, QEMU says so: proves the ones above really travelled.
    let e = c.execute("getfd", json!({"fdname": "f1"})).unwrap_err();
    assert!(e.qmp_error().unwrap().desc.contains("SCM_RIGHTS"), "{e}");
}

#[test]
fn fd_passing_over_tcp_is_a_clear_error() {
    let addr = qmp_testkit::free_tcp_addr().unwrap();
    let mut opts = QemuOptions::new(Emulator::System);
    opts.endpoint = Some(qmp_testkit::Endpoint::Tcp(addr));
    let Some(_q) = Qemu::start(opts, "fd_passing_over_tcp_is_a_clear_error") else {
        return;
    };
    let c = Client::builder().timeout(T).connect_tcp(addr).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let e = c.getfd("f0", file.as_fd()).unwrap_err();
    assert!(matches!(e, Error::FdPassingUnsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("tcp:127.0.0.1"), "{e}");
    assert_eq!(c.pending(), 0);
    c.execute("query-status", ()).unwrap();
}

#[test]
fn pretty_monitor_works() {
    let mut opts = QemuOptions::new(Emulator::System);
    opts.pretty = true;
    let Some(q) = Qemu::start(opts, "pretty_monitor_works") else {
        return;
    };
    let c = connect(&q);
    assert_eq!(c.greeting().version.major, 10);
    assert_eq!(c.query("version").unwrap()["qemu"]["major"], 10);
    c.execute("stop", ()).unwrap();
    assert_eq!(c.next_event(T).unwrap().name, "STOP");
    let e = c.execute("no-such-command", ()).unwrap_err();
    assert!(e.qmp_error().is_some());
    let schema = c.query("qmp-schema").unwrap();
    assert!(schema.as_array().unwrap().len() > 100);
}

#[test]
fn exec_oob_runs_query_yank() {
    let Some(q) = system("exec_oob_runs_query_yank") else {
        return;
    };
    let c = Client::builder()
        .oob(true)
        .timeout(T)
        .connect_unix(q.socket())
        .unwrap();
    assert!(c.oob_enabled());
    assert!(c.execute_oob("query-yank", ()).unwrap().is_array());
}

#[test]
fn sigkill_during_a_command_returns_disconnected_at_once() {
    let Some(mut q) = system("sigkill_during_a_command_returns_disconnected_at_once") else {
        return;
    };
    // A long timeout: a Timeout error would mean the death was not noticed.
    let c = Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_unix(q.socket())
        .unwrap();
    // Stopped, QEMU cannot answer: the command is surely in flight when it is killed.
    signal(&q, "-STOP");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let start = Instant::now();
            (c.execute("query-status", ()), start.elapsed())
        });
        let until = Instant::now() + T;
        while c.pending() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.pending(), 1);
        std::thread::sleep(Duration::from_millis(50));
        q.kill();
        let (result, took) = waiting.join().unwrap();
        let e = result.unwrap_err();
        assert!(e.is_disconnected(), "{e:?}");
        assert!(e.to_string().contains("'query-status'"), "{e}");
        eprintln!("disconnected {took:?} after sending (including the 50 ms before the kill)");
    });
    let e = c.execute("query-status", ()).unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert!(!c.is_connected());
}

#[test]
fn callbacks_handlers_and_wait() {
    let Some(q) = system("callbacks_handlers_and_wait") else {
        return;
    };
    let c = Client::builder()
        .timeout(T)
        .handler_threads(2)
        .connect_unix(q.socket())
        .unwrap();
    let stops = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&stops);
    c.on_event("STOP", move |_| {
        s2.fetch_add(1, Ordering::SeqCst);
    });
    let a2 = Arc::clone(&all);
    let any = c.on_any_event(move |e| a2.lock().unwrap().push(e.name.clone()));
    c.on_event("RESUME", |_| panic!("handler panics on purpose"));
    let replies = Arc::new(Mutex::new(Vec::new()));
    for cmd in ["stop", "cont", "query-status", "no-such-command"] {
        let r = Arc::clone(&replies);
        c.execute_async(cmd, (), move |res| {
            r.lock()
                .unwrap()
                .push((cmd, res.map_err(|e| e.to_string())));
        })
        .unwrap();
    }
    // Replies come before their wait() returns; events right after their command's reply may
    // still be on their way, so wait for them by name too.
    c.wait_timeout(T).unwrap();
    c.wait_event("RESUME", |_| true, T).unwrap();
    c.wait_timeout(T).unwrap();
    let replies = replies.lock().unwrap();
    assert_eq!(replies.len(), 4);
    let get = |n: &str| replies.iter().find(|(c, _)| *c == n).unwrap().1.clone();
    assert_eq!(get("stop"), Ok(json!({})));
    assert_eq!(get("query-status").unwrap()["status"], "running");
    assert!(get("no-such-command")
        .unwrap_err()
        .contains("CommandNotFound"));
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert_eq!(*all.lock().unwrap(), ["STOP", "RESUME"]);
    let panics = c.take_handler_panics();
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert!(panics[0].message.contains("on purpose"));
    assert_eq!(panics[0].source, "handler for event RESUME");
    // The client goes on, handlers too.
    assert!(c.remove_handler(any));
    assert!(!c.remove_handler(any));
    c.execute("stop", ()).unwrap();
    c.wait_event("STOP", |_| true, T).unwrap();
    c.wait_timeout(T).unwrap();
    assert_eq!(stops.load(Ordering::SeqCst), 2);
    assert_eq!(all.lock().unwrap().len(), 2);
}

#[test]
fn a_full_event_queue_drops_the_oldest_and_never_stalls_replies() {
    let Some(q) = system("a_full_event_queue_drops_the_oldest_and_never_stalls_replies") else {
        return;
    };
    let c = Client::builder()
        .timeout(T)
        .event_queue_capacity(4)
        .connect_unix(q.socket())
        .unwrap();
    for _ in 0..10 {
        c.execute("stop", ()).unwrap();
        c.execute("cont", ()).unwrap();
    }
    // Nobody read the 20 events; the replies came all the same. QEMU sends each event before the
    // reply to the command that caused it, so all 20 are in.
    assert_eq!(c.dropped_events(), 16);
    assert_eq!(c.stats().dropped_events, 16);
    let names: Vec<_> = c.take_events().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["STOP", "RESUME", "STOP", "RESUME"]);
}
