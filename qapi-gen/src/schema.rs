//! The QAPI schema as a model: definitions read from a root file and its includes, checked and
//! resolved (names, bases, discriminators, implicit argument types), as qapi-code-gen.rst
//! specifies and QEMU's scripts/qapi resolves them.

use crate::parse::{self, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// A condition (`'if'`): a configuration symbol, or a combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `'CONFIG_FOO'`: defined in this build.
    Symbol(String),
    /// `{ 'all': [...] }`.
    All(Vec<Cond>),
    /// `{ 'any': [...] }`.
    Any(Vec<Cond>),
    /// `{ 'not': ... }`.
    Not(Box<Cond>),
}

impl fmt::Display for Cond {
    /// Written like Rust's `cfg` predicates: `all(CONFIG_LINUX, not(CONFIG_WIN32))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, cs: &[Cond]| {
            write!(f, "{name}(")?;
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str(")")
        };
        match self {
            Cond::Symbol(s) => f.write_str(s),
            Cond::All(cs) => list(f, "all", cs),
            Cond::Any(cs) => list(f, "any", cs),
            Cond::Not(c) => write!(f, "not({c})"),
        }
    }
}

/// A feature of a definition, member or enum value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Its name, e.g. `deprecated`.
    pub name: String,
    /// Its condition.
    pub cond: Option<Cond>,
}

/// What a feature list says about stability.
pub fn has_feature(features: &[Feature], name: &str) -> bool {
    features.iter().any(|f| f.name == name)
}

/// A type reference: a type's name or an array of one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TypeRef {
    /// `'T'`.
    Named(String),
    /// `['T']`.
    Array(String),
}

impl TypeRef {
    /// The named type, or the element type of an array.
    pub fn name(&self) -> &str {
        match self {
            TypeRef::Named(n) | TypeRef::Array(n) => n,
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRef::Named(n) => f.write_str(n),
            TypeRef::Array(n) => write!(f, "[{n}]"),
        }
    }
}

/// A member of a struct, union base, or implicit argument type.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The name on the wire (without the `*`).
    pub name: String,
    /// Whether the member may be absent.
    pub optional: bool,
    /// Its type.
    pub ty: TypeRef,
    /// Its condition.
    pub cond: Option<Cond>,
    /// Its features.
    pub features: Vec<Feature>,
    /// The version it appeared in, when its documentation says `(since X)`.
    pub since: Option<String>,
}

/// An enum value.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumValue {
    /// The value on the wire.
    pub name: String,
    /// Its condition.
    pub cond: Option<Cond>,
    /// Its features.
    pub features: Vec<Feature>,
}

/// A union or alternate branch.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The branch name: the discriminator value (unions) or a name (alternates).
    pub name: String,
    /// Its type.
    pub ty: TypeRef,
    /// Its condition.
    pub cond: Option<Cond>,
}

/// A command's or event's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Members given inline (QEMU's implicit `q_obj_NAME-arg` type).
    Members(Vec<Member>),
    /// A named struct or union type (`boxed` or not, the members on the wire are the same).
    Named(String),
}

/// The kind-specific part of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `'enum'`.
    Enum {
        /// The values, in schema order.
        values: Vec<EnumValue>,
    },
    /// `'struct'`.
    Struct {
        /// The base struct, whose members come first.
        base: Option<String>,
        /// Its own members.
        members: Vec<Member>,
    },
    /// `'union'` (flat: a base with an enum discriminator, branches by its value).
    Union {
        /// Base members given inline, or the named base struct's (resolved: all members).
        base: Vec<Member>,
        /// The named base struct, when not inline.
        base_name: Option<String>,
        /// The discriminator member's name.
        discriminator: String,
        /// The branches given (values without one have an empty branch).
        branches: Vec<Branch>,
    },
    /// `'alternate'`.
    Alternate {
        /// The alternatives.
        branches: Vec<Branch>,
    },
    /// `'command'`.
    Command {
        /// The arguments.
        data: Option<Data>,
        /// `'boxed': true`.
        boxed: bool,
        /// The return type; `None` returns an empty object.
        returns: Option<TypeRef>,
        /// `'success-response': false`: no reply on success.
        success_response: bool,
        /// `'gen': false`: arguments are not checked against the schema.
        gen: bool,
        /// `'allow-oob': true`.
        allow_oob: bool,
        /// `'allow-preconfig': true`.
        allow_preconfig: bool,
        /// `'coroutine': true`.
        coroutine: bool,
    },
    /// `'event'`.
    Event {
        /// The data.
        data: Option<Data>,
        /// `'boxed': true`.
        boxed: bool,
    },
}

