//! Command arguments written on the command line: `key=value ...` or one JSON object.
//!
//! - A value is read as JSON when it parses as JSON, otherwise it is the string as written:
//!   `size=1048576` is a number, `read-only=true` a boolean, `driver=null-co` a string,
//!   `cache={"direct":true}` an object, `node-name='"123"'` (shell quotes around JSON quotes) the
//!   string `123`.
//! - Dotted keys nest: `cache.direct=true cache.no-flush=false` gives
//!   `{"cache": {"direct": true, "no-flush": false}}`.
//! - A key given twice, or given both a value and members (`a=1 a.b=2`), is an error rather than
//!   a silent overwrite.
//! - A single argument starting with `{` is the whole arguments object, as JSON.

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// Why the arguments could not be read. Shown to the user as a usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgError {
    /// An argument without `=`.
    NoEquals(String),
    /// An empty key or an empty part of a dotted key (`=1`, `a..b=1`, `a.=1`).
    EmptyKey(String),
    /// The same key given twice.
    Duplicate(String),
    /// A key given a value and also members (`a=1 a.b=2`).
    Conflict {
        /// The key (dotted path) that has both.
        key: String,
    },
    /// A `{...}` argument that is not a JSON object, or that is not alone.
    Json(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::NoEquals(a) => write!(
                f,
                "argument '{a}' is not key=value (write arguments as key=value, or pass one JSON object)"
            ),
            ArgError::EmptyKey(a) => write!(f, "argument '{a}' has an empty key"),
            ArgError::Duplicate(k) => write!(f, "argument '{k}' is given more than once"),
            ArgError::Conflict { key } => write!(
                f,
                "argument '{key}' is given both a value and members ('{key}=...' and '{key}.x=...')"
            ),
            ArgError::Json(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ArgError {}

/// Reads command arguments. An empty list gives `None` (the command is sent without `arguments`).
pub(crate) fn parse<S: AsRef<str>>(args: &[S]) -> Result<Option<Map<String, Value>>, ArgError> {
    let Some(first) = args.first() else {
        return Ok(None);
    };
    if first.as_ref().trim_start().starts_with('{') {
        if args.len() > 1 {
            return Err(ArgError::Json(
                "a JSON object argument must be the only argument".into(),
            ));
        }
        return match serde_json::from_str::<Value>(first.as_ref()) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(ArgError::Json("the arguments must be a JSON object".into())),
            Err(e) => Err(ArgError::Json(format!(
                "the arguments are not valid JSON: {e}"
            ))),
        };
    }
    let mut root = Map::new();
    let mut paths = Paths::default();
    for arg in args {
        let arg = arg.as_ref();
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| ArgError::NoEquals(arg.to_owned()))?;
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ArgError::EmptyKey(arg.to_owned()));
        }
        paths.claim(&path)?;
        insert(&mut root, &path, parse_value(raw));
    }
    Ok(Some(root))
}

/// A value as JSON when it parses, otherwise as the string written.
pub(crate) fn parse_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// The dotted paths seen so far: those given a value (leaves) and those given members
/// (branches). Keys never contain '.', so a joined path names one place.
#[derive(Default)]
struct Paths {
    leaves: HashSet<String>,
    branches: HashSet<String>,
}

impl Paths {
    fn claim(&mut self, path: &[&str]) -> Result<(), ArgError> {
        for i in 1..path.len() {
            let prefix = path[..i].join(".");
            if self.leaves.contains(&prefix) {
                return Err(ArgError::Conflict { key: prefix });
            }
        }
        let full = path.join(".");
        if self.leaves.contains(&full) {
            return Err(ArgError::Duplicate(full));
        }
        if self.branches.contains(&full) {
            return Err(ArgError::Conflict { key: full });
        }
        for i in 1..path.len() {
            self.branches.insert(path[..i].join("."));
        }
        self.leaves.insert(full);
        Ok(())
    }
}

