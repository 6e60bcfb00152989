//! The checked-in generated code is what the compiler writes from the newest schema folder:
//! regenerate in memory and compare. Fails with the command to run when they differ.

use std::path::Path;

#[test]
fn generated_code_is_up_to_date() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = qapi_gen::schema_dirs(&repo)
        .expect("read qapi-schema/")
        .pop()
        .expect("a qapi-schema/qemu-X.Y.Z folder");
    let files = qapi_gen::generate(&dir).expect("generate");
    let mut differ = Vec::new();
    for (path, text) in &files {
        match std::fs::read_to_string(repo.join(path)) {
            Ok(on_disk) if on_disk == *text => {}
            _ => differ.push(path.display().to_string()),
        }
    }
    let stale = qapi_gen::stale_files(&repo, &files);
    assert!(
        differ.is_empty() && stale.is_empty(),
        "generated code is out of date ({} differ: {:?}; {} stale: {:?}): run `cargo run -p qapi-gen`",
        differ.len(),
        differ.iter().take(5).collect::<Vec<_>>(),
        stale.len(),
        stale
    );
    assert!(files.len() > 30, "{} files", files.len());
}

/// The guest-agent session completes the commands that send no reply on success by its own rule
/// (`qmp_proto::AGENT_NO_REPLY_COMMANDS`); that list must be exactly the agent schema's
/// `'success-response': false` commands, in every schema folder.
#[test]
fn the_agents_no_reply_commands_are_the_schemas() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in qapi_gen::schema_dirs(&repo).expect("read qapi-schema/") {
        let schemas = qapi_gen::load(&dir).expect("load");
        let mut in_schema: Vec<&str> = schemas
            .guest_agent
            .defs
            .iter()
            .filter(|d| {
                matches!(
                    d.kind,
                    qapi_gen::schema::Kind::Command {
                        success_response: false,
                        ..
                    }
                )
            })
            .map(|d| d.name.as_str())
            .collect();
        in_schema.sort_unstable();
        let mut listed = qmp_proto::AGENT_NO_REPLY_COMMANDS.to_vec();
        listed.sort_unstable();
        assert_eq!(listed, in_schema, "{}", dir.display());
        assert!(!listed.is_empty());
    }
}
