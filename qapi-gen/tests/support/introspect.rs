//! Live introspection (`query-qmp-schema`, decoded into the generated `SchemaInfo`) against the
//! schema model, structurally: QEMU masks type names, so types are matched by where they are used.
//! Also builds sample values of a live type, covering its branches and enum values.

use qapi_gen::schema::{has_feature, Data, Def, Kind, Member, Schema, TypeRef};
use qmp_qapi::qmp::{SchemaInfo, SchemaInfoBranch, SchemaInfoObject};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A type of the model, as one side of a comparison.
#[derive(Debug, Clone)]
pub enum ModelType<'a> {
    /// A built-in (`int`, `str`, …).
    Builtin(String),
    /// A named definition.
    Def(&'a Def),
    /// An array.
    Array(Box<ModelType<'a>>),
    /// Members given inline (a command's or event's implicit argument type), named for messages.
    Members(String, Vec<Member>),
    /// No members (a command without arguments or return, an empty union branch).
    Empty,
}

impl ModelType<'_> {
    fn key(&self) -> String {
        match self {
            ModelType::Builtin(n) => n.clone(),
            ModelType::Def(d) => d.name.clone(),
            ModelType::Array(e) => format!("[{}]", e.key()),
            ModelType::Members(n, _) => n.clone(),
            ModelType::Empty => "{}".into(),
        }
    }
}

/// The model type a type reference names.
pub fn model_type<'a>(schema: &'a Schema, t: &TypeRef) -> ModelType<'a> {
    let named = |n: &str| match schema.get(n) {
        Some(d) => ModelType::Def(d),
        None => ModelType::Builtin(n.to_string()),
    };
    match t {
        TypeRef::Named(n) => named(n),
        TypeRef::Array(n) => ModelType::Array(Box::new(named(n))),
    }
}

/// The model type of a command's or event's data.
pub fn data_type<'a>(schema: &'a Schema, owner: &str, data: &Option<Data>) -> ModelType<'a> {
    match data {
        None => ModelType::Empty,
        Some(Data::Members(m)) => ModelType::Members(format!("{owner} arguments"), m.clone()),
        Some(Data::Named(n)) => model_type(schema, &TypeRef::Named(n.clone())),
    }
}

/// The introspected schema, by (masked) name.
pub struct Live {
    /// Every entity by name.
    pub by_name: BTreeMap<String, SchemaInfo>,
}

/// What a comparison found.
#[derive(Default)]
pub struct Comparison {
    /// Mismatches, each with its path.
    pub errors: Vec<String>,
    /// (model type, live type) pairs compared.
    pub pairs: BTreeSet<(String, String)>,
    /// Model enum and data types matched to a live type, with that type's name.
    pub matched_types: BTreeMap<String, BTreeSet<String>>,
}

impl Live {
    /// Indexes a `query-qmp-schema` reply.
    pub fn new(infos: Vec<SchemaInfo>) -> Live {
        Live {
            by_name: infos.into_iter().map(|i| (i.name.clone(), i)).collect(),
        }
    }

    /// The live commands and events, by kind.
    pub fn names(&self, events: bool) -> Vec<String> {
        self.by_name
            .values()
            .filter(|i| match &i.meta_type {
                SchemaInfoBranch::Command(_) => !events,
                SchemaInfoBranch::Event(_) => events,
                _ => false,
            })
            .map(|i| i.name.clone())
            .collect()
    }

    fn features(&self, name: &str) -> Vec<String> {
        self.by_name
            .get(name)
            .and_then(|i| i.features.clone())
            .unwrap_or_default()
    }

