//! What a QEMU command line needs for a QMP monitor on its stdio, for clients that spawn QEMU.
//!
//! A spawned QEMU without a monitor on stdio never greets, so a client would wait for its
//! connect timeout and then have to guess why. The clients add one unless the command line
//! already puts something on stdio (a monitor, or a serial console the caller wants there).

use std::ffi::OsStr;
use std::path::Path;

/// The arguments to append to `program args…` so that QEMU runs a QMP monitor on stdin/stdout:
/// none when an argument already mentions `stdio`; `--chardev stdio,id=qmp --monitor chardev=qmp`
/// for qemu-storage-daemon; `-qmp stdio` for the system emulators.
///
/// ```
/// use qmp_proto::command_line::stdio_monitor_args;
/// use std::ffi::OsStr;
/// fn args(a: &[&'static str]) -> Vec<&'static OsStr> {
///     a.iter().map(|s| OsStr::new(*s)).collect()
/// }
/// assert_eq!(
///     stdio_monitor_args(OsStr::new("qemu-system-x86_64"), args(&["-M", "none"])),
///     ["-qmp", "stdio"]
/// );
/// assert!(stdio_monitor_args(OsStr::new("qemu-system-x86_64"), args(&["-qmp", "stdio"])).is_empty());
/// assert_eq!(
///     stdio_monitor_args(OsStr::new("/usr/bin/qemu-storage-daemon"), args(&[])),
///     ["--chardev", "stdio,id=qmp", "--monitor", "chardev=qmp"]
/// );
/// ```
pub fn stdio_monitor_args<'a>(
    program: &OsStr,
    args: impl IntoIterator<Item = &'a OsStr>,
) -> &'static [&'static str] {
    if args
        .into_iter()
        .any(|a| a.to_string_lossy().contains("stdio"))
    {
        return &[];
    }
    let name = Path::new(program)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("storage-daemon") {
        &["--chardev", "stdio,id=qmp", "--monitor", "chardev=qmp"]
    } else {
        &["-qmp", "stdio"]
    }
}

/// Appends [`stdio_monitor_args`] to `command`.
pub fn add_stdio_monitor(command: &mut std::process::Command) {
    let extra = stdio_monitor_args(command.get_program(), command.get_args());
    command.args(extra);
}
