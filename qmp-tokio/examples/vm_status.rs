//! A small tool: prints QEMU's version and the VM's run state.
//!
//! `cargo run -p qmp-tokio --example vm_status -- /path/to/qmp.sock` (or `HOST:PORT`)

use qmp_proto::command::QueryStatus;
use qmp_tokio::Options;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .ok_or("usage: vm_status SOCKET|HOST:PORT")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = if target.contains('/') || !target.contains(':') {
            qmp_tokio::connect_unix(&target, Options::default()).await?
        } else {
            qmp_tokio::connect_tcp(target.parse()?, Options::default()).await?
        };
        let status = client.run(&QueryStatus).await?;
        let running = if status.running {
            "running"
        } else {
            "not running"
        };
        let version = client.greeting().ok_or("no greeting")?.version;
        println!("QEMU {version}: {} ({running})", status.status);
        Ok(())
    })
}