/// One definition of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Def {
    /// Its name.
    pub name: String,
    /// The QAPI module (the schema file's stem, e.g. `block-core`).
    pub module: String,
    /// Its condition.
    pub cond: Option<Cond>,
    /// Its features.
    pub features: Vec<Feature>,
    /// The `Since:` of its documentation.
    pub since: Option<String>,
    /// The kind-specific part.
    pub kind: Kind,
}

impl Def {
    /// `enum`, `struct`, `union`, `alternate`, `command` or `event`.
    pub fn meta(&self) -> &'static str {
        match self.kind {
            Kind::Enum { .. } => "enum",
            Kind::Struct { .. } => "struct",
            Kind::Union { .. } => "union",
            Kind::Alternate { .. } => "alternate",
            Kind::Command { .. } => "command",
            Kind::Event { .. } => "event",
        }
    }

    /// Whether it has the feature `name`.
    pub fn has_feature(&self, name: &str) -> bool {
        has_feature(&self.features, name)
    }
}

/// A schema error: file, line and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when not known.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for Error {}

/// The built-in types (qapi-code-gen.rst, "Built-in Types").
pub const BUILTINS: [&str; 16] = [
    "str", "number", "int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
    "uint64", "size", "bool", "null", "any", "QType",
];

/// The values of the built-in enum `QType`.
pub const QTYPE_VALUES: [&str; 7] = [
    "none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool",
];

/// A schema: its definitions in schema order, and the files read.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Definitions in schema order (includes expanded where they appear).
    pub defs: Vec<Def>,
    index: BTreeMap<String, usize>,
    /// The files read, in the order first included.
    pub files: Vec<PathBuf>,
}

impl Schema {
    /// Reads the schema whose root file is `root`, with every file it includes.
    pub fn load(root: &Path) -> Result<Schema, Error> {
        let mut loader = Loader {
            defs: Vec::new(),
            files: Vec::new(),
            seen: BTreeSet::new(),
        };
        loader.file(root)?;
        let mut schema = Schema {
            index: BTreeMap::new(),
            defs: loader.defs,
            files: loader.files,
        };
        for (i, d) in schema.defs.iter().enumerate() {
            if schema.index.insert(d.name.clone(), i).is_some() || BUILTINS.contains(&&*d.name) {
                return Err(Error {
                    file: root.to_path_buf(),
                    line: 0,
                    message: format!("'{}' is defined twice", d.name),
                });
            }
        }
        schema.resolve(root)?;
        Ok(schema)
    }

    /// The definition named `name`.
    pub fn get(&self, name: &str) -> Option<&Def> {
        self.index.get(name).map(|&i| &self.defs[i])
    }

    /// All members of the struct `name`, base members first.
    pub fn struct_members(&self, name: &str) -> Vec<Member> {
        match self.get(name).map(|d| &d.kind) {
            Some(Kind::Struct { base, members }) => {
                let mut all = base
                    .as_deref()
                    .map(|b| self.struct_members(b))
                    .unwrap_or_default();
                all.extend(members.iter().cloned());
                all
            }
            _ => Vec::new(),
        }
    }

    /// The values of the enum `name` (`QType` included).
    pub fn enum_values(&self, name: &str) -> Option<Vec<EnumValue>> {
        if name == "QType" {
            return Some(
                QTYPE_VALUES
                    .iter()
                    .map(|v| EnumValue {
                        name: v.to_string(),
                        cond: None,
                        features: Vec::new(),
                    })
                    .collect(),
            );
        }
        match self.get(name).map(|d| &d.kind) {
            Some(Kind::Enum { values }) => Some(values.clone()),
            _ => None,
        }
    }

    /// The members of a command's or event's data (all members of a named struct; a named union's
    /// base members).
    pub fn data_members(&self, data: &Option<Data>) -> Vec<Member> {
        match data {
            None => Vec::new(),
            Some(Data::Members(m)) => m.clone(),
            Some(Data::Named(n)) => match self.get(n).map(|d| &d.kind) {
                Some(Kind::Union { base, .. }) => base.clone(),
                _ => self.struct_members(n),
            },
        }
    }