    /// Compares the live command or event `name` with the model.
    pub fn compare_entity(&self, schema: &Schema, name: &str, c: &mut Comparison) {
        let Some(info) = self.by_name.get(name) else {
            c.errors.push(format!("{name}: not in introspection"));
            return;
        };
        let Some(def) = schema.get(name) else {
            c.errors
                .push(format!("{name}: QEMU has it, the schema model does not"));
            return;
        };
        let live_features = info.features.clone().unwrap_or_default();
        for special in ["deprecated", "unstable"] {
            if def.has_feature(special) != live_features.iter().any(|f| f == special) {
                c.errors.push(format!("{name}: feature {special} differs"));
            }
        }
        match (&info.meta_type, &def.kind) {
            (
                SchemaInfoBranch::Command(lc),
                Kind::Command {
                    data,
                    returns,
                    allow_oob,
                    ..
                },
            ) => {
                if lc.allow_oob.unwrap_or(false) != *allow_oob {
                    c.errors.push(format!("{name}: allow-oob differs"));
                }
                let arg = data_type(schema, name, data);
                self.compare(schema, &arg, &lc.arg_type, &format!("{name}.arguments"), c);
                let ret = match returns {
                    None => ModelType::Empty,
                    Some(r) => model_type(schema, r),
                };
                self.compare(schema, &ret, &lc.ret_type, &format!("{name}.return"), c);
            }
            (SchemaInfoBranch::Event(le), Kind::Event { data, .. }) => {
                let arg = data_type(schema, name, data);
                self.compare(schema, &arg, &le.arg_type, &format!("{name}.data"), c);
            }
            _ => c.errors.push(format!("{name}: meta-type differs")),
        }
    }

