//! Typed commands: the [`Command`] trait and definitions of the common QMP commands.
//!
//! A command type *is* its arguments: it serializes to the `arguments` object (a unit struct, which
//! serializes to nothing, sends none). Implement [`Command`] for your own commands the same way:
//!
//! ```
//! use qmp_proto::Command;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct QueryName;
//!
//! #[derive(Deserialize)]
//! struct NameInfo { name: Option<String> }
//!
//! impl Command for QueryName {
//!     const NAME: &'static str = "query-name";
//!     type Output = NameInfo;
//! }
//!
//! let out = QueryName::decode_output(serde_json::json!({"name": "vm1"})).unwrap();
//! assert_eq!(out.name.as_deref(), Some("vm1"));
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A QMP command with typed arguments (the implementing type) and a typed `return` value.
pub trait Command: Serialize {
    /// The command's name, e.g. `query-version`.
    const NAME: &'static str;
    /// The type of the command's `return` value.
    type Output: DeserializeOwned;
    /// Whether QEMU can run the command out-of-band (`exec-oob`, with the `oob` capability
    /// negotiated): its schema says `allow-oob`.
    const ALLOW_OOB: bool = false;

    /// Decodes the command's `return` value.
    fn decode_output(value: Value) -> Result<Self::Output, serde_json::Error> {
        serde_json::from_value(value)
    }
}

/// The command behind the `query(what)` shortcut of the clients: `"status"` → `query-status`; a name
/// that already starts with `query-` is used as it is.
///
/// ```
/// assert_eq!(qmp_proto::command::query_command_name("status"), "query-status");
/// assert_eq!(qmp_proto::command::query_command_name("query-version"), "query-version");
/// ```
pub fn query_command_name(what: &str) -> std::borrow::Cow<'_, str> {
    if what.starts_with("query-") {
        what.into()
    } else {
        format!("query-{what}").into()
    }
}

/// The `return` of commands that return nothing (`{}`); unknown members are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Empty {}

macro_rules! unit_command {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $out:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $ty;

        impl Command for $ty {
            const NAME: &'static str = $name;
            type Output = $out;
        }
    };
}

/// Capability negotiation. The [`Session`](crate::Session) sends it by itself; this type exists
/// for tools that drive negotiation by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QmpCapabilities {
    /// Capabilities to enable, e.g. `["oob"]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enable: Vec<String>,
}

impl Command for QmpCapabilities {
    const NAME: &'static str = "qmp_capabilities";
    type Output = Empty;
}

unit_command!(
    /// `query-version`: QEMU's version.
    QueryVersion, "query-version", VersionInfo
);
unit_command!(
    /// `query-status`: whether the VM runs, and its run state (system emulators only).
    QueryStatus, "query-status", StatusInfo
);
unit_command!(
    /// `query-commands`: the commands this QEMU accepts.
    QueryCommands, "query-commands", Vec<CommandInfo>
);
unit_command!(
    /// `stop`: pauses the VM (a `STOP` event follows).
    Stop, "stop", Empty
);
unit_command!(
    /// `cont`: resumes the VM (a `RESUME` event follows).
    Cont, "cont", Empty
);
unit_command!(
    /// `system_reset`: resets the VM (a `RESET` event follows).
    SystemReset, "system_reset", Empty
);
unit_command!(
    /// `system_powerdown`: asks the guest to power down (ACPI).
    SystemPowerdown, "system_powerdown", Empty
);
unit_command!(
    /// `quit`: QEMU exits after replying, closing the connection.
    Quit, "quit", Empty
);
unit_command!(
    /// `query-fdsets`: the file descriptor sets added with `add-fd`.
    QueryFdsets, "query-fdsets", Vec<FdsetInfo>
);

/// `query-version`'s return value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    /// The version triple.
    pub qemu: VersionTriple,
    /// The distribution's package string.
    pub package: String,
}

/// A version triple as `query-version` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VersionTriple {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
}

/// `query-status`'s return value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// Whether the VM is running.
    pub running: bool,
    /// The run state, e.g. `running`, `paused`, `prelaunch`, `shutdown` (QEMU's `RunState`; kept as
    /// a string so new states are data, not errors).
    pub status: String,
}

/// One entry of `query-commands`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommandInfo {
    /// The command's name.
    pub name: String,
}

