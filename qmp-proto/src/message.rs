//! The messages a QMP server sends: greeting, replies, events.
//!
//! Classification follows the spec: an object with `QMP` is the greeting, one with `event` is an
//! event, one with `return` or `error` is a reply. Unknown members are ignored, unknown capabilities,
//! error classes and event names are kept as data.

use serde_json::{Map, Value};
use std::fmt;

/// A message from the server, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The greeting QEMU sends when a client connects.
    Greeting(Greeting),
    /// A reply to a command.
    Reply(Reply),
    /// An asynchronous event.
    Event(Event),
}

/// The server's greeting: `{"QMP": {"version": ..., "capabilities": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version.
    pub version: Version,
    /// The distribution's package string (e.g. `Debian 1:10.0.2+ds-2`), empty when absent.
    pub package: String,
    /// Capabilities the server offers, including ones this library does not know.
    pub capabilities: Vec<String>,
}

impl Greeting {
    /// Whether the server offers `capability` (e.g. `"oob"`).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// A QEMU version triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version, e.g. 10.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// A reply: `{"return": ..., "id": ...}` or `{"error": {...}, "id": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The `id` the command carried, verbatim; `None` when the server could not read one (it answers
    /// input it could not parse that way).
    pub id: Option<Value>,
    /// The `return` value, or the error.
    pub result: Result<Value, QmpError>,
}

/// An error reply's `error` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    /// The error class.
    pub class: ErrorClass,
    /// Human-readable description. QEMU's spec asks clients not to parse it.
    pub desc: String,
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.desc)
    }
}

impl std::error::Error for QmpError {}

/// QMP error classes (`QapiErrorClass`, unchanged since QEMU 1.2), with a catch-all for others
/// (QGA before 1.2 used more, and downstream builds may add their own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Most errors.
    GenericError,
    /// The command does not exist, is disabled, or negotiation is (not) complete.
    CommandNotFound,
    /// A device exists but is not active.
    DeviceNotActive,
    /// A device was not found.
    DeviceNotFound,
    /// KVM lacks a needed capability.
    KVMMissingCap,
    /// A class this library does not know, verbatim.
    Other(String),
}

impl ErrorClass {
    /// The class as QEMU spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
            ErrorClass::Other(s) => s,
        }
    }
}