    fn err(&self, root: &Path, message: String) -> Error {
        Error {
            file: root.to_path_buf(),
            line: 0,
            message,
        }
    }

    /// Checks references and resolves union bases.
    fn resolve(&mut self, root: &Path) -> Result<(), Error> {
        let exists = |s: &Schema, n: &str| BUILTINS.contains(&n) || s.get(n).is_some();
        let mut resolved_bases = Vec::new();
        for (i, d) in self.defs.iter().enumerate() {
            let check = |t: &TypeRef| {
                if exists(self, t.name()) {
                    Ok(())
                } else {
                    Err(self.err(root, format!("{}: unknown type '{}'", d.name, t)))
                }
            };
            let check_members = |ms: &[Member]| ms.iter().try_for_each(|m| check(&m.ty));
            match &d.kind {
                Kind::Enum { .. } => {}
                Kind::Struct { base, members } => {
                    if let Some(b) = base {
                        if !matches!(self.get(b).map(|d| &d.kind), Some(Kind::Struct { .. })) {
                            return Err(
                                self.err(root, format!("{}: base '{b}' is not a struct", d.name))
                            );
                        }
                    }
                    check_members(members)?;
                }
                Kind::Union {
                    base,
                    base_name,
                    discriminator,
                    branches,
                } => {
                    let base = match base_name {
                        Some(b) => {
                            if !matches!(self.get(b).map(|d| &d.kind), Some(Kind::Struct { .. })) {
                                return Err(self
                                    .err(root, format!("{}: base '{b}' is not a struct", d.name)));
                            }
                            self.struct_members(b)
                        }
                        None => base.clone(),
                    };
                    check_members(&base)?;
                    let Some(tag) = base.iter().find(|m| m.name == *discriminator) else {
                        return Err(self.err(
                            root,
                            format!("{}: no discriminator member '{discriminator}'", d.name),
                        ));
                    };
                    let Some(values) = self.enum_values(tag.ty.name()) else {
                        return Err(
                            self.err(root, format!("{}: discriminator is not an enum", d.name))
                        );
                    };
                    if tag.optional || matches!(tag.ty, TypeRef::Array(_)) {
                        return Err(self.err(
                            root,
                            format!("{}: discriminator must be a required enum", d.name),
                        ));
                    }
                    for b in branches {
                        check(&b.ty)?;
                        if !values.iter().any(|v| v.name == b.name) {
                            return Err(self.err(
                                root,
                                format!(
                                    "{}: branch '{}' is not a discriminator value",
                                    d.name, b.name
                                ),
                            ));
                        }
                        if !matches!(
                            self.get(b.ty.name()).map(|d| &d.kind),
                            Some(Kind::Struct { .. } | Kind::Union { .. })
                        ) || matches!(b.ty, TypeRef::Array(_))
                        {
                            return Err(self.err(
                                root,
                                format!("{}: branch '{}' is not a struct or union", d.name, b.name),
                            ));
                        }
                    }
                    resolved_bases.push((i, base));
                }
                Kind::Alternate { branches } => {
                    for b in branches {
                        check(&b.ty)?;
                    }
                }
                Kind::Command { data, returns, .. } => {
                    if let Some(Data::Members(m)) = data {
                        check_members(m)?;
                    }
                    if let Some(Data::Named(n)) = data {
                        check(&TypeRef::Named(n.clone()))?;
                    }
                    if let Some(r) = returns {
                        check(r)?;
                    }
                }
                Kind::Event { data, .. } => {
                    if let Some(Data::Members(m)) = data {
                        check_members(m)?;
                    }
                    if let Some(Data::Named(n)) = data {
                        check(&TypeRef::Named(n.clone()))?;
                    }
                }
            }
        }
        for (i, all) in resolved_bases {
            if let Kind::Union { base, .. } = &mut self.defs[i].kind {
                *base = all;
            }
        }
        Ok(())
    }
}

struct Loader {
    defs: Vec<Def>,
    files: Vec<PathBuf>,
    seen: BTreeSet<PathBuf>,
}