/// `human-monitor-command`: runs an HMP command and returns its text output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HumanMonitorCommand {
    /// The HMP command line, e.g. `info status`.
    #[serde(rename = "command-line")]
    pub command_line: String,
    /// The CPU to use as the current one.
    #[serde(rename = "cpu-index", skip_serializing_if = "Option::is_none")]
    pub cpu_index: Option<i64>,
}

impl HumanMonitorCommand {
    /// The HMP command `command_line`.
    pub fn new(command_line: impl Into<String>) -> Self {
        HumanMonitorCommand {
            command_line: command_line.into(),
            cpu_index: None,
        }
    }
}

impl Command for HumanMonitorCommand {
    const NAME: &'static str = "human-monitor-command";
    type Output = String;
}

/// `getfd`: takes the file descriptor sent with this command (SCM_RIGHTS) and names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Getfd {
    /// The name to give the descriptor.
    pub fdname: String,
}

impl Command for Getfd {
    const NAME: &'static str = "getfd";
    type Output = Empty;
}

/// `closefd`: closes a descriptor named with `getfd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Closefd {
    /// The descriptor's name.
    pub fdname: String,
}

impl Command for Closefd {
    const NAME: &'static str = "closefd";
    type Output = Empty;
}

/// `add-fd`: adds the file descriptor sent with this command (SCM_RIGHTS) to an fd set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddFd {
    /// The set to add to; a new set when absent.
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<i64>,
    /// A free-form string kept with the descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

impl Command for AddFd {
    const NAME: &'static str = "add-fd";
    type Output = AddFdInfo;
}

/// `add-fd`'s return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AddFdInfo {
    /// The set the descriptor was added to.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor's number inside QEMU.
    pub fd: i64,
}

/// `remove-fd`: removes a descriptor (or a whole set) added with `add-fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemoveFd {
    /// The set.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// The descriptor; the whole set when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
}

impl Command for RemoveFd {
    const NAME: &'static str = "remove-fd";
    type Output = Empty;
}

/// One fd set in `query-fdsets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FdsetInfo {
    /// The set's id.
    #[serde(rename = "fdset-id")]
    pub fdset_id: i64,
    /// Its descriptors.
    pub fds: Vec<FdsetFdInfo>,
}

/// One descriptor of an fd set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FdsetFdInfo {
    /// The descriptor's number inside QEMU.
    pub fd: i64,
    /// The string given to `add-fd`.
    pub opaque: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_serialize_as_qemu_expects() {
        assert_eq!(serde_json::to_value(QueryVersion).unwrap(), Value::Null);
        assert_eq!(
            serde_json::to_value(HumanMonitorCommand::new("info status")).unwrap(),
            json!({"command-line": "info status"})
        );
        assert_eq!(
            serde_json::to_value(AddFd {
                fdset_id: Some(3),
                opaque: None
            })
            .unwrap(),
            json!({"fdset-id": 3})
        );
        assert_eq!(
            serde_json::to_value(RemoveFd {
                fdset_id: 3,
                fd: None
            })
            .unwrap(),
            json!({"fdset-id": 3})
        );
        assert_eq!(
            serde_json::to_value(QmpCapabilities::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn outputs_decode_and_ignore_unknown_members() {
        let v = QueryVersion::decode_output(json!({"qemu": {"major": 10, "minor": 0, "micro": 2},
            "package": "p", "new": 1}))
        .unwrap();
        assert_eq!((v.qemu.major, v.package.as_str()), (10, "p"));
        let s = QueryStatus::decode_output(json!({"running": false, "status": "paused"})).unwrap();
        assert_eq!(
            s,
            StatusInfo {
                running: false,
                status: "paused".into()
            }
        );
        assert_eq!(Stop::decode_output(json!({})).unwrap(), Empty {});
        let f =
            QueryFdsets::decode_output(json!([{"fdset-id": 1, "fds": [{"fd": 9, "opaque": "x"}]}]))
                .unwrap();
        assert_eq!(
            f[0].fds[0],
            FdsetFdInfo {
                fd: 9,
                opaque: Some("x".into())
            }
        );
        assert_eq!(
            HumanMonitorCommand::decode_output(json!("VM status: running\r\n")).unwrap(),
            "VM status: running\r\n"
        );
        assert!(QueryStatus::decode_output(json!({"running": "no"})).is_err());
    }
}
