//! A small tool: prints QEMU's version and the VM's run state.
//!
//! `cargo run -p qmp-async-std --example vm_status_async_std -- /path/to/qmp.sock` (or `HOST:PORT`)

use qmp_async_std::Client;
use qmp_qapi::qmp::QueryStatus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        let target = std::env::args()
            .nth(1)
            .ok_or("usage: vm_status_async_std SOCKET|HOST:PORT")?;
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
    })
}
