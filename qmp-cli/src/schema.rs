//! The live QAPI schema (`query-qmp-schema`), indexed for rendering and completion.
//!
//! QEMU hides the names of its types in this reply: commands and events keep their names, every
//! other type is a number (`"38"`, arrays `"[21]"`). Rendering therefore resolves each numbered
//! type to its shape and writes it inline: members (`name?` when optional), enum values, array
//! elements, alternatives, and the members each case of a union adds.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// How deep nested objects are expanded before rendering stops with "object {…}".
const MAX_DEPTH: usize = 4;
/// Enums longer than this on one line are wrapped below their member.
const WRAP: usize = 76;

/// A member of an object type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The member's name.
    pub(crate) name: String,
    /// Its (usually numbered) type name.
    pub(crate) ty: String,
    /// Whether it may be omitted.
    pub(crate) optional: bool,
    /// `deprecated`, `unstable`, ...
    pub(crate) features: Vec<String>,
}

/// One entry of the schema, by meta-type.
#[derive(Debug, Clone)]
enum Entity {
    Command {
        arg: String,
        ret: String,
        features: Vec<String>,
    },
    Event {
        arg: String,
        features: Vec<String>,
    },
    Object {
        members: Vec<Member>,
        tag: Option<String>,
        /// (case, type) in schema order.
        variants: Vec<(String, String)>,
    },
    Enum {
        values: Vec<String>,
    },
    Array {
        element: String,
    },
    Alternate {
        types: Vec<String>,
    },
    Builtin,
}

/// The schema, indexed by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schema {
    entities: HashMap<String, Entity>,
}

/// Why a schema reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaError(String);

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected query-qmp-schema reply: {}", self.0)
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn string(o: &Map<String, Value>, key: &str) -> Result<String, SchemaError> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| SchemaError(format!("an entry lacks the string member '{key}'")))
}

impl Schema {
    /// The schema qmp was built with (`qmp_qapi::qmp::INTROSPECTION`, QEMU 10.0.2's, every target
    /// and build option, real type names), for help with no QEMU to ask.
    pub(crate) fn bundled() -> Schema {
        let value: Value = serde_json::from_str(qmp_qapi::qmp::INTROSPECTION)
            .expect("the bundled schema is JSON (qapi-gen writes it)");
        Schema::from_value(&value).expect("the bundled schema is a query-qmp-schema reply")
    }

