//! The usage of the old Ruby QMP client, translated: event callbacks, a blocking query, commands
//! with completion callbacks, and `wait()` until nothing is outstanding.
//!
//! `cargo run -p qmp-blocking --example callbacks -- /path/to/qmp.sock` against
//! `qemu-system-x86_64 -M none -nodefaults -display none -qmp unix:/path/to/qmp.sock,server=on,wait=off`

use qmp_blocking::Client;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: callbacks SOCKET")?;
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_unix(path)?;
    println!("connected to QEMU {}", client.greeting().version);

    // Events by callback: by name, or every event.
    client.on_event("STOP", |_| println!("callback: the VM stopped"));
    client.on_event("RESUME", |_| println!("callback: the VM resumed"));
    client.on_any_event(|e| println!("event {} at {:?}", e.name, e.timestamp));

    // A blocking query: query("status") runs query-status.
    let status = client.query("status")?;
    println!("status: {}", status["status"]);

    // Commands with a completion callback; neither call blocks.
    client.execute_async("stop", (), |result| match result {
        Ok(_) => println!("stop: done"),
        Err(e) => println!("stop: {e}"),
    })?;
    client.execute_async("cont", (), |result| match result {
        Ok(_) => println!("cont: done"),
        Err(e) => println!("cont: {e}"),
    })?;

    // Wait until every command has been answered and every callback has run.
    client.wait()?;
    println!("all done; status: {}", client.query("status")?["status"]);
    Ok(())
}
