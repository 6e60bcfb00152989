//! A small tool: prints QEMU's version and the VM's run state.
//!
//! `cargo run -p qmp-blocking --example vm_status -- /path/to/qmp.sock` (or `HOST:PORT`)

use qmp_blocking::Client;
use qmp_qapi::qmp::QueryStatus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .ok_or("usage: vm_status SOCKET|HOST:PORT")?;
    let client = if target.contains('/') || !target.contains(':') {
        Client::connect_unix(&target)?
    } else {
        Client::connect_tcp(target.as_str())?
    };
    let status = client.run(&QueryStatus)?;
    let running = if status.running {
        "running"
    } else {
        "not running"
    };
    println!(
        "QEMU {}: {} ({running})",
        client.greeting().version,
        status.status
    );
    Ok(())
}
