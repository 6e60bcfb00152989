//! Decoding from an owned [`serde_json::Value`]: the [`FromValue`] trait and its error.
//!
//! QMP replies and events reach the caller as `serde_json::Value`s already (`qmp-proto` parses
//! every message into one), so the generated types decode by taking that value apart, moving its
//! strings, instead of running it through serde's `Deserializer` again. Their `Deserialize`
//! impls (for other sources) collect a `Value` first and come here.

use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// How many levels of recursive types a decode may go through: the types nest without bound
/// only through a `Box` or a `Vec` (an image's `backing-image`, a PCI bridge's devices), and
/// each level costs stack. A value nested deeper is a [`DecodeError`], never a stack overflow.
///
/// Measured on x86_64: one level of `ImageInfo`'s backing chain takes about 6–7 KiB of stack in a
/// debug build (about 1.5 KiB in release): 256 levels fit the 2 MiB stack of a spawned thread in
/// both (tested in debug by `tests/nesting.rs`); 350 overflow it in debug. Real QEMU nests 206 deep at most (`query-named-block-nodes`
/// without `flat` over a 200-image chain). Decode a deeper reply as a `serde_json::Value`.
pub const MAX_NESTING: u32 = 256;

thread_local! {
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

/// Runs one level deeper through a recursive type, refusing past [`MAX_NESTING`].
fn nested<T>(decode: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    let depth = NESTING.with(Cell::get);
    if depth >= MAX_NESTING {
        return Err(DecodeError::new(format!(
            "nested deeper than {MAX_NESTING} levels of recursive types"
        )));
    }
    NESTING.with(|n| n.set(depth + 1));
    let result = decode();
    NESTING.with(|n| n.set(depth));
    result
}

/// Decodes a type from an owned JSON value, moving out of it.
///
/// Every generated type implements it; `Deserialize` is implemented through it.
///
/// ```
/// use qmp_qapi::{qmp::JobStatus, FromValue};
/// let s = JobStatus::from_value(serde_json::json!("concluded")).unwrap();
/// assert_eq!(s, JobStatus::Concluded);
/// // A value this schema does not know is data, not an error.
/// assert_eq!(JobStatus::from_value(serde_json::json!("later")).unwrap(), JobStatus::Other("later".into()));
/// ```
pub trait FromValue: Sized {
    /// Decodes `value`.
    fn from_value(value: Value) -> Result<Self, DecodeError>;
}

/// Why a value did not decode, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The path to the offending value from the decoded root, e.g. `.inserted.image[2]`.
    path: String,
    message: String,
}

impl DecodeError {
    /// An error at the current value.
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            path: String::new(),
            message: message.into(),
        }
    }

    /// The path from the root to the offending value (`.member`, `[index]` steps; empty for
    /// the root itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What was wrong there.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, one member further down.
    #[must_use]
    pub fn in_member(mut self, name: &str) -> Self {
        self.path.insert_str(0, name);
        self.path.insert(0, '.');
        self
    }

    /// The same error, one array element further down.
    #[must_use]
    pub fn in_element(mut self, index: usize) -> Self {
        self.path.insert_str(0, &format!("[{index}]"));
        self
    }

    pub(crate) fn expected(what: &str, got: &Value) -> Self {
        let kind = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        DecodeError::new(format!("expected {what}, got {kind}"))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for serde_json::Error {
    fn from(e: DecodeError) -> Self {
        serde::de::Error::custom(e)
    }
}

impl FromValue for Value {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        Ok(value)
    }
}

impl FromValue for String {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(DecodeError::expected("a string", &other)),
        }
    }
}

impl FromValue for bool {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(DecodeError::expected("a boolean", &other)),
        }
    }
}

impl FromValue for f64 {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match &value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| DecodeError::expected("a number", &value)),
            other => Err(DecodeError::expected("a number", other)),
        }
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            #[inline]
            fn from_value(value: Value) -> Result<Self, DecodeError> {
                let n = match &value {
                    Value::Number(n) => n,
                    other => return Err(DecodeError::expected(concat!("an integer (", stringify!($t), ")"), other)),
                };
                n.as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .or_else(|| n.as_u64().and_then(|u| <$t>::try_from(u).ok()))
                    .ok_or_else(|| DecodeError::new(format!(concat!("{} is not an integer in the range of ", stringify!($t)), n)))
            }
        }
    )*};
}
integers!(i8, i16, i32, i64, u8, u16, u32, u64);

/// `null` (QAPI's `null` type).
impl FromValue for () {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Null => Ok(()),
            other => Err(DecodeError::expected("null", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Array(items) => nested(|| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| T::from_value(v).map_err(|e| e.in_element(i)))
                    .collect()
            }),
            other => Err(DecodeError::expected("an array", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Box<T> {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        nested(|| T::from_value(value).map(Box::new))
    }
}

/// The `return` of commands that return nothing: any object, its members ignored.
impl FromValue for qmp_proto::command::Empty {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Object(_) => Ok(qmp_proto::command::Empty {}),
            other => Err(DecodeError::expected("an object", &other)),
        }
    }
}

/// An object's members.
impl FromValue for Map<String, Value> {
    #[inline]
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Object(m) => Ok(m),
            other => Err(DecodeError::expected("an object", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_check_kind_and_range() {
        assert_eq!(u8::from_value(json!(255)).unwrap(), 255);
        assert!(u8::from_value(json!(256)).is_err());
        assert!(u64::from_value(json!(-1)).is_err());
        assert_eq!(u64::from_value(json!(u64::MAX)).unwrap(), u64::MAX);
        assert_eq!(i64::from_value(json!(-5)).unwrap(), -5);
        assert!(i64::from_value(json!(1.5)).is_err());
        assert_eq!(f64::from_value(json!(2)).unwrap(), 2.0);
        assert!(String::from_value(json!(1)).is_err());
        assert!(<()>::from_value(json!(null)).is_ok());
        assert!(<()>::from_value(json!({})).is_err());
    }

    #[test]
    fn errors_carry_the_path() {
        let e = Vec::<u8>::from_value(json!([1, "x"])).unwrap_err();
        assert_eq!(e.path(), "[1]");
        let e = e.in_member("inserted");
        assert_eq!(
            e.to_string(),
            "at .inserted[1]: expected an integer (u8), got a string"
        );
        let e: serde_json::Error = e.into();
        assert!(e.to_string().contains(".inserted[1]"));
    }
}
