//! The guest agent: which agent, which OS, and a command run in the guest with its output.
//!
//! `cargo run -p qmp-blocking --example agent_info -- /path/to/qga.sock` against the host end of
//! a guest's agent port (`-chardev socket,path=/path/to/qga.sock,server=on,wait=off,id=qga0
//! -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0`), or
//! against `qemu-ga -m unix-listen -p /path/to/qga.sock` run on this machine.

use qmp_blocking::qmp_proto::guest_exec::ExecRequest;
use qmp_blocking::{Agent, Error};
use qmp_qapi::qga::{GuestGetOsinfo, GuestInfo};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: agent_info SOCKET")?;
    let agent = match Agent::builder()
        .connect_timeout(Duration::from_secs(5))
        .connect_unix(path)
    {
        Err(e @ Error::AgentNotResponding { .. }) => {
            eprintln!("{e}");
            std::process::exit(4);
        }
        r => r?,
    };
    let info = agent.run(&GuestInfo)?;
    let enabled = info.supported_commands.iter().filter(|c| c.enabled).count();
    println!("qemu-ga {} ({enabled} commands enabled)", info.version);
    let os = agent.run(&GuestGetOsinfo)?;
    println!(
        "os: {} (kernel {})",
        os.pretty_name.as_deref().unwrap_or("?"),
        os.kernel_release.as_deref().unwrap_or("?")
    );
    let out = agent.guest_exec(
        &ExecRequest::new("/bin/echo").arg("hello from the guest"),
        Duration::from_secs(10),
    )?;
    print!("exec: {}", String::from_utf8_lossy(&out.stdout));
    println!("exit code: {:?}", out.exit_code);
    Ok(())
}