/// Puts `value` at `path`; [`Paths::claim`] has checked that every prefix is an object made here.
fn insert(root: &mut Map<String, Value>, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("split always gives one part");
    let mut map = root;
    for part in parents {
        let entry = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        map = match entry {
            Value::Object(inner) => inner,
            _ => unreachable!("a prefix of a claimed path is always an object"),
        };
    }
    map.insert((*last).to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(args: &[&str]) -> Value {
        Value::Object(parse(args).unwrap().unwrap())
    }

    #[test]
    fn dotted_keys_nest_as_in_the_issue() {
        assert_eq!(
            ok(&["cache.direct=true", "cache.no-flush=false", "node-name=n0"]),
            json!({"cache": {"direct": true, "no-flush": false}, "node-name": "n0"})
        );
    }

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(
            ok(&[
                "size=1048576",
                "ro=true",
                "driver=null-co",
                "n=null",
                "f=1.5",
                "list=[1,\"a\",{\"b\":false}]",
                "obj={\"x\":[true]}",
                "quoted=\"123\"",
                "empty=",
                "spaces=a b",
            ]),
            json!({
                "size": 1048576, "ro": true, "driver": "null-co", "n": null, "f": 1.5,
                "list": [1, "a", {"b": false}], "obj": {"x": [true]}, "quoted": "123",
                "empty": "", "spaces": "a b",
            })
        );
    }

    #[test]
    fn a_value_may_contain_equals_signs() {
        assert_eq!(ok(&["filename=a=b"]), json!({"filename": "a=b"}));
    }

    #[test]
    fn deep_dotted_keys_merge() {
        assert_eq!(
            ok(&["a.b.c=1", "a.b.d=2", "a.e=3", "f=4"]),
            json!({"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4})
        );
    }

    #[test]
    fn a_json_value_object_is_kept_as_written() {
        // An object value that happens to be empty must not be taken for a dotted-key object.
        assert_eq!(ok(&["a={}"]), json!({"a": {}}));
        assert_eq!(
            parse(&["a={}", "a.b=1"]),
            Err(ArgError::Conflict { key: "a".into() })
        );
    }

    #[test]
    fn conflicts_and_duplicates_are_errors() {
        assert_eq!(
            parse(&["a=1", "a.b=2"]),
            Err(ArgError::Conflict { key: "a".into() })
        );
        assert_eq!(
            parse(&["a.b=2", "a=1"]),
            Err(ArgError::Conflict { key: "a".into() })
        );
        assert_eq!(parse(&["a=1", "a=2"]), Err(ArgError::Duplicate("a".into())));
        assert_eq!(
            parse(&["a.b=1", "a.b=2"]),
            Err(ArgError::Duplicate("a.b".into()))
        );
        assert_eq!(
            parse(&["a.b=1", "a.b.c=2"]),
            Err(ArgError::Conflict { key: "a.b".into() })
        );
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert_eq!(
            parse(&["novalue"]),
            Err(ArgError::NoEquals("novalue".into()))
        );
        assert_eq!(parse(&["=1"]), Err(ArgError::EmptyKey("=1".into())));
        assert_eq!(parse(&["a..b=1"]), Err(ArgError::EmptyKey("a..b=1".into())));
        assert_eq!(parse(&["a.=1"]), Err(ArgError::EmptyKey("a.=1".into())));
        assert!(matches!(
            parse(&["{\"a\":1}", "b=2"]),
            Err(ArgError::Json(_))
        ));
        assert!(matches!(parse(&["{nope"]), Err(ArgError::Json(_))));
    }

    #[test]
    fn one_json_object_is_the_arguments() {
        assert_eq!(
            ok(&[r#"{"cache": {"direct": true}, "node-name": "n0"}"#]),
            json!({"cache": {"direct": true}, "node-name": "n0"})
        );
    }

    #[test]
    fn no_arguments_is_none() {
        assert_eq!(parse::<&str>(&[]), Ok(None));
    }
}
