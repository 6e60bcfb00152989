//! Typed commands: the [`Command`] trait.
//!
//! A command type *is* its arguments: it serializes to the `arguments` object (a unit struct, which
//! serializes to nothing, sends none). The crate `qmp-qapi` generates a type for every command of
//! QEMU's schema (`qmp_qapi::qmp::QueryVersion`, `qmp_qapi::qmp::BlockdevAdd`, ...); the sans-IO
//! core does not depend on it. Implement [`Command`] for your own commands the same way:
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

/// The arguments of `add-fd`, for the clients' `add_fd` helper: `fdset-id` and `opaque` when
/// given.
pub fn add_fd_arguments(
    fdset_id: Option<i64>,
    opaque: Option<&str>,
) -> serde_json::Map<String, Value> {
    let mut args = serde_json::Map::new();
    if let Some(id) = fdset_id {
        args.insert("fdset-id".into(), id.into());
    }
    if let Some(o) = opaque {
        args.insert("opaque".into(), o.into());
    }
    args
}

/// The `return` of commands that return nothing (`{}`); unknown members are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Empty {}

/// The arguments of `qmp_capabilities`, which the [`Session`](crate::Session) sends by itself
/// (the generated `qmp_qapi::qmp::QmpCapabilities` is the public command type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct QmpCapabilities {
    /// Capabilities to enable, e.g. `["oob"]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) enable: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A command of the shape the generated ones have: its arguments, renamed members.
    #[derive(Serialize)]
    struct Example {
        #[serde(rename = "command-line")]
        command_line: String,
        #[serde(rename = "cpu-index", skip_serializing_if = "Option::is_none")]
        cpu_index: Option<i64>,
    }

    impl Command for Example {
        const NAME: &'static str = "human-monitor-command";
        type Output = String;
    }

    #[test]
    fn arguments_serialize_as_qemu_expects() {
        let c = Example {
            command_line: "info status".into(),
            cpu_index: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"command-line": "info status"})
        );
        const { assert!(!Example::ALLOW_OOB) };
        assert_eq!(
            serde_json::to_value(QmpCapabilities::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn outputs_decode_and_empty_ignores_members() {
        assert_eq!(
            Example::decode_output(json!("VM status: running\r\n")).unwrap(),
            "VM status: running\r\n"
        );
        assert!(Example::decode_output(json!({"x": 1})).is_err());
        assert_eq!(
            serde_json::from_value::<Empty>(json!({"new": 1})).unwrap(),
            Empty {}
        );
    }
}
