//! `cargo run -p qapi-gen [-- SCHEMA_DIR]`: regenerates qmp-qapi's sources from the newest
//! schema folder under `qapi-schema/` (or the one given), removing generated files that are no
//! longer written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => match qapi_gen::schema_dirs(&repo)
            .ok()
            .and_then(|d| d.last().cloned())
        {
            Some(d) => d,
            None => {
                eprintln!("qapi-gen: no qapi-schema/qemu-X.Y.Z folder");
                return ExitCode::FAILURE;
            }
        },
    };
    let files = match qapi_gen::generate(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("qapi-gen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stale in qapi_gen::stale_files(&repo, &files) {
        if let Err(e) = std::fs::remove_file(&stale) {
            eprintln!("qapi-gen: remove {}: {e}", stale.display());
            return ExitCode::FAILURE;
        }
    }
    for (path, text) in &files {
        let path = repo.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(e) = written {
            eprintln!("qapi-gen: write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("qapi-gen: {} files from {}", files.len(), dir.display());
    ExitCode::SUCCESS
}
