//! A handler that panics is reported through `take_handler_panics`, not printed by the panic hook;
//! other panics still reach the program's hook. Alone in its test binary: it sets the process's
//! panic hook.

#![allow(clippy::unwrap_used)]

use qmp_blocking::Client;
use qmp_testkit::{Emulator, Qemu, QemuOptions};
use std::sync::Mutex;
use std::time::Duration;

static HOOKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn handler_panics_are_reported_not_printed() {
    let Some(q) = Qemu::start(QemuOptions::new(Emulator::System), "handler panics") else {
        return;
    };
    // The program's own hook, in place before the client starts.
    std::panic::set_hook(Box::new(|info| {
        HOOKED.lock().unwrap().push(info.to_string());
    }));
    let client = Client::connect_unix(q.socket()).unwrap();
    client.on_event("STOP", |_| panic!("handler boom"));
    client
        .execute_async("cont", (), |_| panic!("callback boom"))
        .unwrap();
    client.execute("stop", ()).unwrap();
    client
        .wait_event("STOP", |_| true, Duration::from_secs(5))
        .unwrap();
    client.wait().unwrap();
    let reported: Vec<String> = client
        .take_handler_panics()
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(reported.contains(&"handler boom".to_string()));
    assert!(reported.contains(&"callback boom".to_string()));
    let hooked = HOOKED.lock().unwrap().clone();
    assert!(
        hooked.is_empty(),
        "caught panics reached the hook: {hooked:?}"
    );
    // A panic elsewhere still reaches the program's hook.
    let other = std::thread::spawn(|| panic!("elsewhere")).join();
    assert!(other.is_err());
    let hooked = HOOKED.lock().unwrap().clone();
    assert_eq!(hooked.len(), 1, "{hooked:?}");
    assert!(hooked[0].contains("elsewhere"));
}