impl Loader {
    fn file(&mut self, path: &Path) -> Result<(), Error> {
        let canonical = path.canonicalize().map_err(|e| Error {
            file: path.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
        if !self.seen.insert(canonical) {
            return Ok(());
        }
        self.files.push(path.to_path_buf());
        let src = std::fs::read_to_string(path).map_err(|e| Error {
            file: path.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
        let exprs = parse::parse(&src).map_err(|e| Error {
            file: path.to_path_buf(),
            line: e.line,
            message: e.message,
        })?;
        let module = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in exprs {
            let err = |message: String| Error {
                file: path.to_path_buf(),
                line: t.line,
                message,
            };
            if let Some(inc) = t.expr.get("include") {
                let inc = inc
                    .as_str()
                    .ok_or_else(|| err("include takes a string".into()))?;
                let dir = path.parent().unwrap_or(Path::new("."));
                self.file(&dir.join(inc))?;
                continue;
            }
            if t.expr.get("pragma").is_some() {
                continue;
            }
            let def = definition(&t.expr, &module, t.doc.as_deref()).map_err(err)?;
            self.defs.push(def);
        }
        Ok(())
    }
}

fn keys_allowed(expr: &Value, allowed: &[&str]) -> Result<(), String> {
    if let Value::Object(members) = expr {
        for (k, _) in members {
            if !allowed.contains(&k.as_str()) {
                return Err(format!("unknown key '{k}'"));
            }
        }
    }
    Ok(())
}

fn str_of(v: &Value, what: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what} must be a string"))
}

fn bool_of(expr: &Value, key: &str, default: bool) -> Result<bool, String> {
    match expr.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("'{key}' must be true or false")),
    }
}

fn cond(v: Option<&Value>) -> Result<Option<Cond>, String> {
    fn one(v: &Value) -> Result<Cond, String> {
        match v {
            Value::Str(s) => Ok(Cond::Symbol(s.clone())),
            Value::Object(m) if m.len() == 1 => {
                let (k, v) = &m[0];
                let list = || match v {
                    Value::List(items) if !items.is_empty() => items.iter().map(one).collect(),
                    _ => Err(format!("'{k}' takes a non-empty list")),
                };
                match k.as_str() {
                    "all" => Ok(Cond::All(list()?)),
                    "any" => Ok(Cond::Any(list()?)),
                    "not" => Ok(Cond::Not(Box::new(one(v)?))),
                    _ => Err(format!("unknown condition operator '{k}'")),
                }
            }
            _ => Err("a condition is a string or {'all'|'any'|'not': ...}".into()),
        }
    }
    v.map(one).transpose()
}

fn features(v: Option<&Value>) -> Result<Vec<Feature>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::List(items) = v else {
        return Err("'features' takes a list".into());
    };
    items
        .iter()
        .map(|f| match f {
            Value::Str(s) => Ok(Feature {
                name: s.clone(),
                cond: None,
            }),
            Value::Object(_) => {
                keys_allowed(f, &["name", "if"])?;
                Ok(Feature {
                    name: str_of(f.get("name").ok_or("a feature needs 'name'")?, "name")?,
                    cond: cond(f.get("if"))?,
                })
            }
            _ => Err("a feature is a string or an object".into()),
        })
        .collect()
}

fn type_ref(v: &Value) -> Result<TypeRef, String> {
    match v {
        Value::Str(s) => Ok(TypeRef::Named(s.clone())),
        Value::List(items) if items.len() == 1 => match &items[0] {
            Value::Str(s) => Ok(TypeRef::Array(s.clone())),
            _ => Err("an array type is ['NAME']".into()),
        },
        _ => Err("a type is 'NAME' or ['NAME']".into()),
    }
}

/// The documentation facts this compiler keeps: the definition's `Since:` and each member's
/// `(since X)`. The prose itself is not kept (it is GPL text; the generated crates carry their
/// own).
struct DocFacts {
    since: Option<String>,
    member_since: BTreeMap<String, String>,
}

