//! What the generated code calls: member access, the traits behind union flattening, and the
//! macros that write the serde impls of each generated type. Not part of the public API.

use crate::{DecodeError, FromValue};
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

/// A type whose wire form is a JSON object: structs, unions, command arguments, event data.
/// Union branches are decoded from, and written into, the union's own object.
pub trait Members: Sized {
    /// Takes this type's members out of `m` (what is left is not this type's).
    fn from_members(m: &mut Map<String, Value>) -> Result<Self, DecodeError>;
    /// Writes this type's members into `m`.
    fn serialize_members<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error>;
}

/// An enum type: its known values by name.
pub trait Names: Sized {
    /// The value named `name`, if this schema knows it.
    fn known(name: &str) -> Option<Self>;
    /// The value's name on the wire.
    fn name(&self) -> &str;
}

/// The members of an object value.
pub fn object(value: Value) -> Result<Map<String, Value>, DecodeError> {
    match value {
        Value::Object(m) => Ok(m),
        other => Err(DecodeError::expected("an object", &other)),
    }
}

/// A required member.
pub fn req<T: FromValue>(m: &mut Map<String, Value>, key: &str) -> Result<T, DecodeError> {
    match m.remove(key) {
        Some(v) => T::from_value(v).map_err(|e| e.in_member(key)),
        None => Err(DecodeError::new(format!("missing member '{key}'"))),
    }
}

/// An optional member.
pub fn opt<T: FromValue>(m: &mut Map<String, Value>, key: &str) -> Result<Option<T>, DecodeError> {
    match m.remove(key) {
        Some(v) => T::from_value(v).map(Some).map_err(|e| e.in_member(key)),
        None => Ok(None),
    }
}

/// The discriminator of a union, as a string (its enum is matched by name).
pub fn tag(m: &mut Map<String, Value>, key: &str) -> Result<String, DecodeError> {
    req(m, key)
}

/// Writes an optional member when it is present.
pub fn opt_entry<M: SerializeMap, T: serde::Serialize>(
    m: &mut M,
    key: &'static str,
    value: &Option<T>,
) -> Result<(), M::Error> {
    match value {
        Some(v) => m.serialize_entry(key, v),
        None => Ok(()),
    }
}

/// Writes members kept verbatim (a union branch this schema does not know, `device_add`'s
/// properties).
pub fn rest_entries<M: SerializeMap>(m: &mut M, rest: &Map<String, Value>) -> Result<(), M::Error> {
    rest.iter().try_for_each(|(k, v)| m.serialize_entry(k, v))
}

/// Decodes a command's `return` value.
pub fn decode<T: FromValue>(value: Value) -> Result<T, serde_json::Error> {
    T::from_value(value).map_err(Into::into)
}

/// `Deserialize` through [`FromValue`].
pub fn deserialize<'de, D: serde::Deserializer<'de>, T: FromValue>(d: D) -> Result<T, D::Error> {
    let v = <Value as serde::Deserialize>::deserialize(d)?;
    T::from_value(v).map_err(serde::de::Error::custom)
}

/// An alternate's value of a JSON kind none of its alternatives has.
pub fn no_alternative(ty: &str, value: &Value) -> DecodeError {
    DecodeError::expected(&format!("one of the alternatives of {ty}"), value)
}

/// `Deserialize` through `FromValue`, for any generated type.
#[macro_export]
#[doc(hidden)]
macro_rules! __deserialize_impls {
    ($($t:ty),* $(,)?) => {$(
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                $crate::rt::deserialize(d)
            }
        }
    )*};
}

/// `FromValue`, `Serialize` and `Deserialize` of an object type, through `Members`.
#[macro_export]
#[doc(hidden)]
macro_rules! __object_impls {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::FromValue for $t {
            #[inline]
            fn from_value(value: ::serde_json::Value) -> ::core::result::Result<Self, $crate::DecodeError> {
                let mut m = $crate::rt::object(value)?;
                <$t as $crate::rt::Members>::from_members(&mut m)
            }
        }
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                let mut m = s.serialize_map(None)?;
                $crate::rt::Members::serialize_members(self, &mut m)?;
                m.end()
            }
        }
        $crate::__deserialize_impls!($t);
    )*};
}

