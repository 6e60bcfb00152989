//! A small tool: prints QEMU's version and the VM's run state.
//!
//! `cargo run -p qmp-tokio --example vm_status_tokio -- /path/to/qmp.sock` (or `HOST:PORT`)

use qmp_qapi::qmp::QueryStatus;
use qmp_tokio::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(vm_status())
}

async fn vm_status() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .ok_or("usage: vm_status_tokio SOCKET|HOST:PORT")?;
    let client = if target.contains('/') || !target.contains(':') {
        Client::connect_unix(&target).await?
    } else {
        Client::connect_tcp(target.as_str()).await?
    };
    let status = client.run(&QueryStatus).await?;
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