impl From<String> for ErrorClass {
    fn from(s: String) -> Self {
        match s.as_str() {
            "GenericError" => ErrorClass::GenericError,
            "CommandNotFound" => ErrorClass::CommandNotFound,
            "DeviceNotActive" => ErrorClass::DeviceNotActive,
            "DeviceNotFound" => ErrorClass::DeviceNotFound,
            "KVMMissingCap" => ErrorClass::KVMMissingCap,
            _ => ErrorClass::Other(s),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An asynchronous event: `{"event": NAME, "data": {...}, "timestamp": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name, e.g. `SHUTDOWN`.
    pub name: String,
    /// The event's data; empty when the message has no `data` member.
    pub data: Map<String, Value>,
    /// When QEMU built the event, if the message says. Rate-limited events keep their original
    /// timestamp, so timestamps can run backwards relative to arrival order.
    pub timestamp: Option<Timestamp>,
}

impl Event {
    /// Decodes the data as the typed event `E` when this event is named `E::NAME`.
    ///
    /// Returns `None` for another event, `Some(Err(..))` when the name matches but the data does not
    /// have the expected shape.
    ///
    /// See [`events`](crate::events) for an example.
    pub fn decode<E: crate::events::EventData>(&self) -> Option<Result<E, serde_json::Error>> {
        (self.name == E::NAME).then(|| serde::Deserialize::deserialize(&self.data))
    }
}

/// An event's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (QEMU writes -1 when the host clock failed).
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// Why an object could not be read as a QMP message.
pub(crate) type ShapeError = &'static str;

fn take_str(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn take_u64(map: &Map<String, Value>, key: &str) -> Option<u64> {
    map.get(key).and_then(Value::as_u64)
}

/// The top-level members a message is classified by, taken out of its object; the parser fills it
/// in as it reads the message, so that the object itself is never built (`json::parse_envelope`).
/// Other members are ignored. A member given twice counts with its last value, as in a `Map`.
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    qmp: Option<Value>,
    event: Option<Value>,
    data: Option<Value>,
    timestamp: Option<Stamp>,
    id: Option<Value>,
    ret: Option<Value>,
    error: Option<Value>,
}

/// An event's `timestamp` member: as parsed, or already read as a timestamp.
#[derive(Debug)]
enum Stamp {
    Value(Value),
    Read(Timestamp),
}

impl Envelope {
    /// The member `key` has the value `v`; dropped when it is not one of the envelope's.
    #[inline]
    pub(crate) fn set(&mut self, key: &str, v: Value) {
        let slot = match key {
            "QMP" => &mut self.qmp,
            "event" => &mut self.event,
            "data" => &mut self.data,
            "timestamp" => {
                self.timestamp = Some(Stamp::Value(v));
                return;
            }
            "id" => &mut self.id,
            "return" => &mut self.ret,
            "error" => &mut self.error,
            _ => return,
        };
        *slot = Some(v);
    }

    /// The member `timestamp`, read by the parser as a valid event timestamp.
    pub(crate) fn set_timestamp(&mut self, t: Timestamp) {
        self.timestamp = Some(Stamp::Read(t));
    }

    /// The top-level `id`, for an error report.
    pub(crate) fn into_id(self) -> Option<Value> {
        self.id
    }
}

impl ServerMessage {
    /// Classifies a parsed top-level object.
    #[cfg(test)]
    pub(crate) fn from_object(obj: Map<String, Value>) -> Result<Self, ShapeError> {
        let mut envelope = Envelope::default();
        for (k, v) in obj {
            envelope.set(&k, v);
        }
        Self::from_envelope(&mut envelope)
    }

    /// Classifies a top-level object by its envelope members, taking what it uses. The `id` is
    /// left in place when the object is not a valid message, for the error report.
    pub(crate) fn from_envelope(m: &mut Envelope) -> Result<Self, ShapeError> {
        if let Some(qmp) = m.qmp.take() {
            return Greeting::from_value(qmp).map(ServerMessage::Greeting);
        }
        if let Some(event) = m.event.take() {
            return Event::from_members(event, m.data.take(), m.timestamp.take())
                .map(ServerMessage::Event);
        }
        if let Some(ret) = m.ret.take() {
            return Ok(ServerMessage::Reply(Reply {
                id: m.id.take(),
                result: Ok(ret),
            }));
        }
        if let Some(err) = m.error.take() {
            let Value::Object(mut err) = err else {
                return Err("'error' is not an object");
            };
            let class = take_str(&mut err, "class").ok_or("'error' has no string 'class'")?;
            let desc = take_str(&mut err, "desc").unwrap_or_default();
            let error = QmpError {
                class: class.into(),
                desc,
            };
            return Ok(ServerMessage::Reply(Reply {
                id: m.id.take(),
                result: Err(error),
            }));
        }
        Err("object is neither a greeting, a reply nor an event")
    }
}

impl Greeting {
    fn from_value(qmp: Value) -> Result<Self, ShapeError> {
        let Value::Object(mut qmp) = qmp else {
            return Err("'QMP' is not an object");
        };
        let mut version = match qmp.remove("version") {
            Some(Value::Object(v)) => v,
            _ => return Err("greeting has no 'version' object"),
        };
        let Some(Value::Object(triple)) = version.get("qemu") else {
            return Err("greeting has no 'version.qemu' object");
        };
        let version_triple = Version {
            major: take_u64(triple, "major").ok_or("greeting version has no 'major'")?,
            minor: take_u64(triple, "minor").ok_or("greeting version has no 'minor'")?,
            micro: take_u64(triple, "micro").ok_or("greeting version has no 'micro'")?,
        };
        let package = take_str(&mut version, "package").unwrap_or_default();
        let capabilities = match qmp.remove("capabilities") {
            Some(Value::Array(caps)) => caps
                .into_iter()
                .filter_map(|c| match c {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
            Some(_) => return Err("greeting 'capabilities' is not an array"),
        };
        Ok(Greeting {
            version: version_triple,
            package,
            capabilities,
        })
    }
}

impl Event {
    fn from_members(
        name: Value,
        data: Option<Value>,
        timestamp: Option<Stamp>,
    ) -> Result<Self, ShapeError> {
        let Value::String(name) = name else {
            return Err("'event' is not a string");
        };
        let data = match data {
            None => Map::new(),
            Some(Value::Object(d)) => d,
            Some(_) => return Err("event 'data' is not an object"),
        };
        let timestamp = match timestamp {
            Some(Stamp::Read(t)) => Some(t),
            Some(Stamp::Value(Value::Object(t))) => Some(Timestamp {
                seconds: t
                    .get("seconds")
                    .and_then(Value::as_i64)
                    .ok_or("bad event timestamp")?,
                microseconds: t
                    .get("microseconds")
                    .and_then(Value::as_i64)
                    .ok_or("bad event timestamp")?,
            }),
            None => None,
            Some(_) => return Err("event 'timestamp' is not an object"),
        };
        Ok(Event {
            name,
            data,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify(v: Value) -> Result<ServerMessage, ShapeError> {
        match v {
            Value::Object(m) => ServerMessage::from_object(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn greeting_keeps_unknown_capabilities() {
        let g = classify(
            json!({"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10},
            "package": "Debian"}, "capabilities": ["oob", "future-cap"], "extra": 1}}),
        )
        .unwrap();
        let ServerMessage::Greeting(g) = g else {
            panic!()
        };
        assert_eq!(
            g.version,
            Version {
                major: 10,
                minor: 0,
                micro: 2
            }
        );
        assert_eq!(g.version.to_string(), "10.0.2");
        assert_eq!(g.package, "Debian");
        assert!(
            g.has_capability("oob") && g.has_capability("future-cap") && !g.has_capability("x")
        );
    }

    #[test]
    fn replies_and_error_classes() {
        let r = classify(json!({"return": {"a": 1}, "id": "x1", "unknown": true})).unwrap();
        assert_eq!(
            r,
            ServerMessage::Reply(Reply {
                id: Some(json!("x1")),
                result: Ok(json!({"a": 1}))
            })
        );
        let e =
            classify(json!({"id": 3, "error": {"class": "CommandNotFound", "desc": "d"}})).unwrap();
        let ServerMessage::Reply(Reply {
            id,
            result: Err(err),
        }) = e
        else {
            panic!()
        };
        assert_eq!(
            (id, err.class, err.desc.as_str()),
            (Some(json!(3)), ErrorClass::CommandNotFound, "d")
        );
        let e = classify(json!({"error": {"class": "QgaCommandFailed", "desc": "x"}})).unwrap();
        let ServerMessage::Reply(Reply {
            id: None,
            result: Err(err),
        }) = e
        else {
            panic!()
        };
        assert_eq!(err.class, ErrorClass::Other("QgaCommandFailed".into()));
        assert_eq!(err.to_string(), "QgaCommandFailed: x");
        for known in [
            "GenericError",
            "CommandNotFound",
            "DeviceNotActive",
            "DeviceNotFound",
            "KVMMissingCap",
        ] {
            let c = ErrorClass::from(known.to_string());
            assert!(!matches!(c, ErrorClass::Other(_)));
            assert_eq!(c.as_str(), known);
        }
    }

    #[test]
    fn events_with_and_without_data() {
        let e = classify(json!({"event": "STOP", "timestamp": {"seconds": 5, "microseconds": 7}}))
            .unwrap();
        assert_eq!(
            e,
            ServerMessage::Event(Event {
                name: "STOP".into(),
                data: Map::new(),
                timestamp: Some(Timestamp {
                    seconds: 5,
                    microseconds: 7
                })
            })
        );
        let e = classify(json!({"event": "X", "data": {"k": [1]}})).unwrap();
        let ServerMessage::Event(e) = e else { panic!() };
        assert_eq!((e.data["k"].clone(), e.timestamp), (json!([1]), None));
    }

    #[test]
    fn shape_errors() {
        for bad in [
            json!({}),
            json!({"QMP": 1}),
            json!({"QMP": {"version": {"qemu": {"major": 1}}}}),
            json!({"event": 5}),
            json!({"event": "X", "data": []}),
            json!({"event": "X", "timestamp": {"seconds": "a"}}),
            json!({"error": "boom", "id": 1}),
            json!({"error": {"desc": "no class"}}),
        ] {
            assert!(classify(bad.clone()).is_err(), "{bad}");
        }
    }
}
