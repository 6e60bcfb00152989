//! qapi-gen: the QAPI schema compiler of qmp-rs.
//!
//! It reads QEMU's QAPI schema files (the language of QEMU's `docs/devel/qapi-code-gen.rst`) and
//! writes the Rust source of the `qmp-qapi` crate, which is checked in. `cargo run -p qapi-gen`
//! regenerates it from the newest schema folder under `qapi-schema/`; the test `checked_in`
//! fails when the checked-in source differs from what the compiler writes.

pub mod introspect;
pub mod names;
pub mod parse;
pub mod rust;
pub mod schema;

use std::path::{Path, PathBuf};

/// Where the generated crate's sources go, relative to the repository root.
pub const OUT_DIR: &str = "qmp-qapi/src";

/// Where the tests' tables of every command and event go ([`rust::dispatch`]).
pub const DISPATCH_DIR: &str = "qapi-gen/tests/support/dispatch";

/// The schema folders under `qapi-schema/`, oldest first (`qemu-10.0.2` sorts by version).
pub fn schema_dirs(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(repo.join("qapi-schema"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("qemu-")?;
            let key = version
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some((key, e.path()))
        })
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}

/// An error from [`generate`]: a schema that does not load, or names that clash.
#[derive(Debug)]
pub struct GenError(pub String);

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenError {}

/// The three schemas of a QEMU version folder: qemu-system's QMP, qemu-storage-daemon's QMP,
/// and the guest agent's.
pub struct Schemas {
    /// qemu-system's (`qapi/qapi-schema.json`).
    pub system: schema::Schema,
    /// qemu-storage-daemon's (`storage-daemon/qapi/qapi-schema.json`).
    pub storage_daemon: schema::Schema,
    /// The guest agent's (`qga/qapi-schema.json`).
    pub guest_agent: schema::Schema,
    /// The version, from the folder name (`qemu-10.0.2` → `10.0.2`).
    pub version: String,
}

/// Loads the schemas of `dir`, a folder like `qapi-schema/qemu-10.0.2`. Every definition of the
/// storage daemon's schema must be the same as qemu-system's (the daemon's root file includes a
/// subset of the same modules), so one set of types serves both.
pub fn load(dir: &Path) -> Result<Schemas, GenError> {
    let load = |p: &str| schema::Schema::load(&dir.join(p)).map_err(|e| GenError(e.to_string()));
    let system = load("qapi/qapi-schema.json")?;
    let storage_daemon = load("storage-daemon/qapi/qapi-schema.json")?;
    let guest_agent = load("qga/qapi-schema.json")?;
    for d in &storage_daemon.defs {
        if system.get(&d.name) != Some(d) {
            return Err(GenError(format!(
                "qemu-storage-daemon's {} '{}' differs from qemu-system's: the types would need a module of their own",
                d.meta(),
                d.name
            )));
        }
    }
    let version = dir
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("qemu-").to_string())
        .unwrap_or_default();
    Ok(Schemas {
        system,
        storage_daemon,
        guest_agent,
        version,
    })
}

/// QEMU's per-version documentation, where the references link to.
pub fn reference_base(version: &str) -> String {
    format!("https://qemu.readthedocs.io/en/v{version}/interop/")
}

/// Every generated file for the schemas in `dir`: (path relative to the repository root,
/// contents).
pub fn generate(dir: &Path) -> Result<Vec<(PathBuf, String)>, GenError> {
    let s = load(dir)?;
    let base = reference_base(&s.version);
    let qmp = rust::Target {
        rust_module: "qmp",
        protocol: "QMP",
        reference: format!("{base}qemu-qmp-ref.html#"),
        version: &s.version,
        also_in: Some((&s.storage_daemon, "qemu-storage-daemon")),
        split: true,
    };
    let qga = rust::Target {
        rust_module: "qga",
        protocol: "guest agent",
        reference: format!("{base}qemu-ga-ref.html#"),
        version: &s.version,
        also_in: None,
        split: false,
    };
    let mut files = Vec::new();
    let manifest = Path::new(OUT_DIR).join("../Cargo.toml");
    let repo = dir.join("../..");
    let toml = std::fs::read_to_string(repo.join(&manifest))
        .map_err(|e| GenError(format!("read qmp-qapi/Cargo.toml: {e}")))?;
    files.push((
        PathBuf::from("qmp-qapi/Cargo.toml"),
        with_features(&toml, &rust::features(&s.system))?,
    ));
    for (schema, target) in [(&s.system, &qmp), (&s.guest_agent, &qga)] {
        for (path, text) in rust::generate(schema, target).map_err(|e| GenError(e.0))? {
            files.push((Path::new(OUT_DIR).join(path), text));
        }
        if target.split {
            files.push((
                Path::new(OUT_DIR).join(format!("{}/introspection.json", target.rust_module)),
                introspect::introspection(schema),
            ));
        }
        let table = rust::dispatch(schema, target).map_err(|e| GenError(e.0))?;
        files.push((
            Path::new(DISPATCH_DIR).join(format!("{}.rs", target.rust_module)),
            table,
        ));
    }
    Ok(files)
}

/// The lines between these in qmp-qapi's Cargo.toml are the generated module features.
const FEATURES_BEGIN: &str =
    "# Generated by qapi-gen (one feature per QAPI module, with the modules it uses):\n";
const FEATURES_END: &str = "# End of generated features.\n";

/// `toml` with its generated feature lines replaced by `features`.
fn with_features(toml: &str, features: &str) -> Result<String, GenError> {
    let missing = || GenError("qmp-qapi/Cargo.toml lacks the generated-features markers".into());
    let begin = toml.find(FEATURES_BEGIN).ok_or_else(missing)? + FEATURES_BEGIN.len();
    let end = toml[begin..].find(FEATURES_END).ok_or_else(missing)? + begin;
    Ok(format!("{}{features}{}", &toml[..begin], &toml[end..]))
}

/// Generated files under [`OUT_DIR`] that `files` no longer has (a file is generated when it
/// starts with the generator's header).
pub fn stale_files(repo: &Path, files: &[(PathBuf, String)]) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    let mut stack = vec![repo.join(OUT_DIR), repo.join(DISPATCH_DIR)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read_to_string(&p)
                .is_ok_and(|t| t.starts_with("// @generated by qapi-gen"))
                && !files.iter().any(|(f, _)| repo.join(f) == p)
            {
                stale.push(p);
            }
        }
    }
    stale.sort();
    stale
}
