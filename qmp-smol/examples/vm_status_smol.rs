//! A small tool: prints QEMU's version and the VM's run state.
//!
//! `cargo run -p qmp-smol --example vm_status_smol -- /path/to/qmp.sock` (or `HOST:PORT`)

use qmp_qapi::qmp::QueryStatus;
use qmp_smol::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let target = std::env::args()
            .nth(1)
            .ok_or("usage: vm_status_smol SOCKET|HOST:PORT")?;
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