    /// Indexes the return value of `query-qmp-schema`. Unknown meta-types are skipped so that a
    /// newer QEMU does not break the tool.
    pub(crate) fn from_value(value: &Value) -> Result<Schema, SchemaError> {
        let list = value
            .as_array()
            .ok_or_else(|| SchemaError("not an array".into()))?;
        let mut entities = HashMap::new();
        for item in list {
            let o = item
                .as_object()
                .ok_or_else(|| SchemaError("an entry is not an object".into()))?;
            let name = string(o, "name")?;
            let entity = match o.get("meta-type").and_then(Value::as_str) {
                Some("command") => Entity::Command {
                    arg: string(o, "arg-type")?,
                    ret: string(o, "ret-type")?,
                    features: strings(o.get("features")),
                },
                Some("event") => Entity::Event {
                    arg: string(o, "arg-type")?,
                    features: strings(o.get("features")),
                },
                Some("object") => {
                    let members = o
                        .get("members")
                        .and_then(Value::as_array)
                        .map(|a| a.as_slice())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_object)
                        .map(|m| {
                            Ok(Member {
                                name: string(m, "name")?,
                                ty: string(m, "type")?,
                                optional: m.contains_key("default"),
                                features: strings(m.get("features")),
                            })
                        })
                        .collect::<Result<_, SchemaError>>()?;
                    let variants = o
                        .get("variants")
                        .and_then(Value::as_array)
                        .map(|a| a.as_slice())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_object)
                        .map(|v| Ok((string(v, "case")?, string(v, "type")?)))
                        .collect::<Result<_, SchemaError>>()?;
                    Entity::Object {
                        members,
                        tag: o.get("tag").and_then(Value::as_str).map(str::to_owned),
                        variants,
                    }
                }
                Some("enum") => Entity::Enum {
                    values: strings(o.get("values")),
                },
                Some("array") => Entity::Array {
                    element: string(o, "element-type")?,
                },
                Some("alternate") => Entity::Alternate {
                    types: o
                        .get("members")
                        .and_then(Value::as_array)
                        .map(|a| a.as_slice())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_object)
                        .map(|m| string(m, "type"))
                        .collect::<Result<_, _>>()?,
                },
                Some("builtin") => Entity::Builtin,
                _ => continue,
            };
            entities.insert(name, entity);
        }
        Ok(Schema { entities })
    }

    /// Command names, sorted.
    pub(crate) fn commands(&self) -> Vec<&str> {
        self.names(|e| matches!(e, Entity::Command { .. }))
    }

    /// Event names, sorted.
    pub(crate) fn events(&self) -> Vec<&str> {
        self.names(|e| matches!(e, Entity::Event { .. }))
    }

    fn names(&self, pick: impl Fn(&Entity) -> bool) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .entities
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(n, _)| n.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// The members an object of type `ty` may have. For a union, the members of the case that
    /// `given[tag]` selects, or of every case when the tag is not given. For an alternate, the
    /// members of its object alternatives.
    pub(crate) fn members(&self, ty: &str, given: Option<&Map<String, Value>>) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        let push = |m: &Member, out: &mut Vec<Member>| {
            if !out.iter().any(|x| x.name == m.name) {
                out.push(m.clone());
            }
        };
        match self.entities.get(ty) {
            Some(Entity::Object {
                members,
                tag,
                variants,
            }) => {
                for m in members {
                    push(m, &mut out);
                }
                let chosen = tag
                    .as_ref()
                    .and_then(|t| given.and_then(|g| g.get(t)))
                    .and_then(Value::as_str);
                for (case, vty) in variants {
                    if chosen.is_none_or(|c| c == case) {
                        for m in self.members(vty, given) {
                            push(&m, &mut out);
                        }
                    }
                }
            }
            Some(Entity::Alternate { types }) => {
                for t in types {
                    for m in self.members(t, given) {
                        push(&m, &mut out);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// The argument type of a command or event.
    pub(crate) fn arg_type(&self, name: &str) -> Option<&str> {
        match self.entities.get(name)? {
            Entity::Command { arg, .. } | Entity::Event { arg, .. } => Some(arg),
            _ => None,
        }
    }

    /// The type reached by following `path` (member names) from type `ty`. `given` (the
    /// arguments typed so far) selects union cases along the way.
    pub(crate) fn type_at(
        &self,
        ty: &str,
        path: &[&str],
        given: Option<&Map<String, Value>>,
    ) -> Option<String> {
        let mut ty = ty.to_owned();
        let mut given = given;
        for part in path {
            ty = self
                .members(&ty, given)
                .into_iter()
                .find(|m| m.name == *part)?
                .ty;
            given = given.and_then(|g| g.get(*part)).and_then(Value::as_object);
        }
        Some(ty)
    }

    /// Whether `ty` is an object type.
    pub(crate) fn is_object(&self, ty: &str) -> bool {
        matches!(self.entities.get(ty), Some(Entity::Object { .. }))
    }

    /// The values a member of type `ty` can take when they are few: enum values, or `true` and
    /// `false`.
    pub(crate) fn values(&self, ty: &str) -> Vec<String> {
        match self.entities.get(ty) {
            Some(Entity::Enum { values }) => values.clone(),
            Some(Entity::Alternate { types }) => {
                types.iter().flat_map(|t| self.values(t)).collect()
            }
            _ if ty == "bool" => vec!["true".into(), "false".into()],
            _ => Vec::new(),
        }
    }

    /// A readable description of a command or event; `None` if the schema has no such name.
    pub(crate) fn render(&self, name: &str) -> Option<String> {
        let mut out = String::new();
        match self.entities.get(name)? {
            Entity::Command { arg, ret, features } => {
                let _ = writeln!(out, "command {name}{}", feature_note(features));
                self.render_fields("arguments", arg, &mut out);
                match (self.entities.get(ret.as_str()), ret.as_str()) {
                    (
                        Some(Entity::Object {
                            members, variants, ..
                        }),
                        _,
                    ) if members.is_empty() && variants.is_empty() => {
                        out.push_str("returns: nothing ({})\n");
                    }
                    _ => {
                        let mut r = Renderer::new(self);
                        let head = r.type_head(ret, 0);
                        let _ = writeln!(out, "returns: {head}");
                        out.push_str(&r.body);
                    }
                }
            }
            Entity::Event { arg, features } => {
                let _ = writeln!(out, "event {name}{}", feature_note(features));
                self.render_fields("data", arg, &mut out);
            }
            _ => return None,
        }
        Some(out)
    }

    fn render_fields(&self, title: &str, ty: &str, out: &mut String) {
        let mut r = Renderer::new(self);
        r.stack.push(ty.to_owned());
        r.object_body(ty, 1);
        if r.body.is_empty() {
            let _ = writeln!(out, "{title}: none");
        } else {
            let _ = writeln!(out, "{title}:");
            out.push_str(&r.body);
        }
    }

    /// The list printed by `qmp schema` without a name.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        let commands = self.commands();
        let _ = writeln!(out, "Commands ({}):", commands.len());
        for c in commands {
            let _ = writeln!(out, "  {c}");
        }
        let events = self.events();
        let _ = writeln!(out, "Events ({}):", events.len());
        for e in events {
            let _ = writeln!(out, "  {e}");
        }
        out.push_str("Run `qmp schema NAME` for a command's arguments and return type.\n");
        out
    }
}

fn feature_note(features: &[String]) -> String {
    if features.is_empty() {
        String::new()
    } else {
        format!(" ({})", features.join(", "))
    }
}

/// Writes nested type descriptions; `stack` holds the object types being expanded, so that
/// recursive types (a block node's `file` is again a block node) stop instead of looping.
struct Renderer<'s> {
    schema: &'s Schema,
    body: String,
    stack: Vec<String>,
}

impl<'s> Renderer<'s> {
    fn new(schema: &'s Schema) -> Self {
        Renderer {
            schema,
            body: String::new(),
            stack: Vec::new(),
        }
    }

    fn indent(level: usize) -> String {
        "  ".repeat(level)
    }

    /// A one-line description of `ty`; members of objects are written to `body` at `level + 1`.
    fn type_head(&mut self, ty: &str, level: usize) -> String {
        match self.schema.entities.get(ty) {
            None | Some(Entity::Builtin) => ty.to_owned(),
            Some(Entity::Enum { values }) => {
                let line = values
                    .iter()
                    .map(|v| format!("\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(" | ");
                if line.len() + level * 2 <= WRAP {
                    line
                } else {
                    self.wrap_values(values, level + 1);
                    "one of:".to_owned()
                }
            }
            Some(Entity::Array { element }) => {
                let element = element.clone();
                format!("array of {}", self.type_head(&element, level))
            }
            Some(Entity::Alternate { types }) => {
                let types = types.clone();
                let heads: Vec<String> = types.iter().map(|t| self.type_head(t, level)).collect();
                heads.join(" | ")
            }
            Some(Entity::Object { .. }) => {
                if self.stack.iter().any(|s| s == ty) {
                    "object (recursive: as above)".to_owned()
                } else if level >= MAX_DEPTH {
                    "object {…}".to_owned()
                } else {
                    self.stack.push(ty.to_owned());
                    let before = self.body.len();
                    self.object_body(ty, level + 1);
                    self.stack.pop();
                    if self.body.len() == before {
                        "object {}".to_owned()
                    } else {
                        "object".to_owned()
                    }
                }
            }
            Some(Entity::Command { .. } | Entity::Event { .. }) => ty.to_owned(),
        }
    }

    fn wrap_values(&mut self, values: &[String], level: usize) {
        let pad = Self::indent(level);
        let mut line = pad.clone();
        for (i, v) in values.iter().enumerate() {
            let item = if i + 1 == values.len() {
                format!("\"{v}\"")
            } else {
                format!("\"{v}\" |")
            };
            if line.len() > pad.len() && line.len() + 1 + item.len() > WRAP {
                self.body.push_str(line.trim_end());
                self.body.push('\n');
                line = pad.clone();
            }
            if line.len() > pad.len() {
                line.push(' ');
            }
            line.push_str(&item);
        }
        if line.len() > pad.len() {
            self.body.push_str(&line);
            self.body.push('\n');
        }
    }

    /// The members of object `ty` (base members, then each union case's own members).
    fn object_body(&mut self, ty: &str, level: usize) {
        let Some(Entity::Object {
            members,
            tag,
            variants,
        }) = self.schema.entities.get(ty)
        else {
            return;
        };
        for m in members {
            self.member(m, level);
        }
        let Some(tag) = tag else { return };
        // Cases sharing one type are listed together ("bochs", "cloop", ... add nothing).
        let mut by_type: BTreeMap<usize, (String, Vec<&str>)> = BTreeMap::new();
        let mut order: HashMap<&str, usize> = HashMap::new();
        for (i, (case, vty)) in variants.iter().enumerate() {
            let slot = *order.entry(vty.as_str()).or_insert(i);
            by_type
                .entry(slot)
                .or_insert_with(|| (vty.clone(), Vec::new()))
                .1
                .push(case);
        }
        for (vty, cases) in by_type.into_values() {
            let own: Vec<&Member> = match self.schema.entities.get(&vty) {
                Some(Entity::Object { members, .. }) => members
                    .iter()
                    .filter(|m| !members_contain(self.schema, ty, &m.name))
                    .collect(),
                _ => Vec::new(),
            };
            let cases = cases
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let pad = Self::indent(level);
            if own.is_empty() {
                let _ = writeln!(self.body, "{pad}when {tag} is {cases}: no more members");
                continue;
            }
            let _ = writeln!(self.body, "{pad}when {tag} is {cases}:");
            if self.stack.contains(&vty) {
                let _ = writeln!(self.body, "{pad}  (recursive: as above)");
                continue;
            }
            self.stack.push(vty.clone());
            for m in own {
                self.member(m, level + 1);
            }
            self.stack.pop();
        }
    }

    fn member(&mut self, m: &Member, level: usize) {
        let pad = Self::indent(level);
        let opt = if m.optional { "?" } else { "" };
        // Reserve this member's line; nested members written by type_head go after it.
        let line_at = self.body.len();
        let head = self.type_head(&m.ty, level);
        let line = format!(
            "{pad}{}{opt}: {head}{}\n",
            m.name,
            feature_note(&m.features)
        );
        self.body.insert_str(line_at, &line);
    }
}

/// Whether the base members of union `ty` include `name` (variant types repeat the base members
/// in some QEMU versions; they are shown once).
fn members_contain(schema: &Schema, ty: &str, name: &str) -> bool {
    matches!(schema.entities.get(ty), Some(Entity::Object { members, .. }) if members.iter().any(|m| m.name == name))
}

/// A schema in `query-qmp-schema` form for a guest agent, which has no introspection: the
/// commands `guest-info` lists as enabled, each with an argument type of no known members (so
/// completion offers command names, and arguments are typed freely).
pub(crate) fn agent_commands(guest_info: &Value) -> Value {
    let mut list = vec![serde_json::json!({"name": "0", "meta-type": "object", "members": []})];
    let commands = guest_info["supported_commands"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default();
    for c in commands {
        if c["enabled"] == Value::Bool(true) {
            if let Some(name) = c["name"].as_str() {
                list.push(serde_json::json!({
                    "name": name, "meta-type": "command", "arg-type": "0", "ret-type": "0"
                }));
            }
        }
    }
    Value::Array(list)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `query-qmp-schema` reply captured from qemu-storage-daemon 10.0.2 (the 4th command in
    /// qmp-proto/tests/captures/qsd-compact.client.jsonl; the only reply whose `return` is an
    /// array of objects with `meta-type`).
    pub(crate) fn qsd_schema() -> Schema {
        let bytes = include_bytes!("../../qmp-proto/tests/captures/qsd-compact.server.bin");
        let text = std::str::from_utf8(bytes).unwrap();
        let msg: Value = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|m| m["return"][0]["meta-type"].is_string())
            .expect("the capture holds the query-qmp-schema reply");
        Schema::from_value(&msg["return"]).unwrap()
    }

    #[test]
    fn lists_commands_and_events_by_name() {
        let s = qsd_schema();
        let commands = s.commands();
        assert!(commands.contains(&"blockdev-add"));
        assert!(commands.contains(&"query-version"));
        assert!(!commands
            .iter()
            .any(|c| c.chars().all(|ch| ch.is_ascii_digit())));
        assert!(s.events().contains(&"BLOCK_JOB_COMPLETED"));
        assert!(s.summary().contains("\n  query-qmp-schema\n"));
    }

    #[test]
    fn renders_query_version_with_resolved_types() {
        let text = s_render("query-version");
        assert_eq!(
            text,
            "command query-version\n\
             arguments: none\n\
             returns: object\n\
             \x20 qemu: object\n\
             \x20   major: int\n\
             \x20   minor: int\n\
             \x20   micro: int\n\
             \x20 package: str\n"
        );
    }

    #[test]
    fn the_bundled_schema_renders_with_real_type_names() {
        let s = Schema::bundled();
        let text = s.render("query-jobs").unwrap();
        assert!(
            text.starts_with("command query-jobs\narguments: none\nreturns: array of object\n"),
            "{text}"
        );
        assert!(
            text.contains("\n    \"undefined\" | \"created\" | \"running\""),
            "{text}"
        );
        let text = s.render("blockdev-backup").unwrap();
        assert!(
            text.contains("\n  job-id?: str\n") && text.contains("\n  x-perf?: "),
            "{text}"
        );
    }

    fn s_render(name: &str) -> String {
        qsd_schema().render(name).unwrap()
    }

    #[test]
    fn renders_blockdev_backup_arguments() {
        let text = s_render("blockdev-backup");
        assert!(
            text.starts_with("command blockdev-backup\narguments:\n"),
            "{text}"
        );
        assert!(text.contains("\n  job-id?: str\n"), "{text}");
        assert!(text.contains("\n  device: str\n"), "{text}");
        assert!(
            text.contains(
                "\n  sync: \"top\" | \"full\" | \"none\" | \"incremental\" | \"bitmap\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("\n  x-perf?: object (unstable)\n"), "{text}");
        assert!(text.ends_with("returns: nothing ({})\n"), "{text}");
        // No numbered type name leaks into the output.
        assert!(!text.contains("\"1") && !text.contains(": 1"), "{text}");
    }

    #[test]
    fn renders_union_cases_of_blockdev_add() {
        let text = s_render("blockdev-add");
        assert!(text.contains("\n  driver: one of:\n"), "{text}");
        assert!(
            text.contains("\n  cache?: object\n    direct?: bool\n    no-flush?: bool\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  when driver is \"null-aio\", \"null-co\":\n"),
            "{text}"
        );
        assert!(text.contains("\n    size?: int\n"), "{text}");
        // qcow2's `file` is again a block node: shown as an alternative, not expanded forever.
        assert!(text.contains("recursive: as above"), "{text}");
        assert!(
            !text.lines().any(|l| l.contains(": 1") || l.contains(": [")),
            "{text}"
        );
    }

    #[test]
    fn renders_an_event() {
        let text = s_render("BLOCK_JOB_COMPLETED");
        assert!(
            text.starts_with("event BLOCK_JOB_COMPLETED\ndata:\n  type: "),
            "{text}"
        );
        assert!(text.contains("\n  len: int\n"), "{text}");
        assert!(text.contains("\n  error?: str\n"), "{text}");
    }

    #[test]
    fn array_return_types_are_resolved() {
        let text = s_render("query-named-block-nodes");
        assert!(text.contains("\n  flat?: bool\n"), "{text}");
        assert!(text.contains("returns: array of object\n"), "{text}");
        assert!(text.contains("\n  node-name?: str\n"), "{text}");
    }

    #[test]
    fn unknown_names_and_types_render_nothing() {
        let s = qsd_schema();
        assert!(s.render("no-such-command").is_none());
        assert!(s.render("2").is_none());
    }

    #[test]
    fn members_follow_the_union_tag_when_given() {
        let s = qsd_schema();
        let arg = s.arg_type("blockdev-add").unwrap();
        let all: Vec<String> = s.members(arg, None).into_iter().map(|m| m.name).collect();
        assert!(all.contains(&"filename".to_owned()) && all.contains(&"size".to_owned()));
        let given = serde_json::json!({"driver": "null-co"});
        let null: Vec<String> = s
            .members(arg, given.as_object())
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(null.contains(&"size".to_owned()) && null.contains(&"node-name".to_owned()));
        assert!(!null.contains(&"filename".to_owned()));
    }

    #[test]
    fn type_at_follows_dotted_paths() {
        let s = qsd_schema();
        let arg = s.arg_type("blockdev-add").unwrap();
        let cache = s.type_at(arg, &["cache"], None).unwrap();
        let names: Vec<String> = s
            .members(&cache, None)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["direct", "no-flush"]);
        let direct = s.type_at(arg, &["cache", "direct"], None).unwrap();
        assert_eq!(s.values(&direct), ["true", "false"]);
        let driver = s.type_at(arg, &["driver"], None).unwrap();
        assert!(s.values(&driver).contains(&"null-co".to_owned()));
        assert!(s.type_at(arg, &["nope"], None).is_none());
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(Schema::from_value(&serde_json::json!({})).is_err());
        assert!(Schema::from_value(&serde_json::json!([{"meta-type": "command"}])).is_err());
        // Unknown meta-types are skipped.
        let s =
            Schema::from_value(&serde_json::json!([{"name": "x", "meta-type": "future"}])).unwrap();
        assert!(s.commands().is_empty());
    }
}