/// An enum's `as_str`, conversions, `Display` and serde impls, through `Names`.
#[macro_export]
#[doc(hidden)]
macro_rules! __enum_impls {
    ($($t:ident),* $(,)?) => {$(
        impl $t {
            /// The value as QEMU spells it.
            #[inline]
            pub fn as_str(&self) -> &str {
                $crate::rt::Names::name(self)
            }
        }
        impl ::core::convert::From<::std::string::String> for $t {
            #[inline]
            fn from(s: ::std::string::String) -> Self {
                match <$t as $crate::rt::Names>::known(&s) {
                    Some(v) => v,
                    None => {
                        $crate::rt::note_fallback();
                        $t::Other(s)
                    }
                }
            }
        }
        impl ::core::convert::From<&str> for $t {
            #[inline]
            fn from(s: &str) -> Self {
                <$t as $crate::rt::Names>::known(s).unwrap_or_else(|| {
                    $crate::rt::note_fallback();
                    $t::Other(s.to_string())
                })
            }
        }
        impl ::core::fmt::Display for $t {
            #[inline]
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl $crate::FromValue for $t {
            #[inline]
            fn from_value(value: ::serde_json::Value) -> ::core::result::Result<Self, $crate::DecodeError> {
                <::std::string::String as $crate::FromValue>::from_value(value).map(Self::from)
            }
        }
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        $crate::__deserialize_impls!($t);
    )*};
}

/// A type without members: `{}` on the wire (`null` accepted; members ignored). Commands
/// without arguments encode as `{}` too, which the session leaves out of the command.
#[macro_export]
#[doc(hidden)]
macro_rules! __unit_impls {
    ($($t:ident),* $(,)?) => {$(
        impl $crate::FromValue for $t {
            #[inline]
            fn from_value(value: ::serde_json::Value) -> ::core::result::Result<Self, $crate::DecodeError> {
                match value {
                    ::serde_json::Value::Null | ::serde_json::Value::Object(_) => Ok($t),
                    other => Err($crate::DecodeError::new(format!("expected an object, got {other}"))),
                }
            }
        }
        impl $crate::rt::Members for $t {
            #[inline]
            fn from_members(_: &mut ::serde_json::Map<::std::string::String, ::serde_json::Value>) -> ::core::result::Result<Self, $crate::DecodeError> {
                Ok($t)
            }
            #[inline]
            fn serialize_members<M: ::serde::ser::SerializeMap>(&self, _: &mut M) -> ::core::result::Result<(), M::Error> {
                Ok(())
            }
        }
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                s.serialize_map(Some(0))?.end()
            }
        }
        $crate::__deserialize_impls!($t);
    )*};
}

/// A command or event whose data is a named type: the wire form is the inner type's.
#[macro_export]
#[doc(hidden)]
macro_rules! __newtype_impls {
    ($($t:ident),* $(,)?) => {$(
        impl $crate::FromValue for $t {
            #[inline]
            fn from_value(value: ::serde_json::Value) -> ::core::result::Result<Self, $crate::DecodeError> {
                $crate::FromValue::from_value(value).map($t)
            }
        }
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                ::serde::Serialize::serialize(&self.0, s)
            }
        }
        $crate::__deserialize_impls!($t);
    )*};
}

thread_local! {
    static FALLBACKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts a decode that fell back to `Other`/`Unknown` on this thread (see [`fallbacks`]).
pub fn note_fallback() {
    FALLBACKS.with(|c| c.set(c.get() + 1));
}

/// How many decodes on this thread fell back to an `Other`/`Unknown` variant so far: the
/// conformance tests use it to prove a value was known to the schema, not merely tolerated.
pub fn fallbacks() -> u64 {
    FALLBACKS.with(|c| c.get())
}