    /// Compares a model type with the live type named `live`, recursively.
    pub fn compare(
        &self,
        schema: &Schema,
        model: &ModelType<'_>,
        live: &str,
        path: &str,
        c: &mut Comparison,
    ) {
        if !c.pairs.insert((model.key(), live.to_string())) {
            return;
        }
        if let ModelType::Def(d) = model {
            c.matched_types
                .entry(d.name.clone())
                .or_default()
                .insert(live.to_string());
        }
        let Some(info) = self.by_name.get(live) else {
            c.errors.push(format!("{path}: live type {live} missing"));
            return;
        };
        let mut errors = Vec::new();
        let mut err = |m: String| errors.push(format!("{path}: {m}"));
        match (&info.meta_type, model) {
            (SchemaInfoBranch::Builtin(_), ModelType::Builtin(b)) => {
                let expect = match b.as_str() {
                    "int" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16"
                    | "uint32" | "uint64" | "size" => "int",
                    other => other,
                };
                if info.name != expect {
                    err(format!("built-in {b} is {} live", info.name));
                }
            }
            (
                SchemaInfoBranch::Enum(e),
                ModelType::Def(Def {
                    kind: Kind::Enum { values },
                    name,
                    ..
                }),
            ) => {
                for lv in &e.members {
                    match values.iter().find(|v| v.name == lv.name) {
                        None => err(format!(
                            "enum {name}: live value {} unknown to the model",
                            lv.name
                        )),
                        Some(v) => {
                            let lf = lv.features.clone().unwrap_or_default();
                            for special in ["deprecated", "unstable"] {
                                if has_feature(&v.features, special)
                                    != lf.iter().any(|f| f == special)
                                {
                                    err(format!(
                                        "enum {name}.{}: feature {special} differs",
                                        v.name
                                    ));
                                }
                            }
                        }
                    }
                }
                for v in values {
                    if v.cond.is_none() && !e.members.iter().any(|m| m.name == v.name) {
                        err(format!(
                            "enum {name}: unconditional value {} missing live",
                            v.name
                        ));
                    }
                }
            }
            (SchemaInfoBranch::Array(a), ModelType::Array(elem)) => {
                let elem = (**elem).clone();
                self.compare(schema, &elem, &a.element_type, &format!("{path}[]"), c);
            }
            (SchemaInfoBranch::Object(o), _) => self.compare_object(schema, model, o, path, c),
            (
                SchemaInfoBranch::Alternate(a),
                ModelType::Def(Def {
                    kind: Kind::Alternate { branches },
                    ..
                }),
            ) => {
                for lm in &a.members {
                    let kind = self.json_kind(&lm.r#type);
                    let Some(b) = branches
                        .iter()
                        .find(|b| model_json_kind(schema, &b.ty) == kind)
                    else {
                        err(format!("alternate: no branch of kind {kind}"));
                        continue;
                    };
                    let bt = model_type(schema, &b.ty);
                    self.compare(schema, &bt, &lm.r#type, &format!("{path}|{}", b.name), c);
                }
                if a.members.len() != branches.iter().filter(|b| b.cond.is_none()).count()
                    && branches.iter().all(|b| b.cond.is_none())
                {
                    err("alternate: branch count differs".into());
                }
            }
            (l, m) => err(format!("model {} vs live {}", m.key(), live_meta(l))),
        }
        c.errors.extend(errors);
    }

    fn compare_object(
        &self,
        schema: &Schema,
        model: &ModelType<'_>,
        o: &SchemaInfoObject,
        path: &str,
        c: &mut Comparison,
    ) {
        let (members, union): (Vec<Member>, Option<&Def>) = match model {
            ModelType::Def(
                d @ Def {
                    kind: Kind::Union { base, .. },
                    ..
                },
            ) => (base.clone(), Some(d)),
            ModelType::Def(Def {
                kind: Kind::Struct { .. },
                name,
                ..
            }) => (schema.struct_members(name), None),
            ModelType::Members(_, m) => (m.clone(), None),
            ModelType::Empty => (Vec::new(), None),
            other => {
                c.errors
                    .push(format!("{path}: model {} vs live object", other.key()));
                return;
            }
        };
        for lm in &o.members {
            let Some(m) = members.iter().find(|m| m.name == lm.name) else {
                c.errors.push(format!(
                    "{path}: live member {} unknown to the model",
                    lm.name
                ));
                continue;
            };
            if m.optional != lm.default.is_some() {
                c.errors
                    .push(format!("{path}.{}: optionality differs", lm.name));
            }
            let lf = lm.features.clone().unwrap_or_default();
            for special in ["deprecated", "unstable"] {
                if has_feature(&m.features, special) != lf.iter().any(|f| f == special) {
                    c.errors
                        .push(format!("{path}.{}: feature {special} differs", lm.name));
                }
            }
            let mt = model_type(schema, &m.ty);
            self.compare(schema, &mt, &lm.r#type, &format!("{path}.{}", lm.name), c);
        }
        for m in &members {
            if m.cond.is_none() && !o.members.iter().any(|lm| lm.name == m.name) {
                c.errors.push(format!(
                    "{path}: unconditional member {} missing live",
                    m.name
                ));
            }
        }
        match (union, &o.tag, &o.variants) {
            (None, None, _) => {}
            (
                Some(Def {
                    kind:
                        Kind::Union {
                            discriminator,
                            branches,
                            ..
                        },
                    ..
                }),
                Some(tag),
                Some(variants),
            ) => {
                if discriminator != tag {
                    c.errors
                        .push(format!("{path}: discriminator {discriminator} vs {tag}"));
                }
                for v in variants {
                    let bt = match branches.iter().find(|b| b.name == v.case) {
                        Some(b) => model_type(schema, &b.ty),
                        None => ModelType::Empty,
                    };
                    self.compare(
                        schema,
                        &bt,
                        &v.r#type,
                        &format!("{path}{{{tag}={}}}", v.case),
                        c,
                    );
                }
            }
            _ => c.errors.push(format!("{path}: union-ness differs")),
        }
    }

    /// The JSON kind of a live type's values.
    pub fn json_kind(&self, live: &str) -> &'static str {
        match self.by_name.get(live).map(|i| &i.meta_type) {
            Some(SchemaInfoBranch::Builtin(b)) => match b.json_type.as_str() {
                "string" => "string",
                "number" | "int" => "number",
                "boolean" => "bool",
                "null" => "null",
                _ => "value",
            },
            Some(SchemaInfoBranch::Enum(_)) => "string",
            Some(SchemaInfoBranch::Array(_)) => "array",
            _ => "object",
        }
    }

    /// A sample value of the live type `live`: choice `k` at every union, alternate and enum,
    /// members as deep as `depth` allows (deeper, only what is required, the smallest branch).
    pub fn sample(&self, live: &str, k: usize, depth: usize) -> Value {
        let Some(info) = self.by_name.get(live) else {
            return Value::Null;
        };
        match &info.meta_type {
            SchemaInfoBranch::Builtin(b) => match b.json_type.as_str() {
                "string" => json!("s"),
                "int" => json!(1),
                "number" => json!(0.5),
                "boolean" => json!(true),
                "null" => Value::Null,
                _ => json!({"any": [1, "x"]}),
            },
            SchemaInfoBranch::Enum(e) => match e.members.len() {
                0 => json!("none"),
                n => json!(e.members[k % n].name),
            },
            SchemaInfoBranch::Array(a) if depth > 0 => {
                json!([self.sample(&a.element_type, k, depth - 1)])
            }
            SchemaInfoBranch::Array(_) => json!([]),
            SchemaInfoBranch::Alternate(a) => {
                let n = a.members.len();
                let pick = if depth > 0 {
                    k % n
                } else {
                    (0..n)
                        .find(|&i| self.json_kind(&a.members[i].r#type) != "object")
                        .unwrap_or(0)
                };
                self.sample(&a.members[pick].r#type, k, depth.saturating_sub(1))
            }
            SchemaInfoBranch::Object(o) => {
                let mut m = Map::new();
                self.sample_object(o, k, depth, &mut m);
                Value::Object(m)
            }
            _ => Value::Null,
        }
    }

    fn sample_object(
        &self,
        o: &SchemaInfoObject,
        k: usize,
        depth: usize,
        m: &mut Map<String, Value>,
    ) {
        let variant = match (&o.tag, &o.variants) {
            (Some(tag), Some(vs)) if !vs.is_empty() => {
                let pick = if depth > 0 {
                    k % vs.len()
                } else {
                    self.smallest(vs)
                };
                Some((tag.clone(), &vs[pick]))
            }
            _ => None,
        };
        for lm in &o.members {
            if lm.default.is_some() && depth == 0 {
                continue;
            }
            let v = match &variant {
                Some((tag, v)) if *tag == lm.name => json!(v.case),
                _ => self.sample(&lm.r#type, k, depth.saturating_sub(1)),
            };
            m.insert(lm.name.clone(), v);
        }
        if let Some((_, v)) = variant {
            if let Some(SchemaInfoBranch::Object(bo)) =
                self.by_name.get(&v.r#type).map(|i| &i.meta_type)
            {
                self.sample_object(bo, k, depth, m);
            }
        }
    }

    fn smallest(&self, vs: &[qmp_qapi::qmp::SchemaInfoObjectVariant]) -> usize {
        (0..vs.len())
            .min_by_key(
                |&i| match self.by_name.get(&vs[i].r#type).map(|i| &i.meta_type) {
                    Some(SchemaInfoBranch::Object(o)) => {
                        o.members.iter().filter(|m| m.default.is_none()).count()
                    }
                    _ => 0,
                },
            )
            .unwrap_or(0)
    }

    /// How many samples cover every choice of a live type: the most branches or enum values of
    /// any type reachable from it (capped).
    pub fn fanout(&self, live: &str) -> usize {
        let mut seen = BTreeSet::new();
        let mut stack = vec![live.to_string()];
        let mut most = 1;
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            match self.by_name.get(&n).map(|i| &i.meta_type) {
                Some(SchemaInfoBranch::Enum(e)) => most = most.max(e.members.len()),
                Some(SchemaInfoBranch::Array(a)) => stack.push(a.element_type.clone()),
                Some(SchemaInfoBranch::Alternate(a)) => {
                    most = most.max(a.members.len());
                    stack.extend(a.members.iter().map(|m| m.r#type.clone()));
                }
                Some(SchemaInfoBranch::Object(o)) => {
                    stack.extend(o.members.iter().map(|m| m.r#type.clone()));
                    if let Some(vs) = &o.variants {
                        most = most.max(vs.len());
                        stack.extend(vs.iter().map(|v| v.r#type.clone()));
                    }
                }
                _ => {}
            }
        }
        most.min(256)
    }

    /// The live features of `name`.
    pub fn entity_features(&self, name: &str) -> Vec<String> {
        self.features(name)
    }
}

fn live_meta(b: &SchemaInfoBranch) -> &'static str {
    match b {
        SchemaInfoBranch::Builtin(_) => "builtin",
        SchemaInfoBranch::Enum(_) => "enum",
        SchemaInfoBranch::Array(_) => "array",
        SchemaInfoBranch::Object(_) => "object",
        SchemaInfoBranch::Alternate(_) => "alternate",
        SchemaInfoBranch::Command(_) => "command",
        SchemaInfoBranch::Event(_) => "event",
        _ => "unknown",
    }
}

fn model_json_kind(schema: &Schema, t: &TypeRef) -> &'static str {
    if matches!(t, TypeRef::Array(_)) {
        return "array";
    }
    match t.name() {
        "str" => "string",
        "bool" => "bool",
        "null" => "null",
        "any" => "value",
        "number" | "int" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32"
        | "uint64" | "size" => "number",
        n => match schema.get(n).map(|d| &d.kind) {
            Some(Kind::Enum { .. }) => "string",
            _ => "object",
        },
    }
}