fn doc_facts(doc: Option<&[String]>) -> DocFacts {
    let mut facts = DocFacts {
        since: None,
        member_since: BTreeMap::new(),
    };
    let Some(lines) = doc else { return facts };
    let mut current: Option<String> = None;
    for line in lines.iter().skip(1) {
        if let Some(rest) = line.strip_prefix("Since:") {
            facts.since = Some(rest.trim().trim_end_matches('.').to_string());
            current = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix('@') {
            if let Some((name, _)) = rest.split_once(':') {
                current = Some(name.to_string());
            }
        } else if !line.starts_with(' ') {
            current = None;
        }
        if let Some(m) = &current {
            if let Some(v) = since_in(line) {
                facts.member_since.insert(m.clone(), v);
            }
        }
    }
    facts
}

/// `X.Y` from a `(since X.Y)` (any case) in `text`.
fn since_in(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("(since ")?;
    let rest = &text[at + 7..];
    let end = rest.find(')')?;
    let v = rest[..end].trim();
    v.chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        .then(|| v.to_string())
}

fn members(v: &Value, facts: &DocFacts) -> Result<Vec<Member>, String> {
    let Value::Object(ms) = v else {
        return Err("members are an object".into());
    };
    ms.iter()
        .map(|(k, v)| {
            let (name, optional) = match k.strip_prefix('*') {
                Some(n) => (n.to_string(), true),
                None => (k.clone(), false),
            };
            let (ty, cnd, feats) = match v {
                Value::Object(_) => {
                    keys_allowed(v, &["type", "if", "features"])?;
                    (
                        type_ref(v.get("type").ok_or("a member needs 'type'")?)?,
                        cond(v.get("if"))?,
                        features(v.get("features"))?,
                    )
                }
                _ => (type_ref(v)?, None, Vec::new()),
            };
            Ok(Member {
                since: facts.member_since.get(&name).cloned(),
                name,
                optional,
                ty,
                cond: cnd,
                features: feats,
            })
        })
        .collect()
}

fn branches(v: &Value) -> Result<Vec<Branch>, String> {
    let Value::Object(bs) = v else {
        return Err("branches are an object".into());
    };
    bs.iter()
        .map(|(k, v)| {
            let (ty, cnd) = match v {
                Value::Object(_) => {
                    keys_allowed(v, &["type", "if"])?;
                    (
                        type_ref(v.get("type").ok_or("a branch needs 'type'")?)?,
                        cond(v.get("if"))?,
                    )
                }
                _ => (type_ref(v)?, None),
            };
            Ok(Branch {
                name: k.clone(),
                ty,
                cond: cnd,
            })
        })
        .collect()
}

fn data(expr: &Value, facts: &DocFacts) -> Result<Option<Data>, String> {
    match expr.get("data") {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(Data::Named(s.clone()))),
        Some(v) => Ok(Some(Data::Members(members(v, facts)?))),
    }
}

