//! The schema in `query-qmp-schema` form (QEMU's `SchemaInfo` list), written from the model for
//! tools that have no QEMU to ask: every definition, conditional ones included, with QEMU's real
//! type names where a live QEMU masks them, implicit argument types named as QEMU names them
//! internally (`q_obj_NAME-arg`), arrays as `[T]`, empty branches and arguments as `q_empty`.

use crate::schema::{has_feature, Data, Def, Feature, Kind, Member, Schema, TypeRef, BUILTINS};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// One line per entity, as a JSON array.
pub fn introspection(schema: &Schema) -> String {
    let mut w = Writer {
        schema,
        lines: Vec::new(),
        arrays: BTreeSet::new(),
        builtins: BTreeSet::new(),
    };
    w.lines
        .push(r#"{"name": "q_empty", "meta-type": "object", "members": []}"#.to_string());
    for d in &schema.defs {
        w.def(d);
    }
    for b in w.builtins.clone() {
        let json = match b.as_str() {
            "str" => "string",
            "number" => "number",
            "bool" => "boolean",
            "null" => "null",
            "any" => "value",
            _ => "int",
        };
        w.lines.push(format!(
            r#"{{"name": "{b}", "meta-type": "builtin", "json-type": "{json}"}}"#
        ));
    }
    for a in w.arrays.clone() {
        w.lines.push(format!(
            r#"{{"name": "[{a}]", "meta-type": "array", "element-type": "{a}"}}"#
        ));
    }
    format!("[\n{}\n]\n", w.lines.join(",\n"))
}

struct Writer<'a> {
    schema: &'a Schema,
    lines: Vec<String>,
    arrays: BTreeSet<String>,
    builtins: BTreeSet<String>,
}

fn features(f: &[Feature]) -> String {
    if f.is_empty() {
        return String::new();
    }
    let names: Vec<String> = f.iter().map(|f| format!("\"{}\"", f.name)).collect();
    format!(r#", "features": [{}]"#, names.join(", "))
}

impl Writer<'_> {
    fn type_name(&mut self, t: &TypeRef) -> String {
        let name = t.name().to_string();
        if BUILTINS.contains(&name.as_str()) {
            // Like QEMU, every integer type is `int`.
            let b = match name.as_str() {
                "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64"
                | "size" => "int".to_string(),
                _ => name.clone(),
            };
            self.builtins.insert(b.clone());
            return match t {
                TypeRef::Array(_) => {
                    self.arrays.insert(b.clone());
                    format!("[{b}]")
                }
                TypeRef::Named(_) => b,
            };
        }
        match t {
            TypeRef::Array(_) => {
                self.arrays.insert(name.clone());
                format!("[{name}]")
            }
            TypeRef::Named(_) => name,
        }
    }

    fn members(&mut self, ms: &[Member]) -> String {
        let items: Vec<String> = ms
            .iter()
            .map(|m| {
                let ty = self.type_name(&m.ty);
                format!(
                    r#"{{"name": "{}", "type": "{ty}"{}{}}}"#,
                    m.name,
                    if m.optional {
                        r#", "default": null"#
                    } else {
                        ""
                    },
                    features(&m.features)
                )
            })
            .collect();
        items.join(", ")
    }

    /// The name of a command's or event's argument type, writing an implicit one.
    fn data(&mut self, owner: &str, data: &Option<Data>) -> String {
        match data {
            None => "q_empty".into(),
            Some(Data::Named(n)) => n.clone(),
            Some(Data::Members(ms)) => {
                let name = format!("q_obj_{owner}-arg");
                let members = self.members(ms);
                self.lines.push(format!(
                    r#"{{"name": "{name}", "meta-type": "object", "members": [{members}]}}"#
                ));
                name
            }
        }
    }

    fn def(&mut self, d: &Def) {
        let f = features(&d.features);
        let line = match &d.kind {
            Kind::Enum { values } => {
                let names: Vec<String> = values.iter().map(|v| format!("\"{}\"", v.name)).collect();
                let members: Vec<String> = values
                    .iter()
                    .map(|v| format!(r#"{{"name": "{}"{}}}"#, v.name, features(&v.features)))
                    .collect();
                format!(
                    r#"{{"name": "{}", "meta-type": "enum", "members": [{}], "values": [{}]{f}}}"#,
                    d.name,
                    members.join(", "),
                    names.join(", ")
                )
            }
            Kind::Struct { .. } => {
                let members = self.members(&self.schema.struct_members(&d.name));
                format!(
                    r#"{{"name": "{}", "meta-type": "object", "members": [{members}]{f}}}"#,
                    d.name
                )
            }
            Kind::Union {
                base,
                discriminator,
                branches,
                ..
            } => {
                let members = self.members(base);
                let tag_type = base
                    .iter()
                    .find(|m| m.name == *discriminator)
                    .map(|m| m.ty.name().to_string())
                    .unwrap_or_default();
                let values = self.schema.enum_values(&tag_type).unwrap_or_default();
                let variants: Vec<String> = values
                    .iter()
                    .map(|v| {
                        let ty = branches
                            .iter()
                            .find(|b| b.name == v.name)
                            .map_or("q_empty".to_string(), |b| b.ty.name().to_string());
                        format!(r#"{{"case": "{}", "type": "{ty}"}}"#, v.name)
                    })
                    .collect();
                format!(
                    r#"{{"name": "{}", "meta-type": "object", "members": [{members}], "tag": "{discriminator}", "variants": [{}]{f}}}"#,
                    d.name,
                    variants.join(", ")
                )
            }
            Kind::Alternate { branches } => {
                let members: Vec<String> = branches
                    .iter()
                    .map(|b| {
                        let ty = self.type_name(&b.ty);
                        format!(r#"{{"type": "{ty}"}}"#)
                    })
                    .collect();
                format!(
                    r#"{{"name": "{}", "meta-type": "alternate", "members": [{}]{f}}}"#,
                    d.name,
                    members.join(", ")
                )
            }
            Kind::Command {
                data,
                returns,
                allow_oob,
                ..
            } => {
                let arg = self.data(&d.name, data);
                let ret = match returns {
                    None => "q_empty".to_string(),
                    Some(r) => self.type_name(r),
                };
                let mut s = format!(
                    r#"{{"name": "{}", "meta-type": "command", "arg-type": "{arg}", "ret-type": "{ret}""#,
                    d.name
                );
                if *allow_oob {
                    s.push_str(r#", "allow-oob": true"#);
                }
                let _ = write!(s, "{f}}}");
                s
            }
            Kind::Event { data, .. } => {
                let arg = self.data(&d.name, data);
                format!(
                    r#"{{"name": "{}", "meta-type": "event", "arg-type": "{arg}"{f}}}"#,
                    d.name
                )
            }
        };
        let _ = has_feature;
        self.lines.push(line);
    }
}
