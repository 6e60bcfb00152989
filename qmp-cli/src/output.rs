//! How results and events are printed.

use qmp_blocking::Event;
use serde_json::Value;
use std::io::IsTerminal;

/// JSON layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Indented, for people.
    Pretty,
    /// One line, for scripts and pipes.
    Compact,
}

impl Style {
    /// `--compact` / `--pretty` when given, else pretty on a terminal and compact otherwise.
    pub(crate) fn choose(compact: bool, pretty: bool) -> Style {
        if compact {
            Style::Compact
        } else if pretty || std::io::stdout().is_terminal() {
            Style::Pretty
        } else {
            Style::Compact
        }
    }

    /// `value` as JSON text in this style (no trailing newline).
    pub(crate) fn json(self, value: &Value) -> String {
        let text = match self {
            Style::Pretty => serde_json::to_string_pretty(value),
            Style::Compact => serde_json::to_string(value),
        };
        // Serialising a Value cannot fail: its keys are strings.
        text.unwrap_or_default()
    }
}

/// An event as QEMU sent it: `{"event": NAME, "data": {...}, "timestamp": {...}}`, in that order
/// (members that QEMU did not send are left out).
pub(crate) fn event_text(style: Style, event: &Event) -> String {
    let mut parts = vec![("event", style.json(&Value::String(event.name.clone())))];
    if !event.data.is_empty() {
        parts.push(("data", style.json(&Value::Object(event.data.clone()))));
    }
    if let Some(t) = &event.timestamp {
        // QEMU's order, seconds first (a serde_json map would sort the keys).
        let (s, us) = (t.seconds, t.microseconds);
        parts.push((
            "timestamp",
            match style {
                Style::Compact => format!("{{\"seconds\":{s},\"microseconds\":{us}}}"),
                Style::Pretty => {
                    format!("{{\n  \"seconds\": {s},\n  \"microseconds\": {us}\n}}")
                }
            },
        ));
    }
    let members: Vec<String> = parts
        .iter()
        .map(|(k, v)| match style {
            Style::Compact => format!("\"{k}\":{v}"),
            Style::Pretty => format!("  \"{k}\": {}", v.replace('\n', "\n  ")),
        })
        .collect();
    match style {
        Style::Compact => format!("{{{}}}", members.join(",")),
        Style::Pretty => format!("{{\n{}\n}}", members.join(",\n")),
    }
}

/// HMP output as text: QEMU ends its lines with CRLF.
pub(crate) fn hmp_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.replace("\r\n", "\n"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_blocking::qmp_proto::Timestamp;
    use serde_json::{json, Map};

    #[test]
    fn styles() {
        let v = json!({"a": [1, 2]});
        assert_eq!(Style::Compact.json(&v), r#"{"a":[1,2]}"#);
        assert_eq!(
            Style::Pretty.json(&v),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}"
        );
        assert_eq!(Style::choose(true, false), Style::Compact);
        assert_eq!(Style::choose(false, true), Style::Pretty);
    }

    #[test]
    fn events_print_as_qemu_sent_them() {
        let mut data = Map::new();
        data.insert("guest".into(), json!(false));
        let e = Event {
            name: "RESET".into(),
            data,
            timestamp: Some(Timestamp {
                seconds: 1,
                microseconds: 2,
            }),
        };
        assert_eq!(
            event_text(Style::Compact, &e),
            r#"{"event":"RESET","data":{"guest":false},"timestamp":{"seconds":1,"microseconds":2}}"#
        );
        let bare = Event {
            name: "STOP".into(),
            data: Map::new(),
            timestamp: None,
        };
        assert_eq!(event_text(Style::Compact, &bare), r#"{"event":"STOP"}"#);
        assert_eq!(
            event_text(Style::Pretty, &e),
            "{\n  \"event\": \"RESET\",\n  \"data\": {\n    \"guest\": false\n  },\n  \"timestamp\": {\n    \"seconds\": 1,\n    \"microseconds\": 2\n  }\n}"
        );
    }

    #[test]
    fn hmp_text_uses_plain_newlines() {
        assert_eq!(
            hmp_text(&json!("VM status: running\r\n")),
            "VM status: running\n"
        );
    }
}