fn definition(expr: &Value, module: &str, doc: Option<&[String]>) -> Result<Def, String> {
    const COMMON: [&str; 3] = ["if", "features", "data"];
    let facts = doc_facts(doc);
    let (meta, name) = ["enum", "struct", "union", "alternate", "command", "event"]
        .iter()
        .find_map(|m| expr.get(m).map(|n| (*m, n)))
        .ok_or("not a definition, include or pragma")?;
    let name = str_of(name, meta)?;
    let allowed: &[&str] = match meta {
        "enum" => &["enum", "prefix"],
        "struct" => &["struct", "base"],
        "union" => &["union", "base", "discriminator"],
        "alternate" => &["alternate"],
        "command" => &[
            "command",
            "boxed",
            "returns",
            "success-response",
            "gen",
            "allow-oob",
            "allow-preconfig",
            "coroutine",
        ],
        _ => &["event", "boxed"],
    };
    let all: Vec<&str> = allowed.iter().chain(COMMON.iter()).copied().collect();
    keys_allowed(expr, &all).map_err(|e| format!("{name}: {e}"))?;
    let kind = match meta {
        "enum" => {
            let Some(Value::List(items)) = expr.get("data") else {
                return Err(format!("{name}: enum 'data' must be a list"));
            };
            let values = items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(EnumValue {
                        name: s.clone(),
                        cond: None,
                        features: Vec::new(),
                    }),
                    Value::Object(_) => {
                        keys_allowed(v, &["name", "if", "features"])?;
                        Ok(EnumValue {
                            name: str_of(
                                v.get("name").ok_or("an enum value needs 'name'")?,
                                "name",
                            )?,
                            cond: cond(v.get("if"))?,
                            features: features(v.get("features"))?,
                        })
                    }
                    _ => Err("an enum value is a string or an object".to_string()),
                })
                .collect::<Result<_, _>>()?;
            Kind::Enum { values }
        }
        "struct" => Kind::Struct {
            base: expr.get("base").map(|b| str_of(b, "base")).transpose()?,
            members: members(expr.get("data").ok_or("a struct needs 'data'")?, &facts)?,
        },
        "union" => {
            let (base, base_name) = match expr.get("base").ok_or("a union needs 'base'")? {
                Value::Str(s) => (Vec::new(), Some(s.clone())),
                v => (members(v, &facts)?, None),
            };
            Kind::Union {
                base,
                base_name,
                discriminator: str_of(
                    expr.get("discriminator")
                        .ok_or("a union needs 'discriminator'")?,
                    "discriminator",
                )?,
                branches: branches(expr.get("data").ok_or("a union needs 'data'")?)?,
            }
        }
        "alternate" => Kind::Alternate {
            branches: branches(expr.get("data").ok_or("an alternate needs 'data'")?)?,
        },
        "command" => Kind::Command {
            data: data(expr, &facts)?,
            boxed: bool_of(expr, "boxed", false)?,
            returns: expr.get("returns").map(type_ref).transpose()?,
            success_response: bool_of(expr, "success-response", true)?,
            gen: bool_of(expr, "gen", true)?,
            allow_oob: bool_of(expr, "allow-oob", false)?,
            allow_preconfig: bool_of(expr, "allow-preconfig", false)?,
            coroutine: bool_of(expr, "coroutine", false)?,
        },
        _ => Kind::Event {
            data: data(expr, &facts)?,
            boxed: bool_of(expr, "boxed", false)?,
        },
    };
    Ok(Def {
        name,
        module: module.to_string(),
        cond: cond(expr.get("if"))?,
        features: features(expr.get("features"))?,
        since: facts.since,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Schema, Error> {
        let dir = std::env::temp_dir().join(format!(
            "qapi-gen-test-{}-{}",
            std::process::id(),
            files[0].1.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let s = Schema::load(&dir.join(files[0].0));
        std::fs::remove_dir_all(&dir).unwrap();
        s
    }

    #[test]
    fn includes_bases_unions_and_docs_resolve() {
        let s = load(&[
            (
                "root.json",
                "{ 'include': 'sub.json' }\n{ 'include': 'sub.json' }\n\
                 ##\n# @U:\n#\n# @extra: x (since 9.1)\n#\n# Since: 2.9\n##\n\
                 { 'union': 'U', 'base': 'B', 'discriminator': 'kind',\n  'data': { 'a': 'S' },\n  'if': { 'all': [ 'X', { 'not': 'Y' } ] } }\n",
            ),
            (
                "sub.json",
                "{ 'enum': 'K', 'data': [ 'a', { 'name': 'b', 'features': [ 'unstable' ] } ] }\n\
                 { 'struct': 'B0', 'data': { 'kind': 'K' } }\n\
                 { 'struct': 'B', 'base': 'B0', 'data': { '*extra': ['int'] } }\n\
                 { 'struct': 'S', 'data': { 'x': { 'type': 'str', 'if': 'Z', 'features': ['deprecated'] } } }\n\
                 { 'command': 'c', 'data': 'S', 'returns': ['S'], 'allow-oob': true }\n",
            ),
        ])
        .unwrap();
        assert_eq!(s.files.len(), 2);
        let u = s.get("U").unwrap();
        assert_eq!(
            (u.module.as_str(), u.since.as_deref()),
            ("root", Some("2.9"))
        );
        assert_eq!(u.cond.as_ref().unwrap().to_string(), "all(X, not(Y))");
        let Kind::Union { base, .. } = &u.kind else {
            panic!()
        };
        let names: Vec<&str> = base.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["kind", "extra"]);
        assert_eq!(s.struct_members("B")[1].ty, TypeRef::Array("int".into()));
        let x = &s.struct_members("S")[0];
        assert!(has_feature(&x.features, "deprecated") && x.cond.is_some());
        assert_eq!(s.data_members(&Some(Data::Named("S".into()))).len(), 1);
        assert!(has_feature(
            &s.enum_values("K").unwrap()[1].features,
            "unstable"
        ));
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(load(&[("a.json", "{ 'struct': 'S', 'data': { 'x': 'Nope' } }")]).is_err());
        assert!(load(&[("b.json", "{ 'struct': 'S', 'data': {}, 'bogus': 1 }")]).is_err());
        assert!(load(&[(
            "c.json",
            "{ 'enum': 'E', 'data': ['a'] }\n{ 'enum': 'E', 'data': ['b'] }"
        )])
        .is_err());
        assert!(load(&[(
            "d.json",
            "{ 'enum': 'E', 'data': ['a'] }\n{ 'struct': 'S', 'data': {} }\n{ 'union': 'U', 'base': { 'k': 'E' }, 'discriminator': 'k', 'data': { 'z': 'S' } }"
        )])
        .is_err());
    }
}
